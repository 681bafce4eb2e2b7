"""Target sizes (--fit, --fill, --width, --height): the exact final size, and the network scale to get there.

Pure arithmetic on integers and fractions (no pixels). Sizes are computed in display pixels: a
video whose samples are not square (SAR 4:3 anamorphic DVD, 1440x1080 HDV) is displayed
``width * SAR`` wide, so the box is compared with that, and the result is written with square
samples (SAR 1:1) at the computed size. Rounding rules:

- ``fit``: the side that limits is exactly the box's; the other is rounded half-up and never exceeds
  the box. ``fill``: the limiting side is exactly the box's, the other rounded half-up, never below it.
- ``width`` / ``height``: the given side exactly, the other from the aspect ratio, rounded half-up.
- ``even`` (a 4:2:0 video): both sides even. fit lowers an odd side by one (it stays inside the box),
  fill raises it by one (it still covers the box), width/height lower the given side by one and round
  the other to the nearest even number. Never below 2.

The network's scale, when the user named no model, is the smallest of 2, 3, 4 that reaches the
largest enlargement any input needs (one pass of the network; Lanczos does the rest above x4).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import UsageError

NETWORK_SCALES = (2, 3, 4)
_BOX = re.compile(r"^\s*(\d+)\s*[xX*:]\s*(\d+)\s*$")


@dataclass(frozen=True)
class TargetSize:
    """A final size asked for by its box or one side, instead of a scale factor."""

    mode: str
    """fit, fill, width or height."""
    width: int | None = None
    height: int | None = None

    @property
    def label(self) -> str:
        """The default output-name suffix: _fit1920x1080, _fill800x800, _w1280, _h720."""
        if self.mode in ("fit", "fill"):
            return f"_{self.mode}{self.width}x{self.height}"
        return f"_w{self.width}" if self.mode == "width" else f"_h{self.height}"


def parse_box(text: str, option: str) -> tuple[int, int]:
    match = _BOX.match(text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise UsageError(f"{{{option}}} takes WIDTHxHEIGHT in pixels (e.g. 1920x1080), not '{text}'")
    return int(match.group(1)), int(match.group(2))


def target_from_options(fit: str | None, fill: str | None, width: int | None, height: int | None,
                        outscale: float | None) -> TargetSize | None:
    """The one target the options ask for; None when none is given. Conflicts are usage errors."""
    given = [name for name, value in (("--fit", fit), ("--fill", fill), ("--width", width), ("--height", height))
             if value is not None]
    if not given:
        return None
    if outscale is not None:
        raise UsageError(f"{{--outscale}} and {{{given[0]}}} both set the final size", hint="use one of them")
    if len(given) > 1:
        hint = ("to fix both sides keep the aspect ratio with {--fit WxH} or {--fill WxH}"
                if set(given) == {"--width", "--height"} else "use one of them")
        raise UsageError(f"{{{given[0]}}} and {{{given[1]}}} both set the final size", hint=hint)
    for name, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise UsageError(f"{{{name}}} must be at least 1, not {value}")
    if fit is not None:
        return TargetSize("fit", *parse_box(fit, "--fit"))
    if fill is not None:
        return TargetSize("fill", *parse_box(fill, "--fill"))
    return TargetSize("width", width=width) if width is not None else TargetSize("height", height=height)


def _half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _even_half_up(value: Fraction) -> int:
    return 2 * _half_up(value / 2)


def final_size(target: TargetSize, width: int, height: int, sar: Fraction | None = None,
               even: bool = False) -> tuple[int, int]:
    """The exact output size for a ``width`` x ``height`` input (samples of aspect ``sar``), per the module's rules."""
    display_w, display_h = Fraction(width) * (sar or 1), Fraction(height)
    if target.mode in ("fit", "fill"):
        box_w, box_h = target.width, target.height
        by_width = Fraction(box_w) / display_w
        by_height = Fraction(box_h) / display_h
        width_limits = by_width <= by_height if target.mode == "fit" else by_width >= by_height
        if width_limits:
            return _sides(box_w, display_w, display_h, box_h, target.mode, even)
        other_w, other_h = _sides(box_h, display_h, display_w, box_w, target.mode, even)
        return other_h, other_w
    if target.mode == "width":
        given = target.width - (target.width % 2 if even else 0)
        other = display_h * Fraction(max(given, 2 if even else 1)) / display_w
        return max(given, 2 if even else 1), _rounded(other, even)
    given = target.height - (target.height % 2 if even else 0)
    other = display_w * Fraction(max(given, 2 if even else 1)) / display_h
    return _rounded(other, even), max(given, 2 if even else 1)


def _rounded(value: Fraction, even: bool) -> int:
    return max(2, _even_half_up(value)) if even else max(1, _half_up(value))


def _sides(box_side: int, display_side: Fraction, display_other: Fraction, box_other: int, mode: str,
           even: bool) -> tuple[int, int]:
    """(limiting side, other side) for fit/fill: the limiting side is the box's (made even as the mode
    says), the other follows from it by the aspect ratio, clamped to the box."""
    limiting = box_side
    if even:
        limiting = max(2, box_side - box_side % 2) if mode == "fit" else box_side + box_side % 2
        box_other = max(2, box_other - box_other % 2) if mode == "fit" else box_other + box_other % 2
    value = _rounded(display_other * limiting / display_side, even)
    value = min(value, box_other) if mode == "fit" else max(value, box_other)
    return limiting, value


def enlargement(target: TargetSize, width: int, height: int, sar: Fraction | None = None) -> float:
    """How much the input's stored pixels grow (the larger of the two sides' factors)."""
    out_w, out_h = final_size(target, width, height, sar)
    return max(out_w / width, out_h / height)


def pick_network_scale(factors: list[float]) -> int:
    """The smallest network scale that reaches the largest factor needed; x4 above that or when nothing is known."""
    if not factors:
        return NETWORK_SCALES[-1]
    needed = max(factors)
    return next((scale for scale in NETWORK_SCALES if scale >= needed - 1e-9), NETWORK_SCALES[-1])


def result_size(width: int, height: int, scale: int, outscale: float | None, target: TargetSize | None,
                sar: Fraction | None = None, even: bool = False) -> tuple[int, int]:
    """The final size of one image or video frame: the target's, else --outscale's, else the network's."""
    if target is not None:
        return final_size(target, width, height, sar, even)
    if outscale and outscale != scale:
        return max(1, round(width * outscale)), max(1, round(height * outscale))
    return width * scale, height * scale


def chroma_subsampled(pix_fmt: str | None) -> bool:
    """Whether a video pixel format (None: the default 4:2:0) needs even frame sizes."""
    return pix_fmt is None or any(kind in pix_fmt for kind in ("420", "422", "411", "nv12", "nv21", "p010", "p016"))


_HEADER_BYTES = 1 << 20  # enough for every header our reader parses, EXIF included


def stored_size(path: Path, is_video: bool) -> tuple[int, int, Fraction | None] | None:
    """(width, height, sample aspect ratio) from an input's header or a probe; None when it cannot be told.

    Used to pick the network scale before any model is loaded; a file that cannot be read here is
    left for its job to report.
    """
    from ..errors import LightsrError
    from ..media import images, video

    try:
        if is_video:
            info = video.probe_video(path)
            return info.width, info.height, info.sample_aspect_ratio
        with open(path, "rb") as handle:
            size = images.claimed_size(handle.read(_HEADER_BYTES), path)
    except (OSError, LightsrError):
        return None
    return (size[0], size[1], None) if size else None
