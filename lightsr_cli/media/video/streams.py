"""Stream-copy rules: which of the source's audio, subtitle, attachment and data streams go into an output, and how.

Everything is copied unchanged, except text subtitles where the output container demands another
text format (mov_text in mp4/mov, WebVTT in webm, no mov_text in matroska). A stream the container
cannot hold at all is refused with StreamCopyError before any encoding starts. Data streams are copied
where they are known to survive (GoPro telemetry and camera motion into mp4/mov); any other is named in
a note (:func:`data_stream_notes`), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import StreamCopyError
from .probe import StreamInfo

# Subtitle codecs that are text, so they can be converted to the text format a container takes.
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}

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


# Data tracks copied into mp4/mov (the only containers that hold data tracks), by fourcc. Others are not: a
# muxer that refuses a track fails the whole job at the join, after every frame was upscaled.
COPIED_DATA_TRACKS = {"gpmd": "GoPro telemetry (GPS, gyroscope, accelerometer)",
                      "camm": "camera motion metadata"}
_DATA_CONTAINERS = {".mp4", ".mov"}  # not .m4v: ffmpeg's ipod muxer, which writes it, refuses data tracks
# Data tracks written anew rather than copied: the start timecode (timecode_args) and mp4 chapters (kept as
# chapters by -map_chapters).
_DATA_TRACKS_REWRITTEN = {"tmcd", "text"}


def _copies_data(stream: StreamInfo, suffix: str) -> bool:
    return stream.kind == "data" and stream.tag in COPIED_DATA_TRACKS and suffix in _DATA_CONTAINERS


def data_stream_notes(streams: Sequence[StreamInfo], out_path: Path, source_name: str) -> list[str]:
    """What the output will lack of the source's data streams, one note each (empty where nothing is lost)."""
    suffix = out_path.suffix.lower()
    notes = []
    for stream in streams:
        if stream.kind != "data" or stream.tag in _DATA_TRACKS_REWRITTEN or _copies_data(stream, suffix):
            continue
        what = f"data stream #{stream.index} ({stream.tag or stream.codec})"
        if stream.tag in COPIED_DATA_TRACKS:
            notes.append(f"note: {source_name}'s {what}, {COPIED_DATA_TRACKS[stream.tag]}, cannot be written to "
                         f"{suffix or 'this output'}: write .mp4 or .mov to keep it")
        else:
            notes.append(f"note: {source_name}'s {what} is not copied: lightsr copies "
                         f"{', '.join(sorted(COPIED_DATA_TRACKS))} data tracks only (into .mp4 or .mov)")
    return notes


def stream_copy_args(streams: Sequence[StreamInfo], out_path: Path, first_output_index: int) -> list[str]:
    """Maps and codecs for the source's audio, subtitle and attachment streams (source = input 1).

    Everything is copied unchanged, with one exception made only where the container demands it:
    mp4/mov hold text subtitles only as mov_text, webm only as WebVTT and matroska has no mov_text,
    so text subtitles are converted then (ASS styling does not survive mov_text). Bitmap subtitles
    cannot be converted: StreamCopyError, before any encoding, with a hint to write .mkv. Audio is
    always copied; a container that refuses it (AAC in webm) fails in ffmpeg and becomes a
    StreamCopyError too. Data streams are copied with their fourcc where :data:`COPIED_DATA_TRACKS` says
    (mp4/mov only); other data streams and cover art are not; a timecode track is written anew from the
    source's start timecode (:func:`timecode_args`).
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
        elif _copies_data(stream, suffix):
            args += ["-map", f"1:{stream.index}", f"-c:{out_index}", "copy", f"-tag:{out_index}", str(stream.tag)]
            out_index += 1
            continue
        else:
            continue
        args += ["-map", f"1:{stream.index}", f"-c:{out_index}", codec]
        out_index += 1
    return args


def timecode_args(source_timecode: str | None) -> list[str]:
    """The source's start timecode for the output: mov/mp4 muxers write it as a timecode (tmcd) track,
    matroska as a TIMECODE tag. A data stream cannot be stream-copied into another container, so the
    track is made anew rather than copied; editors conform footage by it."""
    return ["-timecode", source_timecode] if source_timecode else []
