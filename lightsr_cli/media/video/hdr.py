"""HDR: reading a source's mastering display and content light level metadata, and handing them to encoders.

HDR10 carries two pieces of side data besides the colour tags (SMPTE 2084 transfer, BT.2020 primaries
and matrix): the mastering display (primaries, white point, luminance range) and the content light
level (MaxCLL, MaxFALL). A rawvideo pipe carries no side data, so they are read from one decoded frame
(ffmpeg's showinfo filter prints them) and given to the encoder as its own parameters: x265's
``master-display``/``max-cll``, SVT-AV1's ``mastering-display``/``content-light``. Encoders without such
parameters keep the colour tags only; :func:`hdr_warnings` says so.

showinfo prints chromaticities with 4 decimals: exact for the usual masters (BT.2020, P3-D65, whose
coordinates are multiples of 0.0001), at most 0.00005 off for others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})  # PQ (HDR10) and HLG

_PAIR = r"\(\s*([\d.]+)[,\s]+([\d.]+)\s*\)"
_MASTERING = re.compile(rf"mastering display metadata:.*?r{_PAIR}\s*g{_PAIR}\s*b{_PAIR}\s*wp{_PAIR}\s*"
                        r"min_luminance=([\d.]+),\s*max_luminance=([\d.]+)", re.IGNORECASE)
_LIGHT_LEVEL = re.compile(r"content light level metadata:\s*MaxCLL=(\d+),\s*MaxFALL=(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class MasteringDisplay:
    """Chromaticity coordinates (x, y) of the mastering display and its luminance range in cd/m2."""

    red: tuple[Fraction, Fraction]
    green: tuple[Fraction, Fraction]
    blue: tuple[Fraction, Fraction]
    white: tuple[Fraction, Fraction]
    min_luminance: Fraction
    max_luminance: Fraction


@dataclass(frozen=True)
class HdrMetadata:
    mastering: MasteringDisplay | None = None
    max_cll: int | None = None  # content light level: brightest pixel, cd/m2
    max_fall: int | None = None  # brightest frame average, cd/m2


def parse_side_data(log: str) -> HdrMetadata | None:
    """The first frame's HDR side data from a showinfo log; None when it has neither."""
    mastering = None
    if m := _MASTERING.search(log):
        values = [Fraction(v) for v in m.groups()]
        mastering = MasteringDisplay((values[0], values[1]), (values[2], values[3]), (values[4], values[5]),
                                     (values[6], values[7]), values[8], values[9])
    light = _LIGHT_LEVEL.search(log)
    if mastering is None and light is None:
        return None
    return HdrMetadata(mastering, int(light.group(1)) if light else None, int(light.group(2)) if light else None)


def _units(value: Fraction, unit: Fraction) -> int:
    return round(value / unit)


def x265_params(hdr: HdrMetadata) -> list[str]:
    """x265 parameters: chromaticities in 0.00002 units, luminance in 0.0001 cd/m2, order G B R WP L(max,min)."""
    params = []
    if (md := hdr.mastering) is not None:
        xy = Fraction(1, 50000)
        points = "".join(f"{name}({_units(p[0], xy)},{_units(p[1], xy)})"
                         for name, p in (("G", md.green), ("B", md.blue), ("R", md.red), ("WP", md.white)))
        lum = Fraction(1, 10000)
        params.append(f"master-display={points}L({_units(md.max_luminance, lum)},{_units(md.min_luminance, lum)})")
    if hdr.max_cll is not None:
        params.append(f"max-cll={hdr.max_cll},{hdr.max_fall or 0}")
    return params


def svtav1_params(hdr: HdrMetadata) -> list[str]:
    """SVT-AV1 parameters: the same values as decimals, order G B R WP L(max,min)."""
    params = []
    if (md := hdr.mastering) is not None:
        points = "".join(f"{name}({float(p[0]):.5f},{float(p[1]):.5f})"
                         for name, p in (("G", md.green), ("B", md.blue), ("R", md.red), ("WP", md.white)))
        params.append(f"mastering-display={points}L({float(md.max_luminance):.4f},{float(md.min_luminance):.4f})")
    if hdr.max_cll is not None:
        params.append(f"content-light={hdr.max_cll},{hdr.max_fall or 0}")
    return params


# encoder -> (its private "params" option, the function that writes the HDR parameters)
ENCODER_HDR_PARAMS = {"libx265": ("-x265-params", x265_params), "libsvtav1": ("-svtav1-params", svtav1_params)}


def hdr_warnings(codec: str, hdr: HdrMetadata | None) -> list[str]:
    """What of the source's HDR side data the chosen encoder cannot write (empty when all is kept)."""
    if hdr is None or codec in ENCODER_HDR_PARAMS:
        return []
    return [f"{codec} cannot write the HDR10 mastering display / content light level metadata of the source; "
            "transfer, primaries and matrix are kept; the libx265 and libsvtav1 encoders keep all of it"]
