"""Encoding: RGB numpy frames piped into ffmpeg, with the source's rotation, colour tags and streams carried over.

:class:`VideoEncodeSettings` says how the upscaled stream is encoded (codec, crf, preset, pixel
format, extra ffmpeg options); :class:`FrameWriter` runs the encoder and muxes in the streams that
:mod:`.streams` plans to copy.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np

from ...errors import StreamCopyError, VideoEncodeError
from .encoders import encoder_args
from .ffmpeg import default_pix_fmt, error_tail, ffmpeg_exe, pix_fmt_bit_depth
from .hdr import HDR_TRANSFERS
from .probe import ColourTags, VideoInfo
from .streams import stream_copy_args, timecode_args
from .timed_pipe import TimedRawPipe


@dataclass(frozen=True)
class VideoEncodeSettings:
    """How the upscaled video stream is encoded. None means: the codec's sensible default."""

    codec: str = "libx264"  # libx264, libx265, libvpx-vp9, ffv1 (any ffmpeg encoder name works)
    crf: int | None = None
    preset: str | None = None  # x264/x265 speed preset (ultrafast..veryslow)
    pix_fmt: str | None = None  # None: default_pix_fmt(codec, source bit depth)
    extra_args: tuple[str, ...] = ()  # raw ffmpeg output options, appended last (they win)


