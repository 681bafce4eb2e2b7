"""Video in and out through the ffmpeg binary that imageio-ffmpeg ships: numpy frames only, no torch.

Why drive ffmpeg directly instead of imageio's reader/writer: we need an exact rational frame rate,
frame sizes that are not multiples of 16 (imageio resizes to its macro_block_size), >8-bit frames,
rotation and colour tags carried over, and the source's audio/subtitle streams muxed in unchanged.

imageio-ffmpeg ships no ffprobe, so :func:`probe_video` reads three cheap ffmpeg runs:

* ``ffmpeg -i FILE`` (stderr): streams, codec, size, pixel format, colour tags, rotation, duration;
* a stream copy to the framecrc muxer: one line per packet, so the exact frame count without decoding;
* a one-frame decode to a y4m pipe: the y4m header states the frame rate as an exact ratio
  (``F24000:1001``) where ``ffmpeg -i`` only prints a rounded "23.98 fps". It also proves the video
  stream decodes at all.

Conventions: frames are HxWx3 RGB, ``uint8`` for 8-bit sources and ``uint16`` (full 0..65535 scale,
as ffmpeg's ``rgb48le``) for deeper sources. Width/height are the coded size: pixels are never rotated;
the display rotation is carried as metadata from source to output instead.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import (CorruptVideoError, EmptyVideoError, NoVideoStreamError, StreamCopyError, VideoEncodeError,
                      VideoError, VideoNotFoundError)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"})


# --------------------------------------------------------------------------------------------- ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise VideoError("video support needs the imageio-ffmpeg package", hint="pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    # -nostdin: a probing ffmpeg must never eat the terminal's input (or block on it).
    return subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", *args], capture_output=True, check=False)


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=1)
def _pix_fmt_table() -> dict[str, int | None]:
    """Every pix_fmt name ffmpeg knows -> its deepest component, from ``ffmpeg -pix_fmts``.

    The depth comes from the BIT_DEPTHS column ("10-10-10"); builds older than ffmpeg 4.4 lack it (None).
    """
    text = _run(["-pix_fmts"]).stdout.decode("utf-8", "replace")
    table: dict[str, int | None] = {}
    for match in re.finditer(r"^[IOHPB.]{5}\s+(\w+)\s+\d+\s+\d+(?:\s+([\d-]+))?\s*$", text, re.MULTILINE):
        depths = match.group(2)
        table[match.group(1)] = max(int(d) for d in depths.split("-")) if depths else None
    return table


def pix_fmt_bit_depth(pix_fmt: str) -> int:
    """Bits per component of an ffmpeg pixel format: yuv420p -> 8, yuv420p10le -> 10, rgb48le -> 16."""
    depth = _pix_fmt_table().get(pix_fmt)
    if depth is not None:
        return depth
    # Older ffmpeg builds print no BIT_DEPTHS column: fall back on the naming scheme (…p10le, …p12be).
    match = re.search(r"p(\d{1,2})(?:le|be)$", pix_fmt)
    return int(match.group(1)) if match else 8


@functools.lru_cache(maxsize=None)
def encoder_pix_fmts(codec: str) -> tuple[str, ...]:
    """Pixel formats an encoder of the bundled ffmpeg accepts (empty when unknown)."""
    text = _run(["-h", f"encoder={codec}"]).stdout.decode("utf-8", "replace")
    match = re.search(r"Supported pixel formats:\s*(.+)", text)
    return tuple(match.group(1).split()) if match else ()


def default_pix_fmt(codec: str, source_bit_depth: int = 8) -> str:
    """The output pixel format when the user picks none.

    4:2:0 for compatibility; 10 (or 12) bits when the source has more than 8 and the encoder can keep
    them, so an upscale of a 10-bit video is not squashed to 8 bits. (The bundled libx264 is a
    multi-depth build, so even H.264 keeps 10 bits; players must support High 10 then.)
    """
    if source_bit_depth > 8:
        supported = encoder_pix_fmts(codec)
        for candidate in (f"yuv420p{min(source_bit_depth, 12)}le", "yuv420p10le"):
            if candidate in supported:
                return candidate
    return "yuv420p"


# --------------------------------------------------------------------------------------------- probe


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

    @property
    def video_duration(self) -> float:
        """Seconds covered by the video frames: frame_count / frame_rate."""
        return float(self.frame_count / self.frame_rate)


# One stream line of `ffmpeg -i`, e.g.
#   Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 318x178 ...
_STREAM_LINE = re.compile(
    r"^(?P<indent>\s*)Stream #0:(?P<index>\d+)(?:\[[^\]]*\])?(?:\((?P<lang>[^)]*)\))?"
    r":\s*(?P<kind>Video|Audio|Subtitle|Data|Attachment):\s*(?P<rest>.*)$"
)
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
    if not match or match.group(1) not in _pix_fmt_table() and match.group(1) != "none":
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


def _codec_of(rest: str) -> str:
    match = re.match(r"([\w-]+)", rest)
    return match.group(1) if match else "unknown"


def _first_error_line(stderr: str) -> str | None:
    """The most telling line of a failed ffmpeg run, without its "[in#0 @ 0x...]" prefix."""
    for line in stderr.splitlines():
        if re.search(r"error|invalid|not found|no such|denied|ended", line, re.IGNORECASE):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())
    return None


# Follow-up lines ffmpeg prints after the real cause; they only repeat that something failed.
_ECHO_LINES = ("task finished", "terminating thread", "nothing was written", "error sending frames",
               "conversion failed", "at least one output file", "error while filtering", "error closing file")


def _ffmpeg_error_tail(stderr: bytes | str, lines: int = 3) -> str:
    """The first few lines of a failed ffmpeg run that say why, without "[mov @ 0x...]" prefixes."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    kept = [re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip()) for line in text.splitlines()]
    kept = [line for line in kept if line and not any(e in line.lower() for e in _ECHO_LINES)]
    return " | ".join(kept[:lines])


