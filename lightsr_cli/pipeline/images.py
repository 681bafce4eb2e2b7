"""One image job: claim the target, check sizes from the header, read, upscale, (resize,) write."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import fs
from ..engine import Engine
from ..media import headers, images
from ..progress import Reporter
from .jobs import Job
from .limits import PixelLimits, check_input, check_output, output_size
from .pixels import upscale_pixels


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


def run_image_job(engine: Engine, job: Job, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Read, upscale, (resize,) write one image; returns (megapixels in, megapixels out).

    The target is locked for the whole job (another run on it is refused with TargetBusyError), and
    an output that appeared since the run was planned is not redone (OutputExistsError).
    """
    with fs.TargetLock(job.target):
        if not output.overwrite and job.target.exists():
            raise fs.output_exists_error(job.target)
        data = images.read_image_bytes(job.source)
        header = headers.read_header(data)
        if header is not None:
            _check_sizes(engine, job, output, header.width, header.height)
            if header.frames > 1:
                what = "pages" if header.format == "tiff" else "frames"
                reporter.note(f"warning: {job.source.name} has {header.frames} {what}; only the first is upscaled")
        pixels = images.decode_image(data, job.source, header)
        height, width = pixels.shape[:2]
        _check_sizes(engine, job, output, width, height)
        result = upscale_pixels(engine, pixels, reporter)
        if output.outscale and output.outscale != engine.scale:
            result = images.resize(result, *output_size(width, height, engine.scale, output.outscale))
        image_format = images.image_format(job.target)
        encoding = images.ImageEncodeSettings(image_format, output.quality)
        images.write_image(job.target, result, encoding, output.overwrite)
    return width * height / 1e6, result.shape[0] * result.shape[1] / 1e6


def _check_sizes(engine: Engine, job: Job, output: OutputSettings, width: int, height: int) -> None:
    check_input(job.source.name, width, height, output.limits)
    check_output(job.source.name, width, height, engine.scale, output.outscale, output.limits)
