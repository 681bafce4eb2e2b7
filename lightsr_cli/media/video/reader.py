"""Decoding: the frames of a video's stream as RGB numpy arrays, read from an ffmpeg pipe."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from ...errors import CorruptVideoError
from .ffmpeg import corruption_in, error_tail, ffmpeg_exe
from .probe import VideoInfo, as_video_info


class FrameReader:
    """Decoded RGB frames of a video as numpy arrays, from frame index ``start_frame`` on.

    Decodes without autorotation (the output carries the rotation tag instead) and with
    ``-fps_mode passthrough`` (ffmpeg never duplicates or drops a frame), so frame i here is frame i
    of the stream. ``start_frame`` is exact: ffmpeg decodes from the start and a ``select`` filter drops
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
        # bwdif before select: frames before start_frame still give their neighbours' motion, so a resumed
        # read yields the same frames as an uninterrupted one. send_frame keeps one frame per frame (and its time).
        filters = ["bwdif=mode=send_frame:parity=auto:deint=all"] if self.info.read_deinterlaced else []
        filters += [f"select=gte(n\\,{start_frame})"] if start_frame else []
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

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def _finish(self, partial_bytes: int) -> None:
        """End of the pipe: decide whether the stream really ended or ffmpeg failed on the way."""
        self._done = True
        if self._proc is None:  # never: called only after _start
            raise RuntimeError("_finish before ffmpeg was started")
        returncode = self._proc.wait()
        log = self._stderr_text()
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
