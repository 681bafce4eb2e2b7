"""CMYK pictures (print artwork in JPEG or TIFF) as sRGB pixels, since the networks see RGB only.

Converted through the file's own CMYK profile where it has one lcms reads (relative colorimetric,
as print-to-screen previews do), otherwise with Pillow's plain ink formula (R = 255 - C - K,
clipped), all there is without a profile. The output then carries an sRGB profile (or none),
never the CMYK one, which would misdescribe RGB pixels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import metadata
from .metadata import Metadata


def to_srgb(picture: Any, icc: bytes | None) -> tuple[Any, bool]:
    """An 8-bit CMYK Pillow image as an sRGB one, and whether its own profile did it."""
    from PIL import ImageCms

    if icc and metadata.profile_colour_space(icc) == "CMYK":
        try:
            return metadata.convert_to_srgb(picture, icc, output_mode="RGB", colorimetric=True), True
        except ImageCms.PyCMSError:
            pass  # a profile lcms reads but cannot build a transform from: the formula, said as approximate
    return picture.convert("RGB"), False


def read_as_srgb(opened: Any, carried: Metadata, path: Path) -> tuple[np.ndarray, Metadata, str]:
    """An opened CMYK picture's upright sRGB pixels, the metadata to carry, and the note for the run."""
    from .images import apply_orientation, from_pillow

    try:
        converted, profiled = to_srgb(opened, carried.icc)
        pixels = from_pillow(converted)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise InputError(f"cannot decode {path}: {error}", hint="check that the file opens in an image viewer") from None
    how = ("through its colour profile" if profiled
           else "with the plain ink formula (it has no CMYK colour profile, so colours are approximate)")
    carried = replace(carried, icc=metadata.srgb_profile() if profiled else None)
    note = f"note: {path.name} is CMYK: converted to sRGB {how} and upscaled as RGB"
    return apply_orientation(pixels, metadata.orientation(opened)), carried, note