# Messages by which ffmpeg reports a file that ends early or a container it cannot parse. ffmpeg often
# exits 0 anyway (a truncated mkv demuxes "fine" up to the cut), so these are looked for explicitly.
# Decoder complaints about damaged pictures are deliberately absent: ffmpeg conceals those and a
# player would play on, so we upscale what it decodes rather than refuse the file.
_CORRUPTION_MARKERS = (
    "ended prematurely",  # matroska cut short
    "partial file",  # mp4 whose sample table points past the end of the file
    "moov atom not found",  # mp4 cut before its index
    "truncat",
    "invalid data found",
    "end of file",
)


def _corruption_in(stderr: str) -> str | None:
    """The first line of an ffmpeg log that reports truncation or an unparsable container, if any."""
    for line in stderr.splitlines():
        if any(marker in line.lower() for marker in _CORRUPTION_MARKERS):
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
    return None


_PACKET_DISCARD = 0x4  # AV_PKT_FLAG_DISCARD: demuxed but dropped after decoding (mp4 edit lists)


def _count_packets(path: Path, stream_index: int) -> tuple[int | None, str]:
    """The frames a decoder will output for one stream, counted from its packets without decoding.

    A stream copy to ffmpeg's framecrc muxer lists one line per packet with its flags ("F=0x5").
    Every packet is one frame for the codecs we meet, except those flagged DISCARD: an mp4 cut
    with an edit list keeps the frames before the cut point for decoding and drops them after.
    Counting them too would promise frames the reader never yields. Returns (count, stderr).
    """
    result = _run(["-v", "error", "-i", str(path), "-map", f"0:{stream_index}", "-c", "copy",
                   "-f", "framecrc", "-"])
    stderr = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        return None, stderr
    count = 0
    for line in result.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        flags = re.search(r"F=0x([0-9A-Fa-f]+)", line)  # absent: just the keyframe flag
        if not (flags and int(flags.group(1), 16) & _PACKET_DISCARD):
            count += 1
    return count, stderr


