"""Upscale one video: decode, infer and encode overlapping in three threads, in resumable segments.

The pipeline layer for videos (pipeline.py does images): a reader thread decodes frames from an
ffmpeg pipe into a bounded queue, the calling thread upscales them in batches, and a writer thread
encodes them into segments of a few seconds each through a second ffmpeg pipe. Bounded queues keep
memory flat whatever the length. Finished segments live in a hidden folder beside the target; when
all are done they are joined losslessly with the source's audio and subtitles and the result is
renamed onto the target, after checking that it holds every frame for the source's duration. The
target is locked for the whole run, so a second run on it is refused rather than sharing (and
deleting) the parts folder. An interrupted run leaves its finished segments, and ``--resume`` carries
on from the first missing one; because segment boundaries do not depend on where a run stopped,
a resumed run produces the same frames as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import fs
from ..engine import Engine, EnginePool
from ..errors import LightsrError, OutputError, VideoEncodeError
from ..media import images, video
from ..progress import Reporter
from .dedup import DedupCounts, DedupSettings, FrameBatch, batches_with_reuse, expand_reuse
from .images import OutputSettings
from .jobs import Job
from .pixels import upscale_rgb
from .sequences import FrameSequenceOutput, is_frame_pattern, reader_for, resumable, resume_refused, size_change_note
from .video_plan import ReplicaFacts, plan_video

_END = object()  # end-of-stream marker in the queues
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class VideoSettings:
    encode: video.VideoEncodeSettings = video.VideoEncodeSettings()
    segment_seconds: float = 10.0
    """Resume granularity: frames are encoded in segments of about this length."""
    resume: bool = False
    dedup: DedupSettings = DedupSettings()
    sequence_rate: Fraction | None = None
    """--fps: the frame rate of a frame-sequence source (None: its sidecar's, else 24000/1001)."""
    deinterlace: bool = False
    """--deinterlace: decode video files through bwdif (one progressive frame per frame)."""


@dataclass(frozen=True)
class VideoResult:
    frames: int
    megapixels_in: float
    megapixels_out: float
    decode_seconds: float
    inference_seconds: float
    encode_seconds: float
    wall_seconds: float
    resumed_from_frame: int
    frames_upscaled: int
    """Frames that went through the network; the others (frames - frames_upscaled) were reused by --dedup."""


# -- the parts folder ------------------------------------------------------------------------------

class PartsFolder:
    """Finished segments of one output, beside it: ``.<name>.lightsr-parts/``."""

    def __init__(self, target: Path, plan: dict) -> None:
        self.folder = target.with_name(f".{target.name}.lightsr-parts")
        self.plan = json.loads(json.dumps(plan))  # as it reads back from plan.json (tuples become lists)
        self.suffix = target.suffix

    def segment(self, index: int) -> Path:
        return self.folder / f"segment_{index:05d}{self.suffix}"

    def _partial(self, index: int) -> Path:
        return self.folder / f"segment_{index:05d}.partial{self.suffix}"

    def joined(self) -> Path:
        return self.folder / f"joined{self.suffix}"

    def start(self, resume: bool) -> int:
        """Prepare the folder; returns how many leading segments are already finished.

        Resuming adopts the first run's tile (``plan["tile"]``): it came from the free memory of
        that run, and the rest of the video must be cut the same way.
        """
        manifest = self.folder / "plan.json"
        if resume and manifest.is_file():
            try:
                old_plan = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old_plan = None
            if not resumable(old_plan, self.plan):
                raise resume_refused(self.folder.name, old_plan, self.plan,
                                     "run without {--resume} to start over (the old segments are replaced)")
            self.plan["tile"] = old_plan["tile"]
            finished = 0
            while self.segment(finished).is_file():
                finished += 1
            return finished
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True)
            manifest.write_text(json.dumps(self.plan, indent=1))
        except OSError as error:
            raise OutputError(f"cannot write beside {self.folder.parent}: {error.strerror or error}") from None
        return 0

    def write_segment(self, index: int, frames, frame_rate, options, source, timing=None) -> float:
        """Encode frames into segment ``index`` (temp name, renamed when complete); returns encode seconds.

        ``timing``: (pts, time base, end) of a variable-rate segment's frames (video.segment_timing).
        """
        partial = self._partial(index)
        seconds = 0.0
        timestamps, time_base, end = timing or (None, None, None)
        with video.FrameWriter(partial, frame_rate, options=options, source=source, copy_streams=False,
                               timestamps=timestamps, time_base=time_base, end=end) as writer:
            for frame in frames:
                started = time.perf_counter()
                writer.write(frame)
                seconds += time.perf_counter() - started
        os.replace(partial, self.segment(index))
        return seconds

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def replica_facts(pool: EnginePool, info: video.VideoInfo) -> ReplicaFacts:
    """What the resume plan of a local run records about its engines for a video of ``info``'s size."""
    engine = pool.primary
    return ReplicaFacts(model=pool.model_id, scale=engine.scale, precision=engine.precision, tta=engine.tta,
                        autotune=engine.autotune, tile=engine.tile_for(info.height, info.width),
                        devices=tuple(e.device_description for e in pool.engines),
                        engine=hashlib.sha256(f"{engine.spec.name}{engine.tile}".encode()).hexdigest()[:12])


