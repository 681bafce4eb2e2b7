"""AVIF and JPEG XL pixels at their full depth (10, 12, 16 bits), which Pillow's decoders give at 8 bits.

The bundled ffmpeg (imageio-ffmpeg; libdav1d for AV1, libjxl for JPEG XL) probes the stream (size,
pixel format: no pixel decoded) and decodes deep files to 16-bit RGB. The pixels come turned as
Pillow's decoder gives them (an AVIF as stored, a JPEG XL upright), so the caller turns both alike.
ffmpeg shows an AVIF's alpha as a separate stream, so alpha stays the caller's (from Pillow). The
bytes go through a pipe: an input read from stdin has no path.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import numpy as np

from ..errors import VideoError

_STREAM = re.compile(r"Stream #0:0\S*: Video: [^,]*, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)")
_ALPHA_FORMATS = re.compile(r"^(yuva|gbrap|rgba|bgra|argb|abgr|ya)")


@dataclass(frozen=True)
class StreamFacts:
    width: int
    height: int
    pix_fmt: str
    """ffmpeg's name of the stored pixel format (yuv420p10le, rgb48le, ...)."""
    bit_depth: int

    @property
    def alpha(self) -> bool:
        return bool(_ALPHA_FORMATS.match(self.pix_fmt))


def probe(data: bytes) -> StreamFacts | None:
    """Size and pixel format of the first picture in ``data``; None when ffmpeg cannot tell (or is missing)."""
    from .video import ffmpeg

    try:
        finished = _ffmpeg(["-i", "pipe:0"], data)
    except (OSError, VideoError):
        return None
    match = _STREAM.search(finished.stderr.decode("utf-8", "replace"))
    if match is None:
        return None
    pix_fmt = match.group(1)
    return StreamFacts(int(match.group(2)), int(match.group(3)), pix_fmt, ffmpeg.pix_fmt_bit_depth(pix_fmt))


def decode_sixteen_bit(data: bytes, facts: StreamFacts, as_stored: bool) -> np.ndarray | None:
    """The first picture as an H x W x 3 (or x 4 with alpha) uint16 array; None when decoding fails.

    ``as_stored``: no turn applied (an AVIF, whose turn the caller applies); else ffmpeg applies the
    one its decoder reports, as libjxl turns a JPEG XL for Pillow's plugin.
    """
    channels = 4 if facts.alpha else 3
    arguments = [*(["-noautorotate"] if as_stored else []), "-i", "pipe:0", "-map", "0:0", "-frames:v", "1", "-f", "rawvideo",
                 "-pix_fmt", "rgba64le" if channels == 4 else "rgb48le", "pipe:1"]
    try:
        finished = _ffmpeg(arguments, data)
    except (OSError, VideoError):
        return None
    expected = facts.width * facts.height * channels * 2
    if finished.returncode != 0 or len(finished.stdout) != expected:
        return None
    return np.frombuffer(finished.stdout, "<u2").reshape(facts.height, facts.width, channels).astype(np.uint16)


def _ffmpeg(arguments: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    from .video import ffmpeg

    command = [ffmpeg.ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "info", *arguments]
    # -nostdin stops ffmpeg reading the terminal for keys; the data still comes through pipe:0.
    return subprocess.run(command, input=data, capture_output=True, check=False)  # noqa: S603 - our argument list
