"""What a video file holds: streams, size, pixel format, colour tags, rotation, exact frame rate and count.

imageio-ffmpeg ships no ffprobe, so :func:`probe_video` reads three cheap ffmpeg runs:

* ``ffmpeg -i FILE`` (stderr): streams, codec, size, pixel format, colour tags, rotation, duration;
* a stream copy to the framecrc muxer: one line per packet, so the exact frame count without decoding;
* a one-frame decode to a y4m pipe: the y4m header states the frame rate as an exact ratio
  (``F24000:1001``) where ``ffmpeg -i`` only prints a rounded "23.98 fps". It also proves the video
  stream decodes at all.

Width/height are the coded size (before any display rotation); the rotation is reported separately.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ...errors import CorruptVideoError, EmptyVideoError, NoVideoStreamError, VideoNotFoundError
from .ffmpeg import corruption_in, error_tail, first_error_line, pix_fmt_bit_depth, pix_fmt_table, run_ffmpeg
from .hdr import HdrMetadata, parse_side_data
from .timeline import Timeline, parse_framecrc

WRITTEN_VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"})
"""Containers lightsr writes (and reads)."""
READ_ONLY_VIDEO_EXTENSIONS = frozenset({".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".vob", ".flv", ".wmv", ".3gp",
                                        ".ogv"})
"""Containers lightsr reads but does not write (camcorder AVCHD, broadcast and DVD recordings, old web and phone
formats): their upscales are written as .mkv, which holds any of their audio and subtitle streams."""
VIDEO_EXTENSIONS = WRITTEN_VIDEO_EXTENSIONS | READ_ONLY_VIDEO_EXTENSIONS


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True for the container extensions lightsr treats as video (by name only, no probing)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class ColourTags:
    """ffmpeg's names for a stream's colour description; None when the file leaves it unspecified."""

    matrix: str | None = None  # ffmpeg "colorspace": bt709, bt470bg, smpte170m, bt2020nc...
    range: str | None = None  # "tv" (limited) or "pc" (full)
    primaries: str | None = None
    transfer: str | None = None


@dataclass(frozen=True)
class StreamInfo:
    """A stream of the source other than the video stream we upscale."""

    index: int  # absolute stream index in the source file (what `-map 1:<index>` selects)
    kind: str  # "audio", "subtitle", "data", "attachment", or "video" (a second video / cover art)
    codec: str  # ffmpeg codec name: aac, subrip, mov_text, hdmv_pgs_subtitle, ttf...
    language: str | None = None
    attached_pic: bool = False  # cover art stored as a one-frame video stream
    tag: str | None = None  # the container's fourcc: gpmd (GoPro telemetry), tmcd (timecode), text (chapters)...


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    stream_index: int  # absolute index of the video stream that is read and upscaled
    codec: str
    width: int  # coded size: before any display rotation
    height: int
    frame_rate: Fraction  # exact: 24000/1001 stays 24000/1001
    frame_count: int
    duration: float | None  # container duration in seconds (all streams), None when unknown
    pix_fmt: str
    bit_depth: int
    rotation: int  # display rotation, degrees counter-clockwise (ffmpeg's -display_rotation), 0..359
    colour: ColourTags
    sample_aspect_ratio: Fraction | None
    other_streams: tuple[StreamInfo, ...] = field(default=())
    timeline: Timeline | None = None  # each frame's time; None: unknown (then frame k is at k / frame_rate)
    hdr: HdrMetadata | None = None  # mastering display / content light level of an HDR source
    timecode: str | None = None  # start timecode ("01:02:03:04", ";" when drop-frame) of a timecode track or tag
    field_order: str | None = None  # "progressive", "top first", "bottom coded first"...; None when not stated
    read_deinterlaced: bool = False
    """How to read it, not what it holds: decode through bwdif (--deinterlace), one progressive frame per
    frame. Carried here so every reader of the job (local, resumed, a cluster worker's) reads alike."""

    @property
    def interlaced(self) -> bool:
        return self.field_order is not None and self.field_order != "progressive"

    @property
    def video_duration(self) -> float:
        """Seconds covered by the video frames: frame_count / frame_rate, or from the times of a variable rate."""
        if self.timeline is not None and not self.constant_rate:
            return float(self.timeline.duration)
        return float(self.frame_count / self.frame_rate)

    @functools.cached_property
    def constant_rate(self) -> bool:
        """True when frame k is shown at first + k / frame_rate (or nothing else is known); computed once."""
        return self.timeline is None or self.timeline.is_constant(self.frame_rate)

    def frame_time(self, index: int) -> Fraction:
        """Seconds at which frame ``index`` is shown (``index == frame_count``: the end of the last frame)."""
        first = self.timeline.first if self.timeline is not None else Fraction(0)
        if self.constant_rate or self.timeline is None:
            return first + index / self.frame_rate
        if index == len(self.timeline.pts):
            return self.timeline.end * self.timeline.time_base
        return self.timeline.pts[index] * self.timeline.time_base


# One stream line of `ffmpeg -i`, e.g.
#   Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 318x178 ...
_STREAM_LINE = re.compile(
    r"^(?P<indent>\s*)Stream #0:(?P<index>\d+)(?:\[[^\]]*\])?(?:\((?P<lang>[^)]*)\))?"
    r":\s*(?P<kind>Video|Audio|Subtitle|Data|Attachment):\s*(?P<rest>.*)$"
)
_START_TIME = re.compile(r"Duration:.*?, start: (-?\d+(?:\.\d+)?)")
_DURATION_LINE = re.compile(r"Duration:\s*(?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
# "Display Matrix: rotation of -90.00 degrees" (ffmpeg >= 6: "Display Matrix", older: "displaymatrix").
_DISPLAY_MATRIX = re.compile(r"display\s*matrix:\s*rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees", re.IGNORECASE)
# ffmpeg < 5 exposed rotation as a "rotate : 90" metadata tag, in degrees clockwise.
_ROTATE_TAG = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$")
_FIELD_ORDERS = ("progressive", "top first", "bottom first", "top coded first", "bottom coded first")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside (...) or [...]: 'yuv420p(tv, bt709), 318x178' -> 2 parts."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _known(name: str) -> str | None:
    return None if name in ("unknown", "unspecified", "reserved", "") else name


def _parse_pix_fmt_field(part: str) -> tuple[str, ColourTags] | None:
    """'yuv420p(tv, bt709/unknown/unknown, progressive)' -> ('yuv420p', ColourTags(...))."""
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", part)
    if not match or match.group(1) not in pix_fmt_table() and match.group(1) != "none":
        return None
    colour_range = matrix = primaries = transfer = None
    for token in (t.strip() for t in (match.group(2) or "").split(",")):
        if token in ("tv", "pc"):
            colour_range = token
        elif token.count("/") == 2:  # "matrix/primaries/transfer", printed when they differ
            matrix, primaries, transfer = (_known(t) for t in token.split("/"))
        elif not token or token.startswith(_FIELD_ORDERS) or token.endswith("bpc") or token in (
            "left", "center", "topleft", "top", "bottomleft", "bottom"  # chroma location (verbose only)
        ):
            continue
        else:  # one name: matrix, primaries and transfer are all the same (e.g. "bt709")
            matrix = primaries = transfer = _known(token)
    return match.group(1), ColourTags(matrix, colour_range, primaries, transfer)


@dataclass
class _StreamBlock:
    index: int
    kind: str
    language: str | None
    rest: str
    extra_lines: list[str] = field(default_factory=list)


def _parse_stream_blocks(stderr: str) -> tuple[list[_StreamBlock], float | None]:
    """Stream lines of input #0 plus the indented lines under each (Metadata, Side data)."""
    blocks: list[_StreamBlock] = []
    duration: float | None = None
    current: _StreamBlock | None = None
    stream_indent = 0
    in_input0 = False
    for line in stderr.splitlines():
        if line.startswith("Input #"):
            in_input0 = line.startswith("Input #0")
            current = None
            continue
        if not in_input0:
            continue
        if duration is None and (m := _DURATION_LINE.search(line)) and m.group(1) is not None:
            duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        if m := _STREAM_LINE.match(line):
            language = m.group("lang") if m.group("lang") not in (None, "und") else None
            current = _StreamBlock(int(m.group("index")), m.group("kind").lower(), language, m.group("rest"))
            stream_indent = len(m.group("indent"))
            blocks.append(current)
        elif current is not None and len(line) - len(line.lstrip()) > stream_indent:
            current.extra_lines.append(line)
        else:
            current = None
    return blocks, duration


def _rotation_of(block: _StreamBlock) -> int:
    for line in block.extra_lines:
        if m := _DISPLAY_MATRIX.search(line):
            return round(float(m.group(1))) % 360
    for line in block.extra_lines:
        if m := _ROTATE_TAG.match(line):
            return -round(float(m.group(1))) % 360  # the old tag is clockwise
    return 0


# "      timecode        : 01:02:03:04" under a stream (a phone's or camera's tmcd track, or matroska's tag).
_TIMECODE = re.compile(r"^\s*timecode\s*:\s*(\d{1,2}:\d{2}:\d{2}[:;.]\d{1,3})\s*$", re.IGNORECASE)


def _timecode_of(video: _StreamBlock, blocks: list[_StreamBlock]) -> str | None:
    """The start timecode: the video stream's tag first, then a data (tmcd) stream's."""
    for block in [video, *(b for b in blocks if b.kind == "data")]:
        for line in block.extra_lines:
            if m := _TIMECODE.match(line):
                return m.group(1)
    return None


def _field_order_of(rest: str) -> str | None:
    """'top coded first' from '... yuv420p(tv, top coded first (swapped)), ...'; None when ffmpeg prints none."""
    match = re.search(r"\b(progressive|(?:top|bottom)(?: coded)? first)\b", rest)
    return match.group(1) if match else None


def _tag_of(rest: str) -> str | None:
    """'gpmd' from 'bin_data (gpmd / 0x646D7067), 59 kb/s'; None where ffmpeg prints no fourcc."""
    match = re.search(r"\((\w{4}) / 0x[0-9A-Fa-f]{8}\)", rest)
    return match.group(1) if match else None


def _codec_of(rest: str) -> str:
    match = re.match(r"([\w-]+)", rest)
    return match.group(1) if match else "unknown"


def _count_packets(path: Path, stream_index: int, start_time: Fraction) -> tuple[int | None, Timeline | None, str]:
    """The frames a decoder will output for one stream and their times, from its packets without decoding.

    A stream copy to ffmpeg's framecrc muxer lists one line per packet (see :func:`parse_framecrc`);
    ``-copyts`` keeps the stored timestamps. Returns (count, timeline, stderr).
    """
    result = run_ffmpeg(["-v", "error", "-i", str(path), "-map", f"0:{stream_index}", "-c", "copy", "-copyts",
                   "-f", "framecrc", "-"])
    stderr = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        return None, None, stderr
    count, timeline = parse_framecrc(result.stdout.decode("ascii", "replace"), start_time)
    return count, timeline, stderr


def _exact_frame_rate(path: Path, stream_index: int) -> tuple[Fraction | None, str]:
    """Decode one frame into a tiny y4m stream: its header carries the rate as an exact ratio."""
    result = run_ffmpeg(["-v", "error", "-noautorotate", "-i", str(path), "-map", f"0:{stream_index}",
                   "-frames:v", "1", "-vf", "scale=16:16,format=yuv420p", "-f", "yuv4mpegpipe", "-"])
    header = result.stdout.split(b"\n", 1)[0]
    match = re.search(rb" F(\d+):(\d+)", header)
    rate = Fraction(int(match.group(1)), int(match.group(2))) if match and int(match.group(2)) else None
    return rate, result.stderr.decode("utf-8", "replace")


def _hdr_side_data(path: Path, stream_index: int) -> HdrMetadata | None:
    """Mastering display and content light level of the first frame (showinfo prints its side data)."""
    result = run_ffmpeg(["-v", "info", "-noautorotate", "-i", str(path), "-map", f"0:{stream_index}",
                         "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-"])
    return parse_side_data(result.stderr.decode("utf-8", "replace"))


# Rates as ffmpeg prints them rounded ("23.98 fps"), for the fallback when the y4m header is missing.
_COMMON_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120, 240)) + tuple(
    Fraction(n) for n in (8, 10, 12, 15, 24, 25, 30, 48, 50, 60, 72, 90, 100, 120, 144, 240)
)