def _exact_frame_rate(path: Path, stream_index: int) -> tuple[Fraction | None, str]:
    """Decode one frame into a tiny y4m stream: its header carries the rate as an exact ratio."""
    result = _run(["-v", "error", "-noautorotate", "-i", str(path), "-map", f"0:{stream_index}",
                   "-frames:v", "1", "-vf", "scale=16:16,format=yuv420p", "-f", "yuv4mpegpipe", "-"])
    header = result.stdout.split(b"\n", 1)[0]
    match = re.search(rb" F(\d+):(\d+)", header)
    rate = Fraction(int(match.group(1)), int(match.group(2))) if match and int(match.group(2)) else None
    return rate, result.stderr.decode("utf-8", "replace")


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

    header = _run(["-i", str(path)]).stderr.decode("utf-8", "replace")  # exits 1 (no output): expected
    blocks, duration = _parse_stream_blocks(header)
    if not blocks:
        if "Input #0" in header:  # opened, but an empty container
            raise NoVideoStreamError(f"{path.name} holds no streams at all", hint="nothing to upscale")
        # ffmpeg cannot tell a cut-off mp4 from a file that never was a video ("moov atom not found"
        # for both), so neither does the message.
        reason = _first_error_line(header) or "ffmpeg cannot open it"
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

    frame_count, count_log = _count_packets(path, video.index)
    if frame_count is None:
        raise CorruptVideoError(f"cannot read the video packets of {path.name}: {_ffmpeg_error_tail(count_log)}")
    if damage := _corruption_in(count_log):
        raise CorruptVideoError(f"{path.name} is truncated or damaged: {damage}",
                                hint="the file may still be downloading or copying; re-fetch it")
    if frame_count == 0 or pix_fmt == "none":
        raise EmptyVideoError(f"{path.name} has a video stream with no frames", hint="nothing to upscale")

    frame_rate, decode_log = _exact_frame_rate(path, video.index)
    if frame_rate is None:
        if damage := _corruption_in(decode_log) or _ffmpeg_error_tail(decode_log):
            raise CorruptVideoError(f"the first frame of {path.name} cannot be decoded: {damage}")
        frame_rate = _rate_from_text(video.rest)
    if frame_rate is None or frame_rate <= 0:
        raise NoVideoStreamError(f"{path.name} has no usable frame rate: {video.rest}")

    others = tuple(
        StreamInfo(b.index, b.kind, _codec_of(b.rest), b.language, "attached pic" in b.rest)
        for b in blocks if b is not video
    )
    return VideoInfo(
        path=path, stream_index=video.index, codec=_codec_of(video.rest),
        width=int(size.group(1)), height=int(size.group(2)), frame_rate=frame_rate, frame_count=frame_count,
        duration=duration, pix_fmt=pix_fmt, bit_depth=pix_fmt_bit_depth(pix_fmt), rotation=_rotation_of(video),
        colour=colour, sample_aspect_ratio=sar, other_streams=others,
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
    result = _run(["-v", "error", "-nostats", "-i", str(path), "-map", f"0:{info.stream_index}",
                   "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-"])
    frames = re.findall(rb"^frame=\s*(\d+)\s*$", result.stdout, re.MULTILINE)
    log = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0 or not frames or _corruption_in(log):
        raise CorruptVideoError(f"cannot decode {Path(path).name}: {_ffmpeg_error_tail(log)}")
    return int(frames[-1])


def _as_info(source: VideoInfo | str | os.PathLike[str]) -> VideoInfo:
    return source if isinstance(source, VideoInfo) else probe_video(source)


# --------------------------------------------------------------------------------------------- reading


class FrameReader:
    """Decoded RGB frames of a video as numpy arrays, from frame index ``start_frame`` on.

    Decodes without autorotation (the output carries the rotation tag instead) and with
    ``-fps_mode passthrough`` (ffmpeg never duplicates or drops a frame), so frame i here is frame i
    of the stream. ``start_frame`` is exact: ffmpeg decodes from the start and a ``select`` filter drops
    frames before the index — slower than a keyframe seek, but a seek lands on timestamps, which are
    not frame indices in variable-rate or edit-listed files.
    """

    def __init__(self, source: VideoInfo | str | os.PathLike[str], *, start_frame: int = 0) -> None:
        self.info = _as_info(source)
        if not 0 <= start_frame <= self.info.frame_count:
            raise ValueError(f"start_frame {start_frame} outside 0..{self.info.frame_count}")
        self.start_frame = start_frame
        deep = self.info.bit_depth > 8
        self.dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
        self.frame_shape = (self.info.height, self.info.width, 3)
        self._frame_bytes = self.info.height * self.info.width * 3 * self.dtype.itemsize
        self.frames_read = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._done = False
        filters = [f"select=gte(n\\,{start_frame})"] if start_frame else []
        self._args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-noautorotate", "-i", str(self.info.path),
            "-map", f"0:{self.info.stream_index}", *(["-vf", ",".join(filters)] if filters else []),
            "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb48le" if deep else "rgb24", "pipe:1",
        ]

    @property
    def frames_expected(self) -> int:
        return self.info.frame_count - self.start_frame

    def __len__(self) -> int:
        return self.frames_expected

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            # stderr goes to a file: a pipe nobody reads could fill up (many decode errors) and hang ffmpeg.
            self._stderr = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, stderr=self._stderr,
                                          stdin=subprocess.DEVNULL)
        return self._proc

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._done:
            raise StopIteration
        proc = self._start()
        assert proc.stdout is not None
        frame = np.empty(self.frame_shape, dtype=self.dtype)
        view = memoryview(frame).cast("B")
        filled = 0
        while filled < self._frame_bytes:
            got = proc.stdout.readinto(view[filled:])
            if not got:
                break
            filled += got
        if filled == self._frame_bytes:
            self.frames_read += 1
            return frame
        self._finish(partial_bytes=filled)
        raise StopIteration

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def _finish(self, partial_bytes: int) -> None:
        """End of the pipe: decide whether the stream really ended or ffmpeg failed on the way."""
        self._done = True
        assert self._proc is not None
        returncode = self._proc.wait()
        log = self._stderr_text()
        self._release()
        where = f"{self.info.path.name} after {self.frames_read} of {self.frames_expected} frames"
        if returncode != 0:
            raise CorruptVideoError(f"ffmpeg failed decoding {where}: {_ffmpeg_error_tail(log)}")
        if partial_bytes:
            raise CorruptVideoError(f"decoding {where} ended inside a frame ({partial_bytes} bytes)")
        if damage := _corruption_in(log):
            raise CorruptVideoError(f"decoding {where} hit damaged data: {damage}")
        if self.frames_read < self.frames_expected:
            raise CorruptVideoError(f"decoding {where} ended early", hint="the file may be truncated")

    def _release(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop decoding (early stops are fine: ffmpeg is killed, nothing is raised)."""
        self._done = True
        self._release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)  # absent when __init__ failed
        if proc is not None and proc.poll() is None:
            proc.kill()


# --------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class VideoEncodeSettings:
    """How the upscaled video stream is encoded. None means: the codec's sensible default."""

    codec: str = "libx264"  # libx264, libx265, libvpx-vp9, ffv1 (any ffmpeg encoder name works)
    crf: int | None = None
    preset: str | None = None  # x264/x265 speed preset (ultrafast..veryslow)
    pix_fmt: str | None = None  # None: default_pix_fmt(codec, source bit depth)
    extra_args: tuple[str, ...] = ()  # raw ffmpeg output options, appended last (they win)


# codec -> (default crf, whether -preset means anything, arguments it always needs)
_CODEC_DEFAULTS: dict[str, tuple[int | None, bool, tuple[str, ...]]] = {
    "libx264": (18, True, ()),
    "libx265": (20, True, ("-x265-params", "log-level=error")),
    "libvpx-vp9": (24, False, ("-b:v", "0", "-row-mt", "1")),  # -b:v 0: crf alone = constant quality
    "ffv1": (None, False, ("-level", "3", "-slicecrc", "1")),  # lossless: no crf
}

# scale's out_color_matrix accepts fewer names than the colorspace tag has.
_SWSCALE_MATRIX = {"bt709": "bt709", "fcc": "fcc", "bt470bg": "bt601", "smpte170m": "smpte170m",
                   "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}

_MP4_FAMILY = {".mp4", ".m4v", ".mov"}
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}


def _encoder_args(options: VideoEncodeSettings, pix_fmt: str) -> list[str]:
    default_crf, has_preset, always = _CODEC_DEFAULTS.get(options.codec, (None, True, ()))
    args = ["-c:v", options.codec, "-pix_fmt", pix_fmt, *always]
    if options.crf is not None and options.codec in _CODEC_DEFAULTS and default_crf is None:
        raise VideoError(f"--crf does not apply to {options.codec}", hint=f"{options.codec} is lossless")
    crf = options.crf if options.crf is not None else default_crf
    if crf is not None:
        args += ["-crf", str(crf)]
    if options.preset is not None:
        if not has_preset:
            raise VideoError(f"--preset does not apply to {options.codec}",
                             hint="pass the encoder's own speed options as extra ffmpeg arguments")
        args += ["-preset", options.preset]
    return args


def _colour_filters(colour: ColourTags) -> tuple[list[str], list[str]]:
    """RGB -> YUV with the source's matrix and range, then tag the frames with all four properties.

    Tagging goes through setparams because ffmpeg (>= 7) takes colour tags from the frames: the
    -color_primaries/-color_trc output options alone are overridden by untagged frames.
    """
    scale = []
    if colour.matrix in _SWSCALE_MATRIX:
        scale.append(f"out_color_matrix={_SWSCALE_MATRIX[colour.matrix]}")
    if colour.range:
        scale.append(f"out_range={colour.range}")
    filters = [f"scale={':'.join(scale)}"] if scale else []
    params = [f"{key}={value}" for key, value in (("colorspace", colour.matrix), ("range", colour.range),
              ("color_primaries", colour.primaries), ("color_trc", colour.transfer)) if value]
    return filters, params


# The subtitle codec a container needs when it cannot take the source's as is (text formats only).
_SUBTITLE_TEXT_CODEC = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}


