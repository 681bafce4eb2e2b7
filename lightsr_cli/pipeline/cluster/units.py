"""The values that travel between the driver and the cluster's workers: settings, units of work, outcomes.

A unit is one image file or one segment of a video (the frames ``segment_frame_range`` gives, as
the local resume segments). Units carry everything a worker needs except bytes, which travel
beside them through Ray's object store; outcomes carry the result's bytes (or None when the
worker wrote the target itself on shared storage) and the failure, if any, as plain data so that
any LightsrError survives the trip with its message and hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ... import errors
from ...media.video import VideoEncodeSettings, VideoInfo
from ..dedup import DedupSettings
from ..jobs import Job


class FileAccess(str, Enum):
    """How workers get inputs and deliver outputs."""

    AUTO = "auto"
    """Shared when every worker sees the driver's input and output paths, else transfer."""
    SHARED = "shared"
    """Workers read inputs and write outputs (temp file + rename) at the driver's paths."""
    TRANSFER = "transfer"
    """Input bytes go to workers and results come back through the object store; the driver writes."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how wide a cluster run goes."""

    address: str | None = None
    """None: start (or join, when RAY_ADDRESS is set) a Ray instance on this machine; "auto": join
    the cluster RAY_ADDRESS names or one running here; "ray://host:10001": Ray Client."""
    gpus_per_worker: float = 1.0
    """GPUs per model replica on GPU nodes (0: use CPU workers everywhere)."""
    cpus_per_worker: float | None = None
    """CPUs per model replica on CPU-only nodes; None: one replica per node with all its CPUs."""
    units_in_flight: int = 2
    """At most this many units sent to one worker and not yet back (backpressure)."""
    files: FileAccess = FileAccess.AUTO
    attempts: int = 3
    """A unit whose worker dies is sent again, at most this many times in all."""


@dataclass(frozen=True)
class ImageUnit:
    job: Job
    shared: bool


@dataclass(frozen=True)
class SegmentUnit:
    """One resume segment of a video job, as the local pipeline would compute it (video_plan.VideoPlan)."""

    job: Job
    info: VideoInfo
    """As opened on the driver (its paths are the driver's; a SequenceInfo for a frame sequence)."""
    written: VideoInfo
    """``info`` as the output carries it (square samples after a target size)."""
    index: int
    frames: range
    per_segment: int
    """Frames per resume segment: --dedup starts afresh at each segment's first frame."""
    tile: int
    size: tuple[int, int]
    """Output frame width, height (--outscale, --fit/--fill/--width/--height)."""
    encode: VideoEncodeSettings
    dedup: DedupSettings
    parts_folder: Path | None
    """Shared storage: the target's parts folder, written by the worker; None: bytes come back."""


@dataclass(frozen=True)
class UnitFailure:
    """A LightsrError as data: the class name, the message and hint templates."""

    kind: str
    template: str
    hint_template: str | None

    @staticmethod
    def of(error: errors.LightsrError) -> UnitFailure:
        return UnitFailure(type(error).__name__, error.template, error.hint_template)

    def error(self) -> errors.LightsrError:
        kind = getattr(errors, self.kind, errors.LightsrError)
        if not (isinstance(kind, type) and issubclass(kind, errors.LightsrError)):
            kind = errors.LightsrError
        try:
            return kind(self.template, self.hint_template)
        except TypeError:  # a subclass with another signature
            return errors.LightsrError(self.template, self.hint_template)


def lightsr_version() -> str:
    """The installed lightsr's version (workers must run the driver's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightsr")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@dataclass(frozen=True)
class WorkerFacts:
    """What a worker says about itself when it starts (for the summary, the plan and checks)."""

    node_id: str
    host: str
    version: str
    device: str
    device_description: str
    precision: str
    batch: int
    tta: bool
    tile: int | None
    autotune: bool
    notes: tuple[str, ...]
    backend: str = "torch"


@dataclass(frozen=True)
class UnitOutcome:
    node_id: str
    host: str
    seconds: float
    """Time the worker spent on the unit (reading, upscaling, encoding)."""
    megapixels_in: float = 0.0
    megapixels_out: float = 0.0
    data: bytes | None = None
    failure: UnitFailure | None = None
    notes: tuple[str, ...] = ()
    fp32_fallbacks: int = 0
    frames_upscaled: int = 0
    """Segments: the frames that went through the network (the others were reused by --dedup)."""
