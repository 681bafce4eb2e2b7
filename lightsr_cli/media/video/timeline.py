"""Frame times: when each frame of a video stream is shown, read exactly from its packets.

A rawvideo pipe carries no timestamps, so the times are read apart from the pixels: a stream copy to
ffmpeg's framecrc muxer lists every packet with its pts and duration in the stream's own time base
(``#tb 0: 1/12800``), with ``-copyts`` so ffmpeg does not shift them. Sorted, the pts of the packets a
decoder keeps are the presentation times of the decoded frames, in the order the reader yields them.

A :class:`Timeline` says whether those times are a constant rate (within the container's rounding:
matroska stores milliseconds, so 24000/1001 fps reads 0, 42, 83, 125 ...) and gives the exact time of
frame k either way: on a constant rate ``first + k / rate``, else the stored pts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

_PACKET_DISCARD = 0x4  # AV_PKT_FLAG_DISCARD: demuxed but dropped after decoding (mp4 edit lists)
_TIME_BASE = re.compile(r"^#tb 0: (\d+)/(\d+)\s*$", re.MULTILINE)
_PACKET = re.compile(r"^\s*0,\s*(-?\d+|NOPTS),\s*(-?\d+|NOPTS),\s*(-?\d+),\s*\d+,\s*0x[0-9a-fA-F]+(?:,\s*F=0x([0-9A-Fa-f]+))?")


@dataclass(frozen=True)
class Timeline:
    """Presentation times of a stream's decoded frames, in ticks of ``time_base`` seconds."""

    time_base: Fraction
    pts: tuple[int, ...]  # sorted: frame k of the decoder is shown at pts[k] * time_base
    end: int  # when the last frame stops being shown (its pts + its duration)
    start_time: Fraction = Fraction(0)  # the container's start (ffmpeg's "start:"), seconds

    @property
    def first(self) -> Fraction:
        """Seconds at which the first frame is shown."""
        return self.pts[0] * self.time_base

    @property
    def offset(self) -> Fraction:
        """Seconds from the container's start to the first frame (a start offset or edit list delay)."""
        return self.first - self.start_time

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame to the end of the last one."""
        return (self.end - self.pts[0]) * self.time_base

    def longest_frame(self) -> Fraction:
        """The longest time one frame is shown (the last one included)."""
        gaps = [b - a for a, b in zip(self.pts, (*self.pts[1:], self.end), strict=False)]
        return max(gaps) * self.time_base

    def is_constant(self, rate: Fraction) -> bool:
        """True when frame k sits at first + k / rate, each within one tick (the container's rounding)."""
        step = 1 / (rate * self.time_base)  # ticks per frame, maybe fractional
        return all(abs(tick - self.pts[0] - round(k * step)) <= 1 for k, tick in enumerate(self.pts))

    def relative(self, frames: range) -> tuple[int, ...]:
        """Ticks of ``frames`` counted from the first of them (a segment starts at 0)."""
        base = self.pts[frames.start]
        return tuple(self.pts[k] - base for k in frames)


def parse_framecrc(text: str, start_time: Fraction = Fraction(0)) -> tuple[int, Timeline | None]:
    """(frames a decoder outputs, their Timeline) from a framecrc listing of one stream's packets.

    Every packet is one frame for the codecs we meet, except those flagged DISCARD: an mp4 cut with an
    edit list keeps the frames before the cut point for decoding and drops them after. The timeline is
    None when a packet has no pts (some AVI files): then only the stream's nominal rate is known.
    """
    base = _TIME_BASE.search(text)
    count, pts, end, complete = 0, [], None, base is not None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = _PACKET.match(line)
        if match is None:
            count += 1
            complete = False
            continue
        if match.group(4) and int(match.group(4), 16) & _PACKET_DISCARD:
            continue
        count += 1
        if match.group(2) == "NOPTS":
            complete = False
            continue
        tick, duration = int(match.group(2)), int(match.group(3))
        pts.append(tick)
        end = max(end if end is not None else tick, tick + max(duration, 0))
    if not complete or not pts or len(set(pts)) != len(pts) or base is None or end is None:
        return count, None
    pts.sort()
    if end <= pts[-1]:  # a last packet without a duration: assume it lasts as long as the one before
        end = pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1)
    return count, Timeline(Fraction(int(base.group(1)), int(base.group(2))), tuple(pts), end, start_time)


def concat_durations(starts: Sequence[Fraction]) -> list[int]:
    """Microsecond durations of consecutive parts starting at ``starts`` (seconds, ascending), last excluded.

    The concat demuxer takes durations in microseconds and places part k at their sum; rounding each
    cumulative start (not each duration) keeps every part within half a microsecond of its exact start.
    """
    micro = [round((start - starts[0]) * 1_000_000) for start in starts]
    return [b - a for a, b in zip(micro, micro[1:], strict=False)]
