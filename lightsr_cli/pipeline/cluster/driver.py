"""The driver of a cluster run: units out to the workers with backpressure, results back, targets written.

Jobs are taken in order; an image job is one unit, a video job is cut into its resume segments
(the local :class:`PartsFolder`, so ``--resume`` and the lossless join are the local ones). At most
``units_in_flight`` units are sent to a worker and not yet back, so input bytes in the object
store stay bounded. A unit whose worker died (Ray restarts the worker) is sent again, up to
``attempts`` times; a unit that fails for its file's own reasons is reported like a local failure.
Targets are claimed with :class:`TargetLock` and written whole by the driver (or, on shared
storage, by the worker with temp file + rename); Ctrl-C kills the workers and releases every claim.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path

from ... import fs, weights
from ...errors import LightsrError, OutputExistsError, TargetBusyError, UsageError
from ...media import video as media_video
from ...progress import NullReporter, Reporter
from ...registry import ModelCard
from ..images import OutputSettings
from ..jobs import Job, MediaKind
from ..loading import EngineSettings
from ..run import NotesOnce, RunSummary
from ..sequences import is_frame_pattern, is_sequence_source
from ..video import PartsFolder, VideoResult, VideoSettings, join_segments, say_where_the_parts_are
from ..video_plan import ReplicaFacts, VideoPlan, plan_video
from .connect import Workers, connect
from .summary import ClusterPool, NodeTally, precisions_of
from .units import ClusterSettings, FileAccess, ImageUnit, SegmentUnit, UnitOutcome


@dataclass
class ClusterRunSummary(RunSummary):
    cluster: dict = field(default_factory=dict)
    """Workers, file access and per-node throughput, for the JSON summary."""


@dataclass
class _Video:
    """A video job in progress: its claim on the target, its plan, its parts folder and its segments out."""

    job: Job
    plan: VideoPlan
    parts: PartsFolder
    lock: fs.TargetLock
    first_segment: int
    progress: object
    source_ref: object = None
    left: int = 0
    failure: LightsrError | None = None
    busy_seconds: float = 0.0
    """Worker seconds spent on its segments (decode, upscale, encode)."""
    frames_upscaled: int = 0
    """Frames of its segments that went through the network (the others were reused by --dedup)."""
    started: float = field(default_factory=time.perf_counter)


@dataclass
class _Sent:
    unit: ImageUnit | SegmentUnit
    actor: int
    handle: object
    attempt: int
    lock: fs.TargetLock | None = None


def run_jobs_on_cluster(card: ModelCard, engine: EngineSettings, jobs: list[Job], output: OutputSettings,
                        video: VideoSettings, cluster: ClusterSettings, reporter: Reporter | None = None,
                        weights_path: Path | None = None) -> tuple[ClusterRunSummary, ClusterPool]:
    """Run every job on the cluster's workers; a job that fails is recorded and the others still run.

    Ray prints what its nodes report (a worker that died, ...) on stdout; during the run that goes
    to stderr, so stdout carries only data (the --json summary).
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _run_on_cluster(card, engine, jobs, output, video, cluster, reporter, weights_path)


def _run_on_cluster(card: ModelCard, engine: EngineSettings, jobs: list[Job], output: OutputSettings,
                    video: VideoSettings, cluster: ClusterSettings, reporter: Reporter | None,
                    weights_path: Path | None) -> tuple[ClusterRunSummary, ClusterPool]:
    _refuse_frame_patterns(jobs)
    reporter = NotesOnce(reporter or NullReporter())
    checkpoint = weights_path or weights.ensure_weights(card, reporter).path  # resolved and verified once, here
    ray, connected_here = connect(cluster)
    workers = None
    try:
        workers = Workers(ray, card, engine, output, checkpoint, cluster)
        shared = _shared_storage(ray, workers.actors, jobs, cluster.files)
        run = _Run(ray, workers, card, output, (video, cluster), reporter, shared)
        try:
            summary = run.all(jobs)
        except BaseException:
            run.abort()
            raise
        return summary, ClusterPool.of(workers.facts, card.id, run.fp32_fallbacks, run.resent)
    finally:
        if workers is not None:
            workers.kill_all()
        if connected_here:
            ray.shutdown()


