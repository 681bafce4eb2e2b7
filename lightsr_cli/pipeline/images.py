"""One image job: read, upscale, (resize,) write."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Engine
from ..media import images
from ..progress import Reporter
from .jobs import Job
from .pixels import upscale_pixels


@dataclass(frozen=True)
class OutputSettings:
    image_format: str | None = None
    quality: int | None = None
    outscale: float | None = None
    """Final size factor relative to the input; None keeps the network's scale."""
    overwrite: bool = False


def run_image_job(engine: Engine, job: Job, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Read, upscale, (resize,) write one image; returns (megapixels in, megapixels out)."""
    pixels = images.read_image(job.source)
    result = upscale_pixels(engine, pixels, reporter)
    if output.outscale and output.outscale != engine.scale:
        height, width = pixels.shape[:2]
        result = images.resize(result, max(1, round(width * output.outscale)), max(1, round(height * output.outscale)))
    image_format = images.image_format(job.target)
    images.write_image(job.target, result, images.ImageEncodeSettings(image_format, output.quality), output.overwrite)
    return pixels.shape[0] * pixels.shape[1] / 1e6, result.shape[0] * result.shape[1] / 1e6
