"""One image job: claim the target, check sizes from the header, read, upscale, (resize,) write;
the three stages (read, upscale, write) also apart, for ``image_flow`` to overlap them.

A file's every frame (animation) or page (TIFF) is upscaled when the output format holds them,
and its metadata carried as the run's MetadataPolicy says; what the output cannot hold is said
in a note (the run says each note once).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import fs
from ..engine import Engine
from ..media import animation, images, metadata
from ..media.metadata import MetadataPolicy
from ..progress import Reporter
from .jobs import Job
from .limits import PixelLimits, check_input, check_output
from .pixels import upscale_frames
from .sizing import TargetSize, result_size

_ANIMATED_FORMATS = {"gif", "webp", "png"}


@dataclass(frozen=True)
class OutputSettings:
    image_format: str | None = None
    quality: int | None = None
    outscale: float | None = None
    """Final size factor relative to the input; None keeps the network's scale."""
    overwrite: bool = False
    skip_existing: bool = False
    """An output finished (or being written) by another run meanwhile counts as skipped, not failed."""
    limits: PixelLimits = field(default_factory=PixelLimits)
    metadata: MetadataPolicy = field(default_factory=MetadataPolicy)
    target: TargetSize | None = None
    """An exact final size (--fit, --fill, --width, --height) instead of a factor; excludes ``outscale``."""


@dataclass(frozen=True)
class DecodedImage:
    """An image job between its stages: the claimed target and the decoded picture (``upscaled`` once run)."""

    job: Job
    claim: fs.TargetLock
    picture: images.Picture
    encoding: images.ImageEncodeSettings
    upscaled: tuple = ()


def run_image_job(engine: Engine, job: Job, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Read, upscale, (resize,) write one image file; returns (megapixels in, megapixels out), all frames counted.

    The target is locked for the whole job (another run on it is refused with TargetBusyError), and
    an output that appeared since the run was planned is not redone (OutputExistsError). The three
    stages are also run apart, overlapping over a folder (``image_flow``).
    """
    decoded = read_image_job(job, output, engine.scale, reporter)
    try:
        return write_image_job(upscale_image_job(engine, decoded, output, reporter), output, reporter)
    finally:
        decoded.claim.release()


def read_image_job(job: Job, output: OutputSettings, scale: int, reporter: Reporter) -> DecodedImage:
    """Stage 1: claim the target, read and decode the source (sizes checked from the header first).

    On success the claim is held and handed on: whoever ends the job releases it."""
    claim = fs.TargetLock(job.target)
    claim.acquire()
    try:
        if not output.overwrite and job.target.exists():
            raise fs.output_exists_error(job.target)
        data = images.read_image_bytes(job.source)
        picture, encoding = _decoded(data, job.source, images.image_format(job.target), scale, output, reporter)
        return DecodedImage(job, claim, picture, encoding)
    except BaseException:
        claim.release()
        raise


def upscale_image_job(engine: Engine, decoded: DecodedImage, output: OutputSettings,
                      reporter: Reporter) -> DecodedImage:
    """Stage 2, on a device: every frame through the network and to its final size."""
    return replace(decoded, upscaled=tuple(_upscaled(engine, decoded.picture, output, reporter)))


def write_image_job(decoded: DecodedImage, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Stage 3: encode with the kept metadata and write the target whole; (megapixels in, megapixels out).
    The claim is left to the caller to release."""
    encoded = _encoded(decoded.picture, decoded.upscaled, decoded.encoding, output, reporter)
    fs.write_bytes(decoded.job.target, encoded, overwrite=output.overwrite)
    return _megapixels(decoded.picture.frames, decoded.upscaled)


def upscale_image_data(engine: Engine, data: bytes, source: Path, image_format: str, output: OutputSettings,
                       reporter: Reporter) -> tuple[bytes, tuple[float, float]]:
    """An image file's bytes upscaled into ``image_format``'s bytes, and (megapixels in, megapixels out).

    ``source`` names the input in messages (a file, or ``stdin``). Sizes are checked from the
    header before decoding, and again per decoded frame.
    """
    picture, encoding = _decoded(data, source, image_format, engine.scale, output, reporter)
    results = _upscaled(engine, picture, output, reporter)
    return _encoded(picture, results, encoding, output, reporter), _megapixels(picture.frames, results)


def _decoded(data: bytes, source: Path, image_format: str, scale: int, output: OutputSettings,
             reporter: Reporter) -> tuple[images.Picture, images.ImageEncodeSettings]:
    size = images.claimed_size(data, source)
    if size is not None:
        _check_sizes(scale, source, output, *size)
    encoding = images.ImageEncodeSettings(image_format, output.quality, output.metadata.to_srgb)
    picture = _what_the_format_holds(images.decode_picture(data, source), encoding.format)
    for note in picture.notes:
        reporter.note(note)
    for frame in picture.frames:
        _check_sizes(scale, source, output, frame.shape[1], frame.shape[0])
    return picture, encoding


def _upscaled(engine: Engine, picture: images.Picture, output: OutputSettings, reporter: Reporter) -> list:
    results = upscale_frames(engine, picture.frames, reporter)
    return [_resized(engine.scale, output, frame, result) for frame, result in zip(picture.frames, results, strict=True)]


def _encoded(picture: images.Picture, results, encoding: images.ImageEncodeSettings, output: OutputSettings,
             reporter: Reporter) -> bytes:
    kept = tuple(metadata.for_output(carried, output.metadata) for carried in picture.metadata)
    result = replace(picture, frames=tuple(results), metadata=kept)
    for note in animation.picture_losses(result, encoding):
        reporter.note(f"note: {note}")
    return animation.encode_picture(result, encoding)


def _megapixels(frames, results) -> tuple[float, float]:
    pixels_in = sum(frame.shape[0] * frame.shape[1] for frame in frames)
    pixels_out = sum(frame.shape[0] * frame.shape[1] for frame in results)
    return pixels_in / 1e6, pixels_out / 1e6


def _what_the_format_holds(picture: images.Picture, image_format: str) -> images.Picture:
    """Only the first frame or page when the output cannot hold more (not upscaling what is not written)."""
    animation_lost = picture.animation is not None and image_format not in _ANIMATED_FORMATS
    if animation_lost or picture.pages and image_format != "tiff":
        what = "no animation: only the first frame" if picture.animation is not None else "one page: only the first"
        note = f"note: {image_format.upper()} holds {what} is written"
        return replace(picture, frames=picture.frames[:1], metadata=picture.metadata[:1], animation=None,
                       notes=(*picture.notes, note))
    return picture


def _resized(scale: int, output: OutputSettings, frame, result):
    """The network's result at the final size (--outscale or a target size): Lanczos up, area down."""
    size = result_size(frame.shape[1], frame.shape[0], scale, output.outscale, output.target)
    if size != (result.shape[1], result.shape[0]):
        return images.resize(result, *size)
    return result


def _check_sizes(scale: int, source: Path, output: OutputSettings, width: int, height: int) -> None:
    check_input(source.name, width, height, output.limits)
    final = result_size(width, height, scale, output.outscale, output.target) if output.target else None
    check_output(source.name, width, height, scale, output.outscale, output.limits, final)