def _refuse_frame_patterns(jobs: list[Job]) -> None:
    """A numbered-frames target (``-o 'out/%06d.png'``) is written frame by frame beside a sidecar, which
    the cluster's segment-wise driver does not do: refused before any work rather than half done."""
    for job in jobs:
        if is_frame_pattern(job.target):
            raise UsageError(f"-o {job.target} is a numbered-frames pattern, which a cluster run cannot write",
                             hint="run without {--cluster}, or give -o a video file name")


def _shared_storage(ray, actors: list, jobs: list[Job], access: FileAccess) -> bool:
    """Whether workers use the driver's paths: asked for, or (auto) every worker sees inputs and output folders."""
    if access is not FileAccess.AUTO or not jobs:
        return access is FileAccess.SHARED
    probes, made = [], []
    try:
        for folder in sorted({job.target.parent for job in jobs}):
            if not folder.is_dir():
                made.append(folder)
            probe = folder / f".lightsr-cluster-probe-{secrets.token_hex(8)}"
            fs.write_bytes(probe, secrets.token_bytes(secrets.randbelow(4096) + 1), overwrite=False)
            probes.append(probe)
        checks = [(str(p.resolve()), p.stat().st_size) for p in probes]
        checks += [_seen_as(job.source) for job in jobs]
        return all(ray.get([actor.sees.remote(checks) for actor in actors]))
    except (OSError, LightsrError):
        return False
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
        for folder in made:  # the jobs create their folders again; a failed run leaves none behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _seen_as(source: Path) -> tuple[str, int]:
    """(path, size) a worker must see for ``source``: the file, or a frame sequence's folder."""
    if is_sequence_source(source):
        source = source if source.is_dir() else source.parent
    return str(source.resolve()), source.stat().st_size