def _subtitle_codec_for(suffix: str, stream: StreamInfo) -> str:
    """'copy', or the text subtitle encoder the output container demands. Raises StreamCopyError."""
    if suffix == ".mkv":
        return "srt" if stream.codec == "mov_text" else "copy"  # matroska holds anything but mov_text
    if suffix == ".avi":
        raise StreamCopyError(f".avi output cannot hold subtitles (stream #{stream.index}, {stream.codec})",
                              hint="write a .mkv or .mp4 output")
    needed = _SUBTITLE_TEXT_CODEC.get(suffix)
    if needed is None or stream.codec == needed:
        return "copy"  # an unknown container: let ffmpeg judge (its refusal becomes StreamCopyError)
    if stream.codec == "dvd_subtitle" and needed == "mov_text":
        return "copy"  # mp4/mov do hold VobSub bitmaps
    if stream.codec in _TEXT_SUBTITLES:
        return needed
    raise StreamCopyError(f"{suffix} output cannot hold the {stream.codec} subtitles of stream #{stream.index}",
                          hint="write a .mkv output, which holds every subtitle format")


def _stream_copy_args(streams: Sequence[StreamInfo], out_path: Path, first_output_index: int) -> list[str]:
    """Maps and codecs for the source's audio, subtitle and attachment streams (source = input 1).

    Everything is copied unchanged, with one exception made only where the container demands it:
    mp4/mov hold text subtitles only as mov_text, webm only as WebVTT and matroska has no mov_text,
    so text subtitles are converted then (ASS styling does not survive mov_text). Bitmap subtitles
    cannot be converted: StreamCopyError, before any encoding, with a hint to write .mkv. Audio is
    always copied; a container that refuses it (AAC in webm) fails in ffmpeg and becomes a
    StreamCopyError too. Data streams (timecode tracks) and cover art are not copied.
    """
    suffix = out_path.suffix.lower()
    args: list[str] = []
    out_index = first_output_index
    for stream in streams:
        if stream.kind == "audio":
            codec = "copy"
        elif stream.kind == "subtitle":
            codec = _subtitle_codec_for(suffix, stream)
        elif stream.kind == "attachment" and suffix == ".mkv":
            codec = "copy"  # fonts of ASS subtitles; only matroska has attachments
        else:
            continue
        args += ["-map", f"1:{stream.index}", f"-c:{out_index}", codec]
        out_index += 1
    return args


