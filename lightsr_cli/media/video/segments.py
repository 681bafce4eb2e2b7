"""Resume segments: which frames segment k holds, and joining finished segments into one output losslessly."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ...errors import VideoNotFoundError
from .ffmpeg import run_ffmpeg
from .probe import VideoInfo, as_video_info
from .streams import stream_copy_args
from .writer import MP4_FAMILY, encode_error


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
    info = as_video_info(source)
    out = Path(out_path)
    segments = [Path(p) for p in segment_paths]
    if not segments:
        raise ValueError("concat_segments needs at least one segment")
    missing = [p for p in segments if not p.is_file()]
    if missing:
        raise VideoNotFoundError(f"missing resume segment {missing[0]}", hint="start over without {--resume}")
    copy_args = stream_copy_args(info.other_streams, out, 1) if copy_streams else []
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
        if out.suffix.lower() in MP4_FAMILY:
            args += ["-movflags", "+faststart"]
        result = run_ffmpeg([*args, str(out)])
        if result.returncode != 0:
            out.unlink(missing_ok=True)
            raise encode_error(f"joining {len(segments)} segments into {out.name} failed",
                                result.stderr.decode("utf-8", "replace"), out)
    finally:
        os.unlink(listing.name)