class _Run:
    def __init__(self, ray, workers: Workers, card: ModelCard, output: OutputSettings,
                 settings: tuple[VideoSettings, ClusterSettings], reporter: NotesOnce, shared: bool) -> None:
        self.ray, self.workers, self.facts = ray, workers, workers.facts
        self.actors = workers.actors  # the same list: a replaced worker's new handle shows here
        self.scale, self.model_id = card.scale, card.id
        self.output, (self.video, self.cluster), self.reporter, self.shared = output, settings, reporter, shared
        self.load = [0] * len(self.actors)
        self.queue: deque = deque()
        self.in_flight: dict = {}
        self.videos: dict[Path, _Video] = {}
        self.summary = ClusterRunSummary()
        self.tally = NodeTally(self.facts)
        self.fp32_fallbacks = 0
        self.resent = 0
        self.files = None
        for note in dict.fromkeys(n for f in self.facts for n in f.notes):
            reporter.note(f"note: {note}")

    # -- the loop --------------------------------------------------------------------------------

    def all(self, jobs: list[Job]) -> ClusterRunSummary:
        started = time.perf_counter()
        self.files = self.reporter.task("files", total=len(jobs), unit="file") if len(jobs) > 1 else None
        self.queue.extend((job, 1, None) for job in jobs)
        try:
            while self.queue or self.in_flight:
                self._send_while_room()
                if self.in_flight:
                    ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=0.5)
                    for ref in ready:
                        self._collect(ref)
        finally:
            if self.files:
                self.files.close()
            self.summary.seconds = time.perf_counter() - started
        # The local order (images, then videos), whichever finished first.
        order = {job: (job.kind is MediaKind.VIDEO, index) for index, job in enumerate(jobs)}
        self.summary.done.sort(key=order.__getitem__)
        self.summary.failed.sort(key=lambda failure: order[failure[0]])
        self.summary.cluster = self.tally.as_dict(self.summary.seconds, "shared" if self.shared else "transfer",
                                                  self.resent)
        return self.summary

    def _free_actor(self) -> int | None:
        live = [i for i, actor in enumerate(self.actors) if actor is not None]
        if not live:
            return None
        index = min(live, key=lambda i: self.load[i])
        return index if self.load[index] < self.cluster.units_in_flight else None

    def _send_while_room(self) -> None:
        while self.queue:
            actor = self._free_actor()
            if actor is None:
                if not self.in_flight and all(actor is None for actor in self.actors):
                    self._no_workers_left()
                return
            item, attempt, lock = self.queue.popleft()
            if isinstance(item, Job) and item.kind is MediaKind.VIDEO:
                self._start_video(item)
            elif isinstance(item, Job):
                self._send_image(item, actor)
            else:
                self._send(item, actor, attempt, lock)

    def _send(self, unit, actor: int, attempt: int, lock: fs.TargetLock | None = None) -> None:
        handle = self.actors[actor]
        if isinstance(unit, SegmentUnit):
            state = self.videos[unit.job.target]
            if state.failure is not None:  # a segment of this video failed: the rest is not worth doing
                self._video_unit_done(state)
                return
            ref = handle.segment.remote(unit, [] if state.source_ref is None else [state.source_ref])
        else:
            try:
                data = None if unit.shared else self.ray.put(unit.job.source.read_bytes())
            except OSError as error:
                self._file_done(unit.job, LightsrError(f"cannot read {unit.job.source}: {error.strerror or error}"),
                                lock)
                return
            ref = handle.image.remote(unit, data)
        self.in_flight[ref] = _Sent(unit, actor, handle, attempt, lock)
        self.load[actor] += 1

    def _collect(self, ref) -> None:
        sent = self.in_flight.pop(ref)
        self.load[sent.actor] -= 1
        try:
            outcome: UnitOutcome = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError,
                self.ray.exceptions.ObjectLostError) as error:
            self._worker_lost(sent, error)
            return
        self.tally.add(outcome, sent.unit)
        self.fp32_fallbacks += outcome.fp32_fallbacks
        for note in outcome.notes:
            self.reporter.note(note)
        if isinstance(sent.unit, SegmentUnit):
            self._segment_back(sent.unit, outcome)
        else:
            self._image_back(sent, outcome)

    def _worker_lost(self, sent: _Sent, error: Exception) -> None:
        """The worker died with the unit: Ray restarts it; the unit goes out again (or fails after enough tries)."""
        name = sent.unit.job.source.name
        self.workers.replace(sent.actor, sent.handle)
        _remove_temp_of_a_killed_worker(sent.unit)
        if sent.attempt < self.cluster.attempts:
            self.resent += 1
            self.reporter.note(f"note: a cluster worker stopped while working on {name}; sending it again")
            self.queue.appendleft((sent.unit, sent.attempt + 1, sent.lock))  # the claim goes with it
            return
        failure = LightsrError(f"cluster workers stopped {sent.attempt} times while working on {name} "
                               f"({type(error).__name__})",
                               hint="it may need more memory than a worker has: try a smaller {--tile}")
        if isinstance(sent.unit, SegmentUnit):
            self._segment_failed(self.videos[sent.unit.job.target], failure)
        else:
            self._file_done(sent.unit.job, failure, sent.lock)

    def _no_workers_left(self) -> None:
        """Every worker died more often than replaced: what is still queued fails, the run ends."""
        error = LightsrError("no cluster workers are left (they stopped more often than they could be replaced)",
                             hint="see the Ray logs of the nodes (`ray logs`); check each node's memory")
        while self.queue:
            item, _attempt, lock = self.queue.popleft()
            if isinstance(item, SegmentUnit):
                self._segment_failed(self.videos[item.job.target], error)
            else:
                self._file_done(item if isinstance(item, Job) else item.job, error, lock)

    # -- images ----------------------------------------------------------------------------------

    def _send_image(self, job: Job, actor: int) -> None:
        """Claim the target (unless workers write it themselves), then send the file's bytes."""
        if self.shared:
            self._send(ImageUnit(job, shared=True), actor, 1)
            return
        lock = fs.TargetLock(job.target)
        try:
            lock.acquire()
            if not self.output.overwrite and job.target.exists():
                raise fs.output_exists_error(job.target)
        except LightsrError as error:
            self._file_done(job, error, lock)
            return
        self._send(ImageUnit(job, shared=False), actor, 1, lock)

    def _image_back(self, sent: _Sent, outcome: UnitOutcome) -> None:
        job = sent.unit.job
        if outcome.failure is not None:
            self._file_done(job, outcome.failure.error(), sent.lock)
            return
        try:
            if outcome.data is not None:
                fs.write_bytes(job.target, outcome.data, overwrite=self.output.overwrite)
        except LightsrError as error:
            self._file_done(job, error, sent.lock)
            return
        self.summary.megapixels_in += outcome.megapixels_in
        self.summary.megapixels_out += outcome.megapixels_out
        self._file_done(job, None, sent.lock)

    def _file_done(self, job: Job, error: LightsrError | None, lock: fs.TargetLock | None) -> None:
        if lock is not None:
            lock.release()
        if error is None:
            self.summary.done.append(job)
        elif isinstance(error, (OutputExistsError, TargetBusyError)) and self.output.skip_existing:
            self.summary.skipped.append(job)  # another run finished it, or is writing it now
        else:
            self.summary.failed.append((job, error))
            self.reporter.failed(str(job.source), error)
        if self.files:
            self.files.advance()

    # -- videos ----------------------------------------------------------------------------------

    def _start_video(self, job: Job) -> None:
        """Claim the target, plan the job as a local run would, and queue the segments still to do."""
        lock = fs.TargetLock(job.target)
        try:
            lock.acquire()
            if not self.output.overwrite and job.target.exists():
                raise fs.output_exists_error(job.target)
            state = self._video_state(job, lock)
        except LightsrError as error:
            self._file_done(job, error, lock)
            return
        except Exception as error:  # noqa: BLE001 - the per-file boundary
            from ..run import unexpected_failure

            self._file_done(job, unexpected_failure(error), lock)
            return
        self.videos[job.target] = state
        plan = state.plan
        total = math.ceil(plan.info.frame_count / plan.per_segment)
        units = [SegmentUnit(job, plan.info, plan.written, index,
                             media_video.segment_frame_range(index, plan.per_segment, plan.info.frame_count),
                             plan.per_segment, state.parts.plan["tile"], plan.size, plan.encode, self.video.dedup,
                             state.parts.folder if self.shared else None)
                 for index in range(state.first_segment, total)]
        state.left = len(units)
        if not units:
            self._finish_video(state)
            return
        if not self.shared:
            state.source_ref = self.ray.put(job.source.read_bytes())
        self.queue.extendleft((unit, 1, None) for unit in reversed(units))

    def _video_state(self, job: Job, lock: fs.TargetLock) -> _Video:
        if not self.shared and is_sequence_source(job.source):
            raise LightsrError(f"{job.source}: a frame sequence is read by the workers at the driver's paths, "
                               "and they do not see them", hint="put the frames on storage every node mounts at the "
                               "same path and pass {--cluster-files shared}, or run without {--cluster}")
        plan = plan_video(job, self.output, self.video, self.scale, self._replica_facts)
        for note in plan.notes:
            self.reporter.note(note)
        parts = PartsFolder(job.target, plan.resume)
        first_segment = parts.start(self.video.resume)
        start_frame = min(first_segment * plan.per_segment, plan.info.frame_count)
        if start_frame:
            self.reporter.note(f"resuming {job.source.name} at frame {start_frame} of {plan.info.frame_count}")
        progress = self.reporter.task(job.source.name, total=plan.info.frame_count, unit="frame")
        progress.advance(start_frame)
        return _Video(job, plan, parts, lock, first_segment, progress)

    def _replica_facts(self, info: media_video.VideoInfo) -> ReplicaFacts:
        """The workers as the resume plan records them: one worker's settings and tile (every worker's), all
        devices and all precisions."""
        asked = next(actor for actor in self.actors if actor is not None)
        first = self.ray.get(asked.facts.remote(info.height, info.width))
        return ReplicaFacts(model=self.model_id, scale=self.scale, precision=precisions_of(self.facts), tta=first.tta,
                            autotune=first.autotune, tile=first.tile,
                            devices=tuple(sorted({f.device_description for f in self.facts})), cluster=True)

    def _segment_back(self, unit: SegmentUnit, outcome: UnitOutcome) -> None:
        state = self.videos[unit.job.target]
        if outcome.failure is not None:
            self._segment_failed(state, outcome.failure.error())
            return
        if state.failure is None:
            try:
                if outcome.data is not None:
                    fs.write_bytes(state.parts.segment(unit.index), outcome.data, overwrite=True)
            except LightsrError as error:
                self._segment_failed(state, error)
                return
            state.progress.advance(len(unit.frames))
            state.busy_seconds += outcome.seconds
            state.frames_upscaled += outcome.frames_upscaled
            self.summary.megapixels_in += outcome.megapixels_in
            self.summary.megapixels_out += outcome.megapixels_out
        self._video_unit_done(state)

    def _segment_failed(self, state: _Video, error: LightsrError) -> None:
        if state.failure is None:
            state.failure = error
        self._video_unit_done(state)

    def _video_unit_done(self, state: _Video) -> None:
        state.left -= 1
        if state.left == 0:
            self._finish_video(state)

    def _finish_video(self, state: _Video) -> None:
        """All segments back: join them losslessly with the source's streams onto the target, or report why not."""
        job, plan, parts = state.job, state.plan, state.parts
        info = plan.info
        try:
            if state.failure is not None:
                raise state.failure
            join_segments(parts, info, plan.written, plan.per_segment, job.target, self.output.overwrite)
        except LightsrError as error:
            say_where_the_parts_are(error, parts)
            self._end_video(state, error)
            return
        start_frame = min(state.first_segment * plan.per_segment, info.frame_count)
        frames = info.frame_count - start_frame
        out_w, out_h = plan.size
        self.summary.videos.append(VideoResult(
            frames=frames, megapixels_in=frames * info.width * info.height / 1e6,
            megapixels_out=frames * out_w * out_h / 1e6, decode_seconds=0.0,
            inference_seconds=state.busy_seconds / len(self.actors),  # workers side by side, as devices are
            encode_seconds=0.0, wall_seconds=time.perf_counter() - state.started,
            resumed_from_frame=start_frame, frames_upscaled=state.frames_upscaled))
        self._end_video(state, None)

    def _end_video(self, state: _Video, error: LightsrError | None) -> None:
        state.progress.close()
        if state.source_ref is not None:
            for actor in filter(None, self.actors):
                actor.forget_video.remote(str(state.job.source))
            state.source_ref = None
        self.videos.pop(state.job.target, None)
        self._file_done(state.job, error, state.lock)

    # -- Ctrl-C ----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop every worker, release every claim; targets hold nothing half-written (finished segments stay)."""
        self.workers.kill_all()
        for sent in self.in_flight.values():
            if sent.lock is not None:
                sent.lock.release()
            _remove_temp_of_a_killed_worker(sent.unit)
        for state in list(self.videos.values()):
            state.progress.close()
            state.lock.release()
        self.in_flight.clear()


def _remove_temp_of_a_killed_worker(unit) -> None:
    """A worker killed while writing a shared target leaves its hidden temp file (fs.write_bytes) beside it."""
    if isinstance(unit, ImageUnit) and unit.shared:
        target = unit.job.target
        for temp in target.parent.glob(f".{glob_escape(target.name)}.*.part"):
            temp.unlink(missing_ok=True)