def _check_chroma_fits(pix_fmt: str, width: int, height: int) -> None:
    """4:2:0 needs an even width and height, 4:2:2 an even width; ffmpeg's own error is cryptic."""
    odd_width, odd_height = width % 2, height % 2
    if ("420" in pix_fmt and (odd_width or odd_height)) or ("422" in pix_fmt and odd_width):
        raise VideoEncodeError(f"{pix_fmt} cannot hold a {width}x{height} picture: chroma subsampling "
                               "needs even dimensions", hint="choose a 4:4:4 pixel format (yuv444p) or ffv1")


class FrameWriter:
    """Encodes RGB numpy frames (HxWx3, uint8 or uint16) into ``out_path`` through an ffmpeg pipe.

    The size and depth come from the first frame. With a ``source``, the output gets its display
    rotation, colour tags and sample aspect ratio and, when ``copy_streams``, its audio, subtitle
    and attachment streams, chapters and global metadata (copied, not re-encoded). Segments for
    --resume are written with copy_streams=False and joined by :func:`concat_segments`.

    Use as a context manager: on an exception (or :meth:`abort`) ffmpeg is killed and the partial
    file removed; :meth:`close` finishes the file and raises VideoEncodeError when ffmpeg failed.
    """

    def __init__(self, out_path: str | os.PathLike[str], frame_rate: Fraction, *,
                 options: VideoEncodeSettings = VideoEncodeSettings(), source: VideoInfo | None = None,
                 copy_streams: bool = True) -> None:
        self.out_path = Path(out_path)
        self.frame_rate = Fraction(frame_rate)
        if self.frame_rate <= 0:
            raise ValueError(f"frame rate must be positive, got {frame_rate}")
        self.options = options
        self.source = source
        self.copy_streams = copy_streams and source is not None
        self.pix_fmt = options.pix_fmt or default_pix_fmt(options.codec, source.bit_depth if source else 8)
        self.frames_written = 0
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._closed = False
        # Plan the stream copy now: a container that cannot hold the streams fails before any encoding.
        self._copy_args = (_stream_copy_args(source.other_streams, self.out_path, 1)
                           if self.copy_streams and source else [])

    def _command(self, height: int, width: int, deep: bool) -> list[str]:
        rate = f"{self.frame_rate.numerator}/{self.frame_rate.denominator}"
        source = self.source
        video_in = ["-f", "rawvideo", "-pix_fmt", "rgb48le" if deep else "rgb24", "-s", f"{width}x{height}",
                    "-framerate", rate]
        if source is not None and source.rotation:
            # Rotation is side data of the input stream; -noautorotate keeps ffmpeg from turning it
            # into a transpose of the pixels, so the tag itself reaches the output.
            video_in += ["-display_rotation", str(source.rotation), "-noautorotate"]
        filters, params = _colour_filters(source.colour if source else ColourTags())
        filters.append(f"format={self.pix_fmt}")
        if source is not None and source.sample_aspect_ratio:
            sar = source.sample_aspect_ratio
            # setsar reduces the ratio to terms <= max (default 100): 188:189 would become 99:100.
            filters.append(f"setsar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator, 100)}")
        if params:
            filters.append("setparams=" + ":".join(params))
        args = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *video_in, "-i", "pipe:0"]
        if self.copy_streams and source is not None:
            args += ["-i", str(source.path), "-map_metadata", "1", "-map_chapters", "1"]
        args += ["-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough",
                 *_encoder_args(self.options, self.pix_fmt), *self._copy_args]
        if self.out_path.suffix.lower() in _MP4_FAMILY:
            args += ["-movflags", "+faststart"]
        return [*args, *self.options.extra_args, str(self.out_path)]

    def write(self, frame: np.ndarray) -> None:
        if self._closed:
            raise ValueError("write() on a closed FrameWriter")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"frames must be HxWx3 uint8 or uint16, got {frame.shape} {frame.dtype}")
        if self._proc is None:
            _check_chroma_fits(self.pix_fmt, frame.shape[1], frame.shape[0])
            self._shape, self._dtype = frame.shape, frame.dtype
            self._stderr = tempfile.TemporaryFile()
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            self._proc = subprocess.Popen(self._command(frame.shape[0], frame.shape[1], frame.dtype == np.uint16),
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.frames_written} is {frame.shape} {frame.dtype}, "
                             f"earlier frames were {self._shape} {self._dtype}")
        assert self._proc.stdin is not None
        data = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
        try:
            self._proc.stdin.write(memoryview(data).cast("B"))
        except (BrokenPipeError, OSError):
            self._fail(f"ffmpeg stopped accepting frames at frame {self.frames_written}")
        self.frames_written += 1

    def _log(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def _fail(self, what: str) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        log = self._log()
        self.abort()
        raise _encode_error(what, log, self.out_path)

    def close(self) -> None:
        """Finish the file. Raises VideoEncodeError (and removes the partial file) when ffmpeg failed."""
        if self._closed:
            return
        if self._proc is None:
            self._closed = True
            raise VideoEncodeError(f"no frames were written to {self.out_path.name}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            self._fail(f"ffmpeg failed to finish {self.out_path.name}")
        self._closed = True
        if self._stderr is not None:
            self._stderr.close()

    def abort(self) -> None:
        """Kill ffmpeg and remove the partial output. Safe to call more than once."""
        self._closed = True
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.out_path.unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def _encode_error(what: str, log: str, out_path: Path) -> VideoEncodeError:
    low = log.lower()
    # What ffmpeg says when the muxer refuses a codec (wording varies across versions).
    if any(s in low for s in ("not currently supported in container", "could not find tag for codec",
                              "codec not supported", "could not write header")):
        return StreamCopyError(f"{what}: the {out_path.suffix} container cannot hold these streams: "
                               f"{_ffmpeg_error_tail(log, 1)}", hint="write a .mkv output, which holds every codec")
    return VideoEncodeError(f"{what}: {_ffmpeg_error_tail(log) or 'no message from ffmpeg'}",
                            hint=_encode_failure_hint(low, out_path))


# What ffmpeg says for causes outside the codec options, and what helps (checked in this order).
_ENCODE_CAUSES = (
    (("no space left on device", "disk quota exceeded"), "the disk is full: free space in {folder} and run again"),
    (("permission denied", "read-only file system"), "{folder} cannot be written: check its permissions"),
    (("no such file or directory",), "{folder} was removed or renamed while encoding; run again"),
    (("unknown encoder", "unrecognized option", "error setting option", "invalid argument", "incompatible pixel format",
      "option not found", "error while opening encoder", "error initializing output stream"),
     "check the codec options ({--codec}, {--pix-fmt}, {--crf}, {--video-preset}, {--ffmpeg-arg})"),
)


def _encode_failure_hint(log: str, out_path: Path) -> str:
    """The likely cause of an encode failure in words, from ffmpeg's (lower-cased) log."""
    folder = out_path.parent
    if not folder.is_dir():
        return f"{folder} was removed or renamed while encoding; run again"
    for markers, advice in _ENCODE_CAUSES:
        if any(marker in log for marker in markers):
            return advice.replace("{folder}", str(folder))
    return "ffmpeg's message above says why; {--debug} shows the ffmpeg command"


# --------------------------------------------------------------------------------------------- segments


def segment_frame_range(segment: int, frames_per_segment: int, total_frames: int) -> range:
    """Frame indices of resume segment k: [k*N, min((k+1)*N, total))."""
    start = segment * frames_per_segment
    return range(start, min(start + frames_per_segment, total_frames))


def _concat_list_line(path: Path) -> str:
    # concat demuxer syntax: single-quoted, a quote written as '\'' (shell style).
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def concat_segments(segment_paths: Sequence[str | os.PathLike[str]], source: VideoInfo | str | os.PathLike[str],
                    out_path: str | os.PathLike[str], *, copy_streams: bool = True) -> None:
    """Join video-only segments losslessly (concat demuxer, -c copy) and mux the source's other streams.

    Segments must share codec and parameters, as FrameWriter(copy_streams=False) with the same options
    produces them, and should use the output's container (the same timestamp precision: .mkv
    segments for .mkv, .mp4 for .mp4). The rotation is set again on the joined stream, since the
    concat demuxer does not promise to carry per-file side data. The partial output is removed on error.
    """
    info = _as_info(source)
    out = Path(out_path)
    segments = [Path(p) for p in segment_paths]
    if not segments:
        raise ValueError("concat_segments needs at least one segment")
    missing = [p for p in segments if not p.is_file()]
    if missing:
        raise VideoNotFoundError(f"missing resume segment {missing[0]}", hint="start over without --resume")
    copy_args = _stream_copy_args(info.other_streams, out, 1) if copy_streams else []
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as listing:
        listing.write("ffconcat version 1.0\n")
        listing.writelines(_concat_list_line(p) for p in segments)
    try:
        args = ["-v", "error", "-y", "-f", "concat", "-safe", "0"]
        if info.rotation:
            args += ["-display_rotation", str(info.rotation)]
        args += ["-i", listing.name]
        if copy_streams:
            args += ["-i", str(info.path), "-map_metadata", "1", "-map_chapters", "1"]
        args += ["-map", "0:v:0", "-c:v", "copy", *copy_args]
        if out.suffix.lower() in _MP4_FAMILY:
            args += ["-movflags", "+faststart"]
        result = _run([*args, str(out)])
        if result.returncode != 0:
            out.unlink(missing_ok=True)
            raise _encode_error(f"joining {len(segments)} segments into {out.name} failed",
                                result.stderr.decode("utf-8", "replace"), out)
    finally:
        os.unlink(listing.name)
