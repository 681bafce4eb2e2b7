"""Video in and out through the ffmpeg binary that imageio-ffmpeg ships: numpy frames only, no torch.

Why drive ffmpeg directly instead of imageio's reader/writer: we need an exact rational frame rate,
frame sizes that are not multiples of 16 (imageio resizes to its macro_block_size), >8-bit frames,
rotation and colour tags carried over, and the source's audio/subtitle streams muxed in unchanged.

Conventions: frames are HxWx3 RGB, ``uint8`` for 8-bit sources and ``uint16`` (full 0..65535 scale,
as ffmpeg's ``rgb48le``) for deeper sources. Width/height are the coded size: pixels are never rotated;
the display rotation is carried as metadata from source to output instead.

Modules: :mod:`.ffmpeg` (the binary, pixel formats, log reading), :mod:`.probe` (what a file holds),
:mod:`.reader` (decoding), :mod:`.writer` (encoding) with :mod:`.streams` (which streams are copied),
:mod:`.encoders` (which encoders exist and start, their options), :mod:`.timeline` (each frame's time)
with :mod:`.timed_pipe` (frames sent with their times), :mod:`.hdr` (HDR10 side data),
and :mod:`.segments` (resume segments, joining them, checking the timing). Errors live in :mod:`lightsr_cli.errors`.
"""

from __future__ import annotations

from .encoders import check_encoder, is_hardware, usual_encoders, video_encoders
from .ffmpeg import default_pix_fmt, encoder_pix_fmts, ffmpeg_exe, pix_fmt_bit_depth, subsampling_note
from .hdr import HdrMetadata, hdr_warnings
from .probe import (
    READ_ONLY_VIDEO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    WRITTEN_VIDEO_EXTENSIONS,
    ColourTags,
    StreamInfo,
    VideoInfo,
    count_frames,
    is_video_path,
    probe_video,
)
from .reader import FrameReader
from .segments import concat_segments, segment_frame_range, segment_timing, timing_problem, timing_warnings
from .streams import data_stream_notes
from .timeline import Timeline
from .writer import FrameWriter, VideoEncodeSettings

__all__ = [
    "VIDEO_EXTENSIONS",
    "READ_ONLY_VIDEO_EXTENSIONS",
    "WRITTEN_VIDEO_EXTENSIONS",
    "ColourTags",
    "FrameReader",
    "FrameWriter",
    "HdrMetadata",
    "StreamInfo",
    "Timeline",
    "VideoEncodeSettings",
    "VideoInfo",
    "check_encoder",
    "concat_segments",
    "count_frames",
    "data_stream_notes",
    "default_pix_fmt",
    "encoder_pix_fmts",
    "hdr_warnings",
    "ffmpeg_exe",
    "is_hardware",
    "is_video_path",
    "pix_fmt_bit_depth",
    "probe_video",
    "segment_frame_range",
    "segment_timing",
    "timing_problem",
    "timing_warnings",
    "subsampling_note",
    "usual_encoders",
    "video_encoders",
]
