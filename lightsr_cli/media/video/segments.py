"""Resume segments: which frames segment k holds, and joining finished segments into one output losslessly."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from ...errors import VideoError, VideoNotFoundError
from .ffmpeg import run_ffmpeg
from .probe import VideoInfo, as_video_info
from .streams import stream_copy_args, timecode_args
from .timeline import concat_durations
from .writer import MP4_FAMILY, encode_error


def segment_frame_range(segment: int, frames_per_segment: int, total_frames: int) -> range:
    """Frame indices of resume segment k: [k*N, min((k+1)*N, total))."""
    start = segment * frames_per_segment
    return range(start, min(start + frames_per_segment, total_frames))


def _concat_list_line(path: Path) -> str:
    # concat demuxer syntax: single-quoted, a quote written as '\'' (shell style).
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def segment_starts(info: VideoInfo, frames_per_segment: int, segments: int) -> list[Fraction]:
    """Seconds at which each segment's first frame is shown in the source."""
    return [info.frame_time(min(k * frames_per_segment, info.frame_count)) for k in range(segments)]


def concat_segments(segment_paths: Sequence[str | os.PathLike[str]], source: VideoInfo | str | os.PathLike[str],
                    out_path: str | os.PathLike[str], *, copy_streams: bool = True,
                    frames_per_segment: int | None = None) -> None:
    """Join video-only segments losslessly (concat demuxer, -c copy) and mux the source's other streams.

    Segments must share codec and parameters, as FrameWriter(copy_streams=False) with the same options
    produces them, and should use the output's container (the same timestamp precision: .mkv
    segments for .mkv, .mp4 for .mp4). The rotation is set again on the joined stream, since the
    concat demuxer does not promise to carry per-file side data. The partial output is removed on error.

    Timing: each segment starts at 0. With ``frames_per_segment``, the list gives the concat demuxer
    every segment's exact length (``duration``, from the source's frame times) so segment k+1 starts
    where its first frame starts in the source, whatever the last frame's guessed duration in the part
    before; and ``-itsoffset`` puts the video's start offset from the source back (audio that starts
    before the video stays that much ahead).
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
        durations = (concat_durations(segment_starts(info, frames_per_segment, len(segments)))
                     if frames_per_segment else [])
        for index, segment in enumerate(segments):
            listing.write(_concat_list_line(segment))
            if index < len(durations):
                listing.write(f"duration {durations[index]}us\n")
    try:
        args = ["-v", "error", "-y", "-f", "concat", "-safe", "0"]
        if info.rotation:
            args += ["-display_rotation", str(info.rotation)]
        offset = info.timeline.offset if info.timeline is not None else Fraction(0)
        if round(offset * 1_000_000):
            args += ["-itsoffset", f"{round(offset * 1_000_000)}us"]
        args += ["-i", listing.name]
        if copy_streams:
            args += ["-i", str(info.path), "-map_metadata", "1", "-map_chapters", "1", *timecode_args(info.timecode)]
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


def segment_timing(info: VideoInfo, frames: range) -> tuple[tuple[int, ...], Fraction, int] | None:
    """(pts from 0, time base, end) of a segment's frames for a variable-rate source; None on a constant rate."""
    if info.constant_rate or info.timeline is None:
        return None
    timeline = info.timeline
    base = timeline.pts[frames.start]
    end = timeline.pts[frames.stop] if frames.stop < len(timeline.pts) else timeline.end
    return timeline.relative(frames), timeline.time_base, end - base


def timing_problem(source: VideoInfo, result: VideoInfo, suffix: str) -> str | None:
    """How ``result``'s frame times differ from ``source``'s beyond the output container's precision, if they do.

    Frame k must be shown at the source's time of frame k (counted from the first frame), within one
    tick of either file or a millisecond in matroska; the whole video must last as long within one frame;
    and where only audio and subtitles come along, the video's start offset must be the source's.
    """
    if source.timeline is None or result.timeline is None or source.frame_count != result.frame_count:
        return None  # frame count is checked on its own; without timestamps nothing more can be compared
    ticks = max(source.timeline.time_base, result.timeline.time_base)
    tolerance = max(ticks, Fraction(1, 1000) if suffix.lower() in (".mkv", ".webm") else 0) + Fraction(1, 10**6)
    first = source.frame_time(0)
    for k, tick in enumerate(result.timeline.pts):
        expected = source.frame_time(k) - first
        got = (tick - result.timeline.pts[0]) * result.timeline.time_base
        if abs(got - expected) > tolerance:
            return f"frame {k} is shown at {float(got):.6f} s, in the source at {float(expected):.6f} s"
    wanted = source.frame_time(source.frame_count) - first
    if abs(result.timeline.duration - wanted) > source.timeline.longest_frame() + tolerance:
        return f"the video lasts {float(result.timeline.duration):.3f} s, in the source {float(wanted):.3f} s"
    if all(s.kind in ("audio", "subtitle") for s in source.other_streams) and \
            abs(result.timeline.offset - source.timeline.offset) > tolerance:
        return (f"the video starts {float(result.timeline.offset):.6f} s into the file, "
                f"in the source {float(source.timeline.offset):.6f} s")
    return None


def timing_warnings(info: VideoInfo, out_path: Path) -> list[str]:
    """What cannot be kept exactly about the frame times of ``info`` in ``out_path``'s container (refusals raise)."""
    if info.timeline is None:
        return [f"the frames of {info.path.name} carry no timestamps; they are placed at its nominal rate "
                f"{info.frame_rate} fps"]
    if not info.constant_rate and out_path.suffix.lower() == ".avi":
        raise VideoError(f"{info.path.name} has a variable frame rate, which .avi cannot hold",
                         hint="write .mp4, .mkv, .mov or .webm, which keep every frame's time")
    return []
