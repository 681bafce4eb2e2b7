"""YUV4MPEG2 (y4m) streams: the header parsed here, frames decoded to and encoded from RGB through ffmpeg pipes.

y4m is what ``ffmpeg -f yuv4mpegpipe -`` writes: one text line ``YUV4MPEG2 W720 H480 F30000:1001 It
A10:11 C420p10 XCOLORRANGE=LIMITED``, then per frame a ``FRAME`` line and the raw planes. The header
is read here (size, rate, interlacing, sample aspect, colourspace incl. the 9..16-bit ``420p10``
kinds that ffmpeg writes with ``-strict -1``); the planes are converted to RGB by an ffmpeg process
(the same conversion the file path's reader does, so both give the same frames), fed by a thread
that copies the stream in chunks. Results go out the same way: RGB into an ffmpeg process that
writes y4m with the same rate, interlacing, aspect and colourspace (10-bit stays 10-bit) straight
to a file descriptor (stdout). Memory stays bounded: frames flow through pipes, never collected.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO

import numpy as np

from ..errors import CorruptVideoError, InputError, OutputClosedError
from .video.ffmpeg import error_tail, ffmpeg_exe

SIGNATURE = b"YUV4MPEG2"
_MAX_HEADER = 4096
_CHUNK = 1 << 20

# y4m colourspace tag -> ffmpeg pixel format (ffmpeg's own yuv4mpegpipe names).
_PIX_FMTS = {
    "420jpeg": "yuv420p", "420paldv": "yuv420p", "420mpeg2": "yuv420p", "420": "yuv420p", "411": "yuv411p",
    "422": "yuv422p", "444": "yuv444p", "444alpha": "yuva444p", "mono": "gray",
    "mono9": "gray9le", "mono10": "gray10le", "mono12": "gray12le", "mono16": "gray16le",
    **{f"{kind}p{bits}": f"yuv{kind}p{bits}le" for kind in ("420", "422", "444") for bits in (9, 10, 12, 14, 16)},
}


@dataclass(frozen=True)
class Y4mHeader:
    width: int
    height: int
    frame_rate: Fraction
    interlacing: str = "p"
    """p progressive, t top field first, b bottom field first, m mixed."""
    sample_aspect: Fraction | None = None
    """None when the stream says A0:0 (unknown) or nothing."""
    colourspace: str = "420jpeg"
    full_range: bool | None = None
    """From ffmpeg's XCOLORRANGE extension; None when absent."""

    @property
    def pix_fmt(self) -> str:
        return _PIX_FMTS[self.colourspace]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame's planes (after its FRAME line)."""
        sample = 2 if self.bit_depth > 8 else 1
        luma = self.width * self.height
        half_w, half_h = -(-self.width // 2), -(-self.height // 2)
        kind = self.colourspace
        chroma = (0 if kind.startswith("mono") else 2 * half_w * half_h if kind.startswith("420")
                  else 2 * half_w * self.height if kind.startswith("422")
                  else 2 * -(-self.width // 4) * self.height if kind.startswith("411") else 2 * luma)
        return (luma + chroma + (luma if kind == "444alpha" else 0)) * sample

    @property
    def bit_depth(self) -> int:
        """8, or the 9..16 bits of the kinds ffmpeg names ``...p10le``, ``gray16le``."""
        match = re.search(r"(\d+)le$", self.pix_fmt)
        return int(match.group(1)) if match else 8


def parse_header(line: bytes) -> Y4mHeader:
    """A y4m stream header line (without or with its newline); InputError when it is not one we can read."""
    words = line.rstrip(b"\n").decode("ascii", "replace").split(" ")
    if words[0] != SIGNATURE.decode():
        raise InputError("the stream does not start with a YUV4MPEG2 header")
    fields: dict[str, str] = {}
    extras: dict[str, str] = {}
    for word in words[1:]:
        if not word:
            continue
        if word[0] == "X":
            key, _, value = word[1:].partition("=")
            extras[key] = value
        else:
            fields[word[0]] = word[1:]
    try:
        width, height = int(fields["W"]), int(fields["H"])
        numerator, denominator = (int(x) for x in fields["F"].split(":"))
        rate = Fraction(numerator, denominator)
        aspect_n, aspect_d = (int(x) for x in fields.get("A", "0:0").split(":"))
    except (KeyError, ValueError, ZeroDivisionError):
        raise InputError(f"the YUV4MPEG2 header is incomplete or malformed: {line[:200]!r}",
                         hint="it needs W (width), H (height) and F (frame rate, n:d)") from None
    if width < 1 or height < 1 or rate <= 0:
        raise InputError(f"the YUV4MPEG2 header gives no usable size or rate: {line[:200]!r}")
    colourspace = fields.get("C", "420jpeg")
    if colourspace not in _PIX_FMTS:
        raise InputError(f"YUV4MPEG2 colourspace C{colourspace} is not supported",
                         hint=f"supported: {', '.join(sorted(_PIX_FMTS))}")
    colour_range = extras.get("COLORRANGE", "").upper()
    return Y4mHeader(width, height, rate, fields.get("I", "p")[:1] or "p",
                     Fraction(aspect_n, aspect_d) if aspect_n and aspect_d else None, colourspace,
                     {"FULL": True, "LIMITED": False}.get(colour_range))


def read_header_line(stream: IO[bytes], start: bytes = b"") -> bytes:
    """The header line (with its newline) from ``start`` plus what follows in ``stream``, one byte at a time."""
    line = bytearray(start)
    while not line.endswith(b"\n"):
        if len(line) > _MAX_HEADER:
            raise InputError("the YUV4MPEG2 header line never ends (no newline in the first 4 KB)")
        byte = stream.read(1)
        if not byte:
            raise InputError("the stream ended inside its YUV4MPEG2 header")
        line += byte
    return bytes(line)


def _start(args: list[str], stdin, stdout) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the owner; a file never fills up like a pipe
    return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=log), log  # noqa: S603 - our ffmpeg arguments


def _log_text(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


class Y4mDecoder:
    """RGB frames (uint8, or uint16 for deeper streams) of a y4m stream whose header line was read already."""

    def __init__(self, header_line: bytes, rest: IO[bytes]) -> None:
        self.header = parse_header(header_line)
        deep = self.header.bit_depth > 8
        self.dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
        self._frame_bytes = self.header.width * self.header.height * 3 * self.dtype.itemsize
        self.frames_read = 0
        self._fed = 0
        self._header_bytes = len(header_line)
        args = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-f", "yuv4mpegpipe", "-i", "pipe:0",
                "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb48le" if deep else "rgb24", "pipe:1"]
        self._proc, self._log = _start(args, subprocess.PIPE, subprocess.PIPE)
        self._feeder = threading.Thread(target=self._feed, args=(header_line, rest), name="lightsr-y4m-feed",
                                        daemon=True)
        self._feeder.start()

    def _feed(self, header_line: bytes, rest: IO[bytes]) -> None:
        sink = self._proc.stdin
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):  # ffmpeg stopped: its log says why
            sink.write(header_line)
            while chunk := (rest.read1(_CHUNK) if hasattr(rest, "read1") else rest.read(_CHUNK)):
                self._fed += len(chunk)
                sink.write(chunk)
        with contextlib.suppress(BrokenPipeError, OSError):
            sink.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        source = self._proc.stdout
        shape = (self.header.height, self.header.width, 3)
        while True:
            frame = np.empty(shape, dtype=self.dtype)
            view = memoryview(frame).cast("B")
            filled = 0
            while filled < self._frame_bytes and (got := source.readinto(view[filled:])):
                filled += got
            if filled < self._frame_bytes:
                self._finish(filled)
                return
            self.frames_read += 1
            yield frame

    def _finish(self, partial: int) -> None:
        code = self._proc.wait()
        self._feeder.join(timeout=5)
        log = _log_text(self._log)
        if code != 0:
            raise CorruptVideoError(f"ffmpeg failed decoding the y4m stream after {self.frames_read} frames: "
                                    f"{error_tail(log)}")
        # ffmpeg drops a last frame cut short without a word: what was fed beyond the whole frames says so.
        per_frame = len(b"FRAME\n") + self.header.frame_bytes
        left = self._fed - self.frames_read * per_frame
        if partial or 0 < left < per_frame:
            raise CorruptVideoError(f"the y4m stream ended inside frame {self.frames_read + 1} "
                                    f"({partial or left} of {per_frame} bytes)", hint="the stream was cut short")
        if self.frames_read == 0:
            raise InputError("the y4m stream holds no frames")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdout, self._proc.stdin):
            with contextlib.suppress(OSError):
                pipe.close()
        self._log.close()


