"""One image job: claim the target, check sizes from the header, read, upscale, (resize,) write.

A file's every frame (animation) or page (TIFF) is upscaled when the output format holds them,
and its metadata carried as the run's MetadataPolicy says; what the output cannot hold is said
in a note (the run says each note once).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import fs
from ..engine import Engine
from ..media import animation, images, metadata
from ..media.metadata import MetadataPolicy
from ..progress import Reporter
from .jobs import Job
from .limits import PixelLimits, check_input, check_output, output_size
from .pixels import upscale_frames

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


def run_image_job(engine: Engine, job: Job, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Read, upscale, (resize,) write one image file; returns (megapixels in, megapixels out), all frames counted.

    The target is locked for the whole job (another run on it is refused with TargetBusyError), and
    an output that appeared since the run was planned is not redone (OutputExistsError).
    """
    with fs.TargetLock(job.target):
        if not output.overwrite and job.target.exists():
            raise fs.output_exists_error(job.target)
        data = images.read_image_bytes(job.source)
        size = images.claimed_size(data, job.source)
        if size is not None:
            _check_sizes(engine, job, output, *size)
        encoding = images.ImageEncodeSettings(images.image_format(job.target), output.quality,
                                              output.metadata.to_srgb)
        picture = _what_the_format_holds(images.decode_picture(data, job.source), encoding.format)
        for note in picture.notes:
            reporter.note(note)
        for frame in picture.frames:
            _check_sizes(engine, job, output, frame.shape[1], frame.shape[0])
        results = upscale_frames(engine, picture.frames, reporter)
        results = [_resized(engine, output, frame, result)
                   for frame, result in zip(picture.frames, results, strict=True)]
        kept = tuple(metadata.for_output(carried, output.metadata) for carried in picture.metadata)
        result = replace(picture, frames=tuple(results), metadata=kept)
        for note in animation.picture_losses(result, encoding):
            reporter.note(f"note: {note}")
        fs.write_bytes(job.target, animation.encode_picture(result, encoding), overwrite=output.overwrite)
    pixels_in = sum(frame.shape[0] * frame.shape[1] for frame in picture.frames)
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


def _resized(engine: Engine, output: OutputSettings, frame, result):
    if output.outscale and output.outscale != engine.scale:
        return images.resize(result, *output_size(frame.shape[1], frame.shape[0], engine.scale, output.outscale))
    return result


def _check_sizes(engine: Engine, job: Job, output: OutputSettings, width: int, height: int) -> None:
    check_input(job.source.name, width, height, output.limits)
    check_output(job.source.name, width, height, engine.scale, output.outscale, output.limits)
