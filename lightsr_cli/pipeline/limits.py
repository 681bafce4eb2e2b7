"""Pixel limits, checked from headers before anything is decoded or allocated.

A 109 KB PNG can claim 30000 x 30000 pixels and an --outscale of 1000 turns 64 x 64 into a 12 GB
array: both are refused up front with the sizes and what to do, instead of running out of memory.
The defaults (settings.DEFAULT_MAX_*) cover every camera photo at x4; an option or environment
variable raises them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import LimitError
from ..settings import DEFAULT_MAX_INPUT_MEGAPIXELS, DEFAULT_MAX_OUTPUT_MEGAPIXELS


@dataclass(frozen=True)
class PixelLimits:
    max_input_megapixels: float = DEFAULT_MAX_INPUT_MEGAPIXELS
    max_output_megapixels: float = DEFAULT_MAX_OUTPUT_MEGAPIXELS


def _megapixels(width: int, height: int) -> float:
    return width * height / 1e6


def check_input(name: str, width: int, height: int, limits: PixelLimits) -> None:
    """Refuse an input (image or video frame) larger than the input limit."""
    size = _megapixels(width, height)
    if size > limits.max_input_megapixels:
        needed = math.ceil(size)
        raise LimitError(f"{name} is {width}x{height} = {size:.1f} megapixels, above the input limit of "
                         f"{limits.max_input_megapixels:g} megapixels",
                         hint=f"decoding it takes about {width * height * 4 / 1e9:.1f} GB; if the machine has "
                              f"that memory, raise the limit with {{--max-input-megapixels {needed}}} "
                              f"(or LIGHTSR_MAX_INPUT_MEGAPIXELS={needed}), else shrink the image first")


def output_size(width: int, height: int, scale: int, outscale: float | None) -> tuple[int, int]:
    """The final size: the network's scale, or --outscale (the pipeline's rounding)."""
    if outscale and outscale != scale:
        return max(1, round(width * outscale)), max(1, round(height * outscale))
    return width * scale, height * scale


def check_output(name: str, width: int, height: int, scale: int, outscale: float | None, limits: PixelLimits,
                 final: tuple[int, int] | None = None) -> None:
    """Refuse a job whose result (or the network's output before --outscale resizes it) exceeds the limit.

    ``final`` is the result's size when a target size (--fit, --width, ...) sets it instead of --outscale.
    """
    final_w, final_h = final or output_size(width, height, scale, outscale)
    largest = max(final_w * final_h, width * scale * height * scale)
    size = largest / 1e6
    if size > limits.max_output_megapixels:
        needed = math.ceil(size)
        shown_w, shown_h = (final_w, final_h) if final_w * final_h == largest else (width * scale, height * scale)
        resized = (outscale or final) and final_w * final_h == largest
        smaller = ("a smaller target size" if final else "a smaller {--outscale}") if resized else "a smaller input"
        raise LimitError(f"upscaling {name} ({width}x{height}) gives {shown_w}x{shown_h} = {size:.1f} megapixels, "
                         f"above the output limit of {limits.max_output_megapixels:g} megapixels",
                         hint=f"the result alone takes about {largest * 3 / 1e9:.1f} GB of memory; use {smaller}, "
                              f"or if the machine has the memory raise the limit with "
                              f"{{--max-output-megapixels {needed}}} "
                              f"(or LIGHTSR_MAX_OUTPUT_MEGAPIXELS={needed})")
