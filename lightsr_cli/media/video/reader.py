"""Decoding: the frames of a video's stream as RGB numpy arrays, read from an ffmpeg pipe."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from ...errors import CorruptVideoError
from .ffmpeg import corruption_in, error_tail, ffmpeg_exe
from .probe import VideoInfo, as_video_info

# ffmpeg's warning when a stream's frames change size mid-stream (a broadcast capture switching between SD
# and HD, clips of other sizes joined, a screen recording turned) and the filter graph is kept:
# "... filter context - w: 64 h: 48 ..., incoming frame - w: 48 h: 64 ...".
_SIZE_CHANGED = re.compile(r"incoming frame - w: (\d+) h: (\d+)")


_ERROR_LEVEL = re.compile(r"\[(error|fatal|panic)\]")


def _fit_into(width: int, height: int) -> str:
    """Frames of another size scaled to fit ``width`` x ``height``, keeping their shape, centred on black;
    frames of that size pass through untouched (bit-identical, no cost). Without it ffmpeg would scale
    them to the first frame's size and squash them."""
    return (f"scale={width}:{height}:force_original_aspect_ratio=decrease:eval=frame,"
            f"pad={width}:{height}:-1:-1:color=black:eval=frame")


class FrameReader:
    """Decoded RGB frames of a video as numpy arrays, from frame index ``start_frame`` on.

    Decodes without autorotation (the output carries the rotation tag instead) and with
    ``-fps_mode passthrough`` (ffmpeg never duplicates or drops a frame), so frame i here is frame i
    of the stream. Every frame comes out at the stream's first size: frames that change size mid-stream
    are fitted into it (:func:`_fit_into`), and :attr:`other_sizes` says which sizes were met.
    ``start_frame`` is exact: ffmpeg decodes from the start and a ``select`` filter drops
    frames before the index — slower than a keyframe seek, but a seek lands on timestamps, which are
    not frame indices in variable-rate or edit-listed files.
    """

    def __init__(self, source: VideoInfo | str | os.PathLike[str], *, start_frame: int = 0) -> None:
        self.info = as_video_info(source)
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
        # The filter graph is never rebuilt (-reinit_filter 0): a rebuilt graph would restart select's frame
        # count (a read resumed past a size change got no frames) and bwdif's memory. So the fitting comes
        # first and absorbs any change of size. bwdif before select: frames before start_frame still give
        # their neighbours' motion, so a resumed read yields the same frames as an uninterrupted one.
        # send_frame keeps one frame per frame (and its time).
        filters = [_fit_into(self.info.width, self.info.height)]
        filters += ["bwdif=mode=send_frame:parity=auto:deint=all"] if self.info.read_deinterlaced else []
        filters += [f"select=gte(n\\,{start_frame})"] if start_frame else []
        self.other_sizes: tuple[tuple[int, int], ...] = ()
        """Frame sizes other than the first that ffmpeg met (read from its log when decoding ends or stops;
        it decodes a little ahead of the frames taken)."""
        # Warning level, for the size-change line only; errors and damage are read from the error lines alone.
        self._args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-v", "level+warning", "-noautorotate",
            "-reinit_filter", "0", "-i", str(self.info.path), "-map", f"0:{self.info.stream_index}", "-vf", ",".join(filters),
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
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _release
            self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE,  # noqa: S603 - our ffmpeg argument list
                                          stderr=self._stderr, stdin=subprocess.DEVNULL)
        return self._proc

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._done:
            raise StopIteration
        proc = self._start()
        if proc.stdout is None:  # never: _start opens stdout as a pipe
            raise RuntimeError("ffmpeg's stdout is not a pipe")
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

    def _read_log(self) -> str:
        """Read ffmpeg's log once decoding ends or stops: records :attr:`other_sizes` from its warnings and
        returns its error lines (what failures and damage are judged by)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").splitlines()
        sizes = (_SIZE_CHANGED.search(line) for line in lines if "[warning]" in line)
        first = (self.info.width, self.info.height)
        self.other_sizes = tuple(dict.fromkeys(size for m in sizes if m and (size := (int(m[1]), int(m[2]))) != first))
        return "\n".join(line for line in lines if _ERROR_LEVEL.search(line))

    def _finish(self, partial_bytes: int) -> None:
        """End of the pipe: decide whether the stream really ended or ffmpeg failed on the way."""
        self._done = True
        if self._proc is None:  # never: called only after _start
            raise RuntimeError("_finish before ffmpeg was started")
        returncode = self._proc.wait()
        log = self._read_log()
        self._release()
        where = f"{self.info.path.name} after {self.frames_read} of {self.frames_expected} frames"
        if returncode != 0:
            raise CorruptVideoError(f"ffmpeg failed decoding {where}: {error_tail(log)}")
        if partial_bytes:
            raise CorruptVideoError(f"decoding {where} ended inside a frame ({partial_bytes} bytes)")
        if damage := corruption_in(log):
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
        if not self._done:
            self._read_log()  # the sizes met so far
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