def _rate_from_text(rest: str) -> Fraction | None:
    for unit in ("tbr", "fps"):
        if m := re.search(rf"(\d+(?:\.\d+)?)(k?) {unit}\b", rest):
            value = Fraction(m.group(1)) * (1000 if m.group(2) else 1)
            nearest = min(_COMMON_RATES, key=lambda r: abs(r - value))
            return nearest if abs(nearest - value) < Fraction(1, 100) else value
    return None


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Facts about the first real video stream of a file (cover art is skipped), checked for use."""
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(f"no such video file: {path}", hint="check the path and its spelling")
    if not path.is_file():
        raise VideoNotFoundError(f"not a file: {path}")

    header = run_ffmpeg(["-i", str(path)]).stderr.decode("utf-8", "replace")  # exits 1 (no output): expected
    blocks, duration = _parse_stream_blocks(header)
    start_match = _START_TIME.search(header)
    start_time = Fraction(start_match.group(1)) if start_match else Fraction(0)
    if not blocks:
        if "Input #0" in header:  # opened, but an empty container
            raise NoVideoStreamError(f"{path.name} holds no streams at all", hint="nothing to upscale")
        # ffmpeg cannot tell a cut-off mp4 from a file that never was a video ("moov atom not found"
        # for both), so neither does the message.
        reason = first_error_line(header) or "ffmpeg cannot open it"
        raise CorruptVideoError(f"{path.name} cannot be opened as a video: {reason}",
                                hint="it is truncated, damaged or not a video; if it is still being "
                                     "downloaded or copied, wait for that to finish")

    videos = [b for b in blocks if b.kind == "video" and "attached pic" not in b.rest]
    if not videos:
        kinds = ", ".join(sorted({b.kind for b in blocks}))
        raise NoVideoStreamError(f"{path.name} has no video stream (only {kinds})",
                                 hint="lightsr upscales pictures; an audio-only file has none")
    video = videos[0]
    parts = _split_top_level(video.rest)
    parsed = next((p for p in map(_parse_pix_fmt_field, parts[1:]) if p is not None), None)
    size = next((m for m in (re.match(r"(\d+)x(\d+)", p) for p in parts[1:]) if m), None)
    if parsed is None or size is None:
        raise NoVideoStreamError(f"cannot read the size and pixel format of {path.name}: {video.rest}")
    pix_fmt, colour = parsed
    sar_match = re.search(r"SAR (\d+):(\d+)", video.rest)
    sar = Fraction(int(sar_match.group(1)), int(sar_match.group(2))) if sar_match and int(sar_match.group(2)) else None

    frame_count, timeline, count_log = _count_packets(path, video.index, start_time)
    if frame_count is None:
        raise CorruptVideoError(f"cannot read the video packets of {path.name}: {error_tail(count_log)}")
    if damage := corruption_in(count_log):
        raise CorruptVideoError(f"{path.name} is truncated or damaged: {damage}",
                                hint="the file may still be downloading or copying; re-fetch it")
    if frame_count == 0 or pix_fmt == "none":
        raise EmptyVideoError(f"{path.name} has a video stream with no frames", hint="nothing to upscale")

    frame_rate, decode_log = _exact_frame_rate(path, video.index)
    if frame_rate is None:
        if damage := corruption_in(decode_log) or error_tail(decode_log):
            raise CorruptVideoError(f"the first frame of {path.name} cannot be decoded: {damage}")
        frame_rate = _rate_from_text(video.rest)
    if frame_rate is None or frame_rate <= 0:
        raise NoVideoStreamError(f"{path.name} has no usable frame rate: {video.rest}")

    others = tuple(
        StreamInfo(b.index, b.kind, _codec_of(b.rest), b.language, "attached pic" in b.rest, _tag_of(b.rest))
        for b in blocks if b is not video
    )
    return VideoInfo(
        path=path, stream_index=video.index, codec=_codec_of(video.rest),
        width=int(size.group(1)), height=int(size.group(2)), frame_rate=frame_rate, frame_count=frame_count,
        duration=duration, pix_fmt=pix_fmt, bit_depth=pix_fmt_bit_depth(pix_fmt), rotation=_rotation_of(video),
        colour=colour, sample_aspect_ratio=sar, other_streams=others, timeline=timeline,
        hdr=_hdr_side_data(path, video.index) if pix_fmt_bit_depth(pix_fmt) > 8 else None,
        timecode=_timecode_of(video, blocks), field_order=_field_order_of(video.rest),
    )


def count_frames(path: str | os.PathLike[str], *, decode: bool = False) -> int:
    """Frames in the first real video stream of a file.

    decode=False counts packets, less those an edit list discards (fast, no decoding).
    decode=True decodes everything and counts frames out of the decoder: slow, but the ground truth,
    used to check that a resume segment is complete and playable.
    """
    info = probe_video(path)
    if not decode:
        return info.frame_count
    result = run_ffmpeg(["-v", "error", "-nostats", "-i", str(path), "-map", f"0:{info.stream_index}",
                   "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-"])
    frames = re.findall(rb"^frame=\s*(\d+)\s*$", result.stdout, re.MULTILINE)
    log = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0 or not frames or corruption_in(log):
        raise CorruptVideoError(f"cannot decode {Path(path).name}: {error_tail(log)}")
    return int(frames[-1])


def as_video_info(source: VideoInfo | str | os.PathLike[str]) -> VideoInfo:
    """``source`` itself when already probed, else :func:`probe_video` of that path."""
    return source if isinstance(source, VideoInfo) else probe_video(source)
