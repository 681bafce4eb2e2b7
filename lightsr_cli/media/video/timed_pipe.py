"""Raw frames with their presentation times, muxed into a NUT stream on ffmpeg's stdin (through PyAV).

A rawvideo pipe has no timestamps: ffmpeg numbers its frames at one constant rate. For a variable
frame rate the encoder must see each frame's own time, so the frames travel in a container that
carries them: NUT, ffmpeg's own streamable format, takes any time base and rawvideo of any pixel
format. PyAV (FFmpeg's libraries) writes it; we only hand it packets of pixels with their pts, and
the ffmpeg that encodes (``-f nut -i pipe:0 -fps_mode passthrough -enc_time_base demux``) keeps them.
"""

from __future__ import annotations

from fractions import Fraction
from typing import IO

import numpy as np

from ...errors import VideoError


def _av():
    try:
        import av
    except ImportError as exc:  # a declared dependency; missing only in a broken install
        raise VideoError("keeping the frame times of a variable-frame-rate video needs PyAV",
                         hint="pip install av") from exc
    return av


class TimedRawPipe:
    """Writes HxWx3 frames with their pts (ticks of ``time_base``) as rawvideo in NUT to ``stream``."""

    def __init__(self, stream: IO[bytes], width: int, height: int, deep: bool, time_base: Fraction) -> None:
        av = _av()
        self._av = av
        self._container = av.open(stream, mode="w", format="nut")
        self._stream = self._container.add_stream("rawvideo")
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "rgb48le" if deep else "rgb24"
        self._stream.time_base = time_base
        self._time_base = time_base
        self._container.start_encoding()

    def write(self, frame: np.ndarray, pts: int, duration: int) -> None:
        packet = self._av.Packet(memoryview(np.ascontiguousarray(frame)).cast("B"))
        packet.pts = packet.dts = pts
        packet.duration = max(duration, 1)
        packet.time_base = self._time_base
        packet.stream = self._stream
        self._container.mux(packet)

    def close(self) -> None:
        self._container.close()