# -- threads ---------------------------------------------------------------------------------------

def _put(channel: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop (a full queue must not block a thread forever)."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(channel: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            continue
    return _END


class _Worker(threading.Thread):
    """A thread whose exception is kept for the main thread to re-raise."""

    def __init__(self, name: str, body, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._body = body
        self._stop_event = stop
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        try:
            self.seconds = self._body()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
            self._stop_event.set()


def _read_frames(info: video.VideoInfo, start_frame: int, frames: queue.Queue, stop: threading.Event,
                 notes: list[str]) -> float:
    seconds = 0.0
    reader = reader_for(info, start_frame)
    with reader:
        iterator = iter(reader)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                frame = next(iterator)
            except StopIteration:
                break
            seconds += time.perf_counter() - started
            if not _put(frames, frame, stop):
                break
    if note := size_change_note(info, reader):
        notes.append(note)
    _put(frames, _END, stop)
    return seconds


def _write_segments(parts: PartsFolder, first_segment: int, per_segment: int, total: int, info: video.VideoInfo,
                    options: video.VideoEncodeSettings, results: queue.Queue, stop: threading.Event, progress) -> float:
    seconds = 0.0
    for index in range(first_segment, math.ceil(total / per_segment)):
        count = len(video.segment_frame_range(index, per_segment, total))

        def frames_of_segment(count: int = count):  # consumed before the loop moves on
            for _ in range(count):
                frame = _get(results, stop)
                if frame is _END:
                    raise LightsrError("the video pipeline stopped before the segment was complete")
                yield frame
                progress.advance()

        timing = video.segment_timing(info, video.segment_frame_range(index, per_segment, total))
        seconds += parts.write_segment(index, frames_of_segment(), info.frame_rate, options, info, timing)
    return seconds


# -- one job ---------------------------------------------------------------------------------------

def run_video_job(pool: EnginePool, job: Job, output: OutputSettings, settings: VideoSettings,
                  reporter: Reporter) -> VideoResult:
    """Upscale one video into ``job.target``: decode, upscale and encode in three overlapping stages.

    The target is locked for the whole job: a second run on it fails with TargetBusyError.
    """
    with fs.TargetLock(job.target):
        if not output.overwrite and job.target.exists():
            raise fs.output_exists_error(job.target)
        return _upscale_video(pool, job, output, settings, reporter)


def check_joined(joined: Path, info: video.VideoInfo, target: Path) -> None:
    """The joined file must hold every frame of the source at its rate, or it never reaches the target."""
    result = video.probe_video(joined)
    timing = video.timing_problem(info, result, target.suffix)
    if timing is not None:
        joined.unlink(missing_ok=True)
        raise VideoEncodeError(f"the joined video for {target.name} does not keep the source's timing: {timing}; "
                               "nothing was written to the target", hint="run again without {--resume}")
    same_rate = result.frame_rate == info.frame_rate or not info.constant_rate
    if result.frame_count != info.frame_count or not same_rate:
        joined.unlink(missing_ok=True)
        raise VideoEncodeError(f"the joined video for {target.name} has {result.frame_count} frames at "
                               f"{result.frame_rate} fps, the source {info.frame_count} at {info.frame_rate} fps; "
                               "nothing was written to the target",
                               hint="run again without {--resume}")


def _upscale_video(pool: EnginePool, job: Job, output: OutputSettings, settings: VideoSettings,
                   reporter: Reporter) -> VideoResult:
    started = time.perf_counter()
    engine = pool.primary  # every engine of the pool has the same settings
    planned = plan_video(job, output, settings, engine.scale, lambda info: replica_facts(pool, info))
    for note in planned.notes:
        reporter.note(note)
    info, written, options, per_segment, plan = (planned.info, planned.written, planned.encode, planned.per_segment,
                                                 planned.resume)
    out_w, out_h = planned.size
    parts: PartsFolder | FrameSequenceOutput
    if is_frame_pattern(job.target):  # -o 'out/%06d.png': one image per frame (sequences.py)
        parts = FrameSequenceOutput(job.target, info, plan, output.overwrite)
        start_frame = parts.start(settings.resume, per_segment if settings.dedup.mode == "near" else 1)
    else:
        parts = PartsFolder(job.target, plan)
        first_segment = parts.start(settings.resume)
        start_frame = min(first_segment * per_segment, info.frame_count)
    for each in pool.engines:  # every frame, on every device, cut the same way
        each.use_tile(info.height, info.width, parts.plan["tile"])
    if start_frame:
        reporter.note(f"resuming {job.source.name} at frame {start_frame} of {info.frame_count}")
    frames_queue: queue.Queue = queue.Queue(maxsize=2 * engine.batch * len(pool) + 2)
    results_queue: queue.Queue = queue.Queue(maxsize=2 * engine.batch * len(pool) + 2)
    stop = threading.Event()
    progress = reporter.task(f"{job.source.name}", total=info.frame_count, unit="frame")
    progress.advance(start_frame)
    decode_notes: list[str] = []
    reader = _Worker("lightsr-decode", lambda: _read_frames(info, start_frame, frames_queue, stop, decode_notes), stop)
    if isinstance(parts, FrameSequenceOutput):
        writer = _Worker("lightsr-write", lambda: parts.write_frames(_queued_frames(results_queue, stop), progress),
                         stop)
    else:
        writer = _Worker("lightsr-encode", lambda: _write_segments(
            parts, first_segment, per_segment, info.frame_count, written, options, results_queue, stop, progress), stop)
    inference_seconds = 0.0
    counts = DedupCounts()
    try:
        reader.start()
        writer.start()
        batches = batches_with_reuse(_queued_frames(frames_queue, stop), engine.batch, settings.dedup, start_frame,
                                     per_segment, counts)
        inference_seconds = _upscale_stream(pool, batches, results_queue, stop, (out_w, out_h))
        writer.join()
        reader.join()
        for note in decode_notes:
            reporter.note(note)
        for worker in (reader, writer):
            if worker.error is not None:
                raise worker.error
        if isinstance(parts, FrameSequenceOutput):
            parts.finish()
        else:
            join_segments(parts, info, written, per_segment, job.target, output.overwrite)
    except LightsrError as error:
        stop.set()
        reader.join(timeout=10)
        writer.join(timeout=10)
        say_where_the_parts_are(error, parts)
        raise
    except BaseException:
        stop.set()
        reader.join(timeout=10)
        writer.join(timeout=10)
        raise
    finally:
        progress.close()
    frames = info.frame_count - start_frame
    return VideoResult(
        frames=frames, megapixels_in=frames * info.width * info.height / 1e6,
        megapixels_out=frames * out_w * out_h / 1e6, decode_seconds=reader.seconds,
        inference_seconds=inference_seconds, encode_seconds=writer.seconds,
        wall_seconds=time.perf_counter() - started, resumed_from_frame=start_frame, frames_upscaled=counts.upscaled)


def join_segments(parts: PartsFolder, info: video.VideoInfo, written: video.VideoInfo, per_segment: int,
                   target: Path, overwrite: bool) -> None:
    """All segments into one checked file, with the source's other streams, renamed onto the target.
    ``written`` is ``info`` as the output carries it (square samples after a target size)."""
    joined = parts.joined()
    video.concat_segments([parts.segment(i) for i in range(math.ceil(info.frame_count / per_segment))],
                          written, joined, frames_per_segment=per_segment,
                          copy_streams=info.path.is_file())  # a frame sequence has no other streams
    check_joined(joined, info, target)
    fs.place_file(joined, target, overwrite=overwrite)
    parts.remove()


def say_where_the_parts_are(error: LightsrError, parts: PartsFolder | FrameSequenceOutput) -> None:
    """Extend the error's hint by where the finished segments are (or that none were kept)."""
    if isinstance(parts, FrameSequenceOutput):
        where = parts.kept()
        error.hint_template = f"{error.hint_template}; {where}" if error.hint_template else where
        return
    finished = sorted(parts.folder.glob("segment_?????" + parts.suffix)) if parts.folder.is_dir() else []
    if finished:
        where = (f"{len(finished)} finished segment(s) are kept in {parts.folder}; after fixing the cause, "
                 "{--resume} carries on from them")
    else:
        state = "holds none" if parts.folder.is_dir() else "is gone"
        where = f"no finished segments were kept ({parts.folder} {state})"
    error.hint_template = f"{error.hint_template}; {where}" if error.hint_template else where


def _queued_frames(frames_queue: queue.Queue, stop: threading.Event):
    """Decoded frames from the reader thread, until the end of the stream (or a stop)."""
    while (frame := _get(frames_queue, stop)) is not _END:
        yield frame


def _upscale_stream(pool: EnginePool, batches, results_queue: queue.Queue,
                    stop: threading.Event, size: tuple[int, int]) -> float:
    """The calling thread's part: batches of frames through the engines into the results queue, in order.

    Returns the inference seconds: the time the devices spent upscaling, divided by the number of
    devices (they work side by side), so frames / seconds is the model-only frame rate.
    """
    busy: list[float] = []
    for result in upscaled_frames(pool, batches, size, busy):
        if not _put(results_queue, result, stop):
            return sum(busy) / len(pool)
    _put(results_queue, _END, stop)
    return sum(busy) / len(pool)


def upscaled_frames(pool: EnginePool, batches: Iterable[FrameBatch], size: tuple[int, int],
                    busy: list[float]) -> Iterator[np.ndarray]:
    """Output frames of ``size`` from batches (batches_with_reuse), in order, through the pool's engines;
    --dedup's repeats are filled in from the previous upscaled frame (dedup.py). The seconds each
    batch kept a device busy are appended to ``busy``. The cluster's workers use it too."""

    def upscale_batch(engine: Engine, batch: FrameBatch) -> tuple[FrameBatch, list[np.ndarray]]:
        started = time.perf_counter()
        results = list(upscale_rgb(engine, np.stack(batch.frames)))
        if results and (results[0].shape[1], results[0].shape[0]) != size:  # --outscale or a target size
            results = [images.resize(frame, *size) for frame in results]
        busy.append(time.perf_counter() - started)
        return batch, results

    return expand_reuse(pool.map_ordered(upscale_batch, batches))
