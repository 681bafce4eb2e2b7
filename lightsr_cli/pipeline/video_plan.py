"""What a video job will do, decided once before any frame is decoded: one plan for local and cluster runs.

:func:`plan_video` opens the source (a video file or a frame sequence), checks its size against
the limits, fixes the output size (``--outscale`` or ``--fit/--fill/--width/--height``), the
encoder settings, the resume segments and the resume plan, and collects the notes and warnings
the job says. The local pipeline (video.py) and the cluster driver both call it, so a video run
on a cluster decides exactly what a local run decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from ..media import video
from ..media.video.sequences import SequenceInfo
from .images import OutputSettings
from .jobs import Job
from .limits import check_input, check_output, output_size
from .sequences import is_frame_pattern, open_source, sequence_notes, source_identity
from .sizing import chroma_subsampled, final_size

if TYPE_CHECKING:
    from .video import VideoSettings


@dataclass(frozen=True)
class ReplicaFacts:
    """What the resume plan records about the network that computes the frames.

    The devices are named with their hardware (another GPU model or the CPU computes other
    rounding), and the tile is the one actually used for this video, not the one asked for.
    """

    model: str
    scale: int
    precision: str
    tta: bool
    autotune: bool
    tile: int | None
    devices: tuple[str, ...]
    engine: str | None = None
    """Local runs: a digest of the engine's network and asked tile."""
    cluster: bool = False


@dataclass(frozen=True)
class VideoPlan:
    info: video.VideoInfo
    """The source as opened (a SequenceInfo for a frame sequence)."""
    size: tuple[int, int]
    """Output frame width, height."""
    written: video.VideoInfo
    """``info`` as the output carries it (square samples after a target size)."""
    encode: video.VideoEncodeSettings
    """The encoder settings for this output size (4:4:4 for odd sizes unless a pix_fmt was chosen)."""
    per_segment: int
    resume: dict
    """Everything that must match for finished segments (or frames) to be reused by --resume."""
    notes: tuple[str, ...]
    """Notes and warnings for the user, each starting with "note:" or "warning:"."""


def even_safe_encode(options: video.VideoEncodeSettings, width: int, height: int, bit_depth: int) -> video.VideoEncodeSettings:
    """4:2:0 needs even sizes: an odd output size gets 4:4:4 unless the user chose a pixel format."""
    if options.pix_fmt or (width % 2 == 0 and height % 2 == 0):
        return options
    default = video.default_pix_fmt(options.codec, bit_depth)
    wanted = default.replace("420", "444")
    if wanted in video.encoder_pix_fmts(options.codec):
        return dataclasses.replace(options, pix_fmt=wanted)
    return options


def plan_video(job: Job, output: OutputSettings, settings: VideoSettings, scale: int,
               replicas: Callable[[video.VideoInfo], ReplicaFacts]) -> VideoPlan:
    """Open ``job.source`` and decide everything about the job; raises a LightsrError when it cannot run.

    ``replicas`` says what computes the frames of this
    source (its tile depends on the frame size).
    """
    info = open_source(job.source, settings.sequence_rate)
    notes = sequence_notes(info, job.target)
    if settings.deinterlace and not isinstance(info, SequenceInfo):
        info = dataclasses.replace(info, read_deinterlaced=True)
    elif settings.deinterlace:  # image files say nothing of fields or their order: bwdif would have to guess
        notes.append(f"note: --deinterlace applies to video files; the frames of {info.path} are image files, "
                     "which record no field order, so they are upscaled as they are (deinterlace them where "
                     "they are exported, or pass a video file)")
    outscale = output.outscale
    out_w, out_h = output_size(info.width, info.height, scale, outscale)
    if outscale and outscale != scale:
        out_w, out_h = max(2, out_w), max(2, out_h)
    written = info
    if output.target is not None:  # display pixels in, square samples out (sizing.py)
        out_w, out_h = final_size(output.target, info.width, info.height, info.sample_aspect_ratio,
                                  even=chroma_subsampled(settings.encode.pix_fmt))
        written = dataclasses.replace(info, sample_aspect_ratio=Fraction(1)) if info.sample_aspect_ratio else info
    check_input(f"each frame of {job.source.name}", info.width, info.height, output.limits)
    check_output(f"each frame of {job.source.name}", info.width, info.height, scale, outscale, output.limits,
                 (out_w, out_h) if output.target else None)
    encode = even_safe_encode(settings.encode, out_w, out_h, info.bit_depth)
    video.check_encoder(encode.codec)
    warnings = video.timing_warnings(info, job.target) + video.hdr_warnings(encode.codec, info.hdr)
    notes += [f"warning: {warning}" for warning in warnings]
    notes += _picture_notes(info, settings.encode, encode)
    if not is_frame_pattern(job.target):  # frames out: no stream of the source goes with them
        notes += video.data_stream_notes(info.other_streams, job.target, job.source.name)
    per_segment = max(1, round(settings.segment_seconds * info.frame_rate))
    resume = _resume_plan(job, info, settings, outscale, per_segment, replicas(info))
    if output.target is not None and not is_frame_pattern(job.target):
        resume["size"] = [out_w, out_h]
    return VideoPlan(info, (out_w, out_h), written, encode, per_segment, resume, tuple(notes))


def _picture_notes(info: video.VideoInfo, asked: video.VideoEncodeSettings,
                   encode: video.VideoEncodeSettings) -> list[str]:
    """What the frames lose on the way that the user did not ask for: interlacing, colour resolution."""
    notes = []
    if info.interlaced and not info.read_deinterlaced:
        notes.append(f"warning: {info.path.name} is interlaced ({info.field_order}): both fields of a frame are "
                     "upscaled together, which enlarges the combing; pass --deinterlace")
    elif info.read_deinterlaced and not info.interlaced:
        notes.append(f"note: {info.path.name} is not flagged interlaced ({info.field_order or 'no field order'}); "
                     "deinterlaced anyway, as --deinterlace asks")
    # Frames from image files are RGB by nature: a video of them is 4:2:0 as expected, not worth a note.
    if not asked.pix_fmt and not isinstance(info, SequenceInfo):
        written = encode.pix_fmt or video.default_pix_fmt(encode.codec, info.bit_depth)
        note = video.subsampling_note(info.path.name, info.pix_fmt, encode.codec, written)
        notes += [note] if note else []
    return notes


def _resume_plan(job: Job, info: video.VideoInfo, settings: VideoSettings, outscale: float | None, per_segment: int,
                 replicas: ReplicaFacts) -> dict:
    return {
        **source_identity(job.source, info), "frames": info.frame_count, "frames_per_segment": per_segment,
        "model": replicas.model, "scale": replicas.scale, "outscale": outscale, "precision": replicas.precision,
        "tta": replicas.tta, "encode": asdict(settings.encode),
        **({"engine": replicas.engine} if replicas.engine is not None else {}),
        **({"cluster": True} if replicas.cluster else {}),
        "devices": list(replicas.devices), "autotune": replicas.autotune, "tile": replicas.tile,
        **({"dedup": settings.dedup.describe()} if settings.dedup.mode == "near" else {}),  # exact: same frames
        **({"deinterlace": "bwdif"} if info.read_deinterlaced else {}),
    }