# scale's out_color_matrix accepts fewer names than the colorspace tag has.
_SWSCALE_MATRIX = {"bt709": "bt709", "fcc": "fcc", "bt470bg": "bt601", "smpte170m": "smpte170m",
                   "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}

MP4_FAMILY = {".mp4", ".m4v", ".mov"}


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


def _check_hdr_depth(source: VideoInfo | None, pix_fmt: str) -> None:
    """An HDR source (PQ or HLG transfer, or HDR side data) is never squeezed into 8 bits: it would band."""
    if source is None or not (source.colour.transfer in HDR_TRANSFERS or source.hdr is not None):
        return
    if pix_fmt_bit_depth(pix_fmt) < 10:
        raise VideoEncodeError(f"{source.path.name} is HDR ({source.colour.transfer or 'HDR10 side data'}); "
                               f"{pix_fmt} has {pix_fmt_bit_depth(pix_fmt)} bits and would band",
                               hint="choose a 10-bit pixel format ({--pix-fmt yuv420p10le}) and an encoder that "
                                    "takes it ({--codec libx265})")


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
                 copy_streams: bool = True, timestamps: Sequence[int] | None = None,
                 time_base: Fraction | None = None, end: int | None = None) -> None:
        self.out_path = Path(out_path)
        self.frame_rate = Fraction(frame_rate)
        if self.frame_rate <= 0:
            raise ValueError(f"frame rate must be positive, got {frame_rate}")
        self.options = options
        self.source = source
        self.copy_streams = copy_streams and source is not None
        self.pix_fmt = options.pix_fmt or default_pix_fmt(options.codec, source.bit_depth if source else 8)
        _check_hdr_depth(source, self.pix_fmt)
        # With timestamps (ticks of time_base, one per frame, then ``end``), frames travel with their own
        # times through a NUT pipe; without, as rawvideo numbered at the constant frame_rate.
        if timestamps is not None and time_base is None:
            raise ValueError("timestamps need their time_base")
        self.timestamps = tuple(timestamps) if timestamps is not None else None
        self.time_base = time_base
        self.end = end
        self._timed: TimedRawPipe | None = None
        self.frames_written = 0
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._closed = False
        # Plan the stream copy now: a container that cannot hold the streams fails before any encoding.
        self._copy_args = (stream_copy_args(source.other_streams, self.out_path, 1)
                           if self.copy_streams and source else [])

    def _command(self, height: int, width: int, deep: bool) -> list[str]:
        rate = f"{self.frame_rate.numerator}/{self.frame_rate.denominator}"
        source = self.source
        if self.timestamps is not None:
            video_in = ["-f", "nut"]
        else:
            video_in = ["-f", "rawvideo", "-pix_fmt", "rgb48le" if deep else "rgb24", "-s", f"{width}x{height}",
                        "-framerate", rate]
        if source is not None and source.rotation:
            # Rotation is side data of the input stream; -noautorotate keeps ffmpeg from turning it
            # into a transpose of the pixels, so the tag itself reaches the output.
            video_in += ["-display_rotation", str(source.rotation), "-noautorotate"]
        colour = source.colour if source else ColourTags()
        if colour.matrix == "gbr" and not self.pix_fmt.startswith("gbr"):  # an RGB source into YUV: no RGB tag
            colour = ColourTags(None, colour.range, colour.primaries, colour.transfer)
        filters, params = _colour_filters(colour)
        filters.append(f"format={self.pix_fmt}")
        if source is not None and source.sample_aspect_ratio:
            sar = source.sample_aspect_ratio
            # setsar reduces the ratio to terms <= max (default 100): 188:189 would become 99:100.
            filters.append(f"setsar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator, 100)}")
        if params:
            filters.append("setparams=" + ":".join(params))
        args = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *video_in, "-i", "pipe:0"]
        if self.copy_streams and source is not None:
            args += ["-i", str(source.path), "-map_metadata", "1", "-map_chapters", "1",
                     *timecode_args(source.timecode)]
        args += ["-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough"]
        if self.timestamps is not None:  # the encoder counts in the frames' own time base: no rounding
            args += ["-enc_time_base:v", "demux"]
        args += [*encoder_args(self.options.codec, self.options.crf, self.options.preset, self.pix_fmt,
                               source.hdr if source is not None else None), *self._copy_args]
        if self.out_path.suffix.lower() in MP4_FAMILY:
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
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close/abort
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            command = self._command(frame.shape[0], frame.shape[1], frame.dtype == np.uint16)
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE,  # noqa: S603 - our ffmpeg argument list
                                          stdout=subprocess.DEVNULL, stderr=self._stderr)

        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.frames_written} is {frame.shape} {frame.dtype}, "
                             f"earlier frames were {self._shape} {self._dtype}")
        if self._proc.stdin is None:  # never: ffmpeg is started with stdin=PIPE
            raise RuntimeError("ffmpeg's stdin is not a pipe")
        data = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
        try:
            if self.timestamps is not None:
                self._write_timed(data)
            else:
                self._proc.stdin.write(memoryview(data).cast("B"))
        except (BrokenPipeError, OSError):
            self._fail(f"ffmpeg stopped accepting frames at frame {self.frames_written}")
        self.frames_written += 1

    def _write_timed(self, data: np.ndarray) -> None:
        if self.timestamps is None or self.time_base is None or self._proc is None or self._proc.stdin is None:
            raise RuntimeError("no timed pipe")  # never: only called on the timed path, after ffmpeg started
        if self._timed is None:  # here, so that a pipe ffmpeg already closed is reported like any other
            self._timed = TimedRawPipe(self._proc.stdin, data.shape[1], data.shape[0], data.dtype == np.uint16,
                                       self.time_base)
        index = self.frames_written
        if index >= len(self.timestamps):
            raise ValueError(f"frame {index} has no timestamp ({len(self.timestamps)} were given)")
        following = self.timestamps[index + 1] if index + 1 < len(self.timestamps) else self.end
        pts = self.timestamps[index]
        self._timed.write(data, pts, (following - pts) if following is not None else 0)

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
        raise encode_error(what, log, self.out_path)

    def close(self) -> None:
        """Finish the file. Raises VideoEncodeError (and removes the partial file) when ffmpeg failed."""
        if self._closed:
            return
        if self._proc is None:
            self._closed = True
            raise VideoEncodeError(f"no frames were written to {self.out_path.name}")
        if self._proc.stdin is None:  # never: ffmpeg is started with stdin=PIPE
            raise RuntimeError("ffmpeg's stdin is not a pipe")
        if self.timestamps is not None and self.frames_written != len(self.timestamps):
            self._fail(f"{self.frames_written} frames were written to {self.out_path.name}, "
                       f"{len(self.timestamps)} were due")
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            if self._timed is not None:
                self._timed.close()
            self._proc.stdin.close()
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
            if self._timed is not None:  # its trailer goes nowhere: ffmpeg is gone
                with contextlib.suppress(Exception):
                    self._timed.close()
                self._timed = None
            if self._proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    self._proc.stdin.close()
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


def encode_error(what: str, log: str, out_path: Path) -> VideoEncodeError:
    low = log.lower()
    # What ffmpeg says when the muxer refuses a codec (wording varies across versions).
    if any(s in low for s in ("not currently supported in container", "could not find tag for codec",
                              "codec not supported", "could not write header")):
        return StreamCopyError(f"{what}: the {out_path.suffix} container cannot hold these streams: "
                               f"{error_tail(log, 1)}", hint="write a .mkv output, which holds every codec")
    return VideoEncodeError(f"{what}: {error_tail(log) or 'no message from ffmpeg'}",
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