class Y4mEncoder:
    """Writes RGB frames as a y4m stream to file descriptor ``out_fd``, in the header's colourspace and rate."""

    def __init__(self, out_fd: int, header: Y4mHeader, width: int, height: int) -> None:
        self.frames_written = 0
        self._deep = header.bit_depth > 8
        filters = []
        if header.full_range is not None:
            filters.append(f"scale=out_range={'full' if header.full_range else 'limited'}")
        filters.append(f"format={header.pix_fmt}")
        if header.sample_aspect is not None:
            sar = header.sample_aspect
            filters.append(f"setsar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator, 100)}")
        if header.interlacing in ("t", "b"):
            filters.append(f"setfield={'tff' if header.interlacing == 't' else 'bff'}")
        rate = header.frame_rate
        args = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-f", "rawvideo",
                "-pix_fmt", "rgb48le" if self._deep else "rgb24", "-s", f"{width}x{height}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0", "-vf", ",".join(filters),
                "-fps_mode", "passthrough", "-strict", "-1", "-f", "yuv4mpegpipe", "-pix_fmt", header.pix_fmt, "pipe:1"]
        self._proc, self._log = _start(args, subprocess.PIPE, out_fd)

    def write(self, frame: np.ndarray) -> None:
        data = np.ascontiguousarray(frame, dtype=np.dtype("<u2") if self._deep else np.uint8)
        try:
            self._proc.stdin.write(memoryview(data).cast("B"))
        except (BrokenPipeError, OSError):
            self._failed(f"after {self.frames_written} frames")
        self.frames_written += 1

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            self._failed(f"at the end ({self.frames_written} frames)")
        self._log.close()

    def _failed(self, when: str) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        log = _log_text(self._log)
        # ffmpeg is started with SIGPIPE at its default (Popen restores it): a closed reader kills it silently.
        if self._proc.returncode == -signal.SIGPIPE or "broken pipe" in log.lower():
            raise OutputClosedError(f"the output pipe was closed by its reader {when}")
        raise CorruptVideoError(f"ffmpeg failed writing the y4m stream {when}: {error_tail(log)}")

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._log.close()
