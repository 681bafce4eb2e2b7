"""The cluster worker: a Ray actor that keeps one model replica loaded and runs one unit per call.

It builds its engine once from checkpoint bytes the driver resolved and verified (they arrive
through the object store: no worker downloads anything), then runs units with the local
pipeline's own code: an image unit is :func:`run_image_job` on a private copy of the input (or on
the shared paths), a video segment is the frames of ``segment_frame_range`` decoded (from a video
file or a frame sequence), deduplicated, upscaled, resized and encoded exactly as the local resume
segments are. Whatever fails for the file's own reasons comes
back as a :class:`UnitFailure`; only the worker's death is left to Ray and the driver.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...errors import LightsrError
from ...media.video import segment_timing
from ...registry import ModelCard
from ..dedup import DedupCounts, batches_with_reuse
from ..images import OutputSettings, run_image_job
from ..jobs import Job
from ..loading import EngineSettings, load_pool
from ..run import unexpected_failure
from ..sequences import reader_for, size_change_note
from ..video import PartsFolder, upscaled_frames
from .units import ImageUnit, SegmentUnit, UnitFailure, UnitOutcome, WorkerFacts, lightsr_version


class _NotesKept:
    """A Reporter that keeps the notes a unit says, to send them back with its outcome."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def task(self, description: str, total: float | None, unit: str = ""):
        from ...progress import NullReporter

        return NullReporter().task(description, total, unit)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def failed(self, subject: str, error: LightsrError) -> None:
        pass


class UpscaleWorker:
    """One model replica (made a Ray actor by the driver: ``ray.remote(UpscaleWorker)``)."""

    def __init__(self, card: ModelCard, settings: EngineSettings, weights: list, weights_name: str,
                 output: OutputSettings, threads: int) -> None:
        """``weights``: [ObjectRef of the checkpoint's bytes] (in a list, so a restarted worker fetches it again)."""
        import ray

        if threads > 0 and settings.device == "cpu":
            import torch

            torch.set_num_threads(threads)
        self._scratch = Path(tempfile.mkdtemp(prefix="lightsr-worker-"))
        weights_path = self._scratch / weights_name
        weights_path.write_bytes(ray.get(weights[0]))
        self._pool = load_pool(card, settings, weights_path=weights_path)
        self._output = output
        self._node_id = ray.get_runtime_context().get_node_id()
        self._host = socket.gethostname()
        self._videos: dict[str, Path] = {}
        """Local copies of videos whose bytes were sent (one per video, reused by all its segments)."""

    def facts(self, height: int = 0, width: int = 0) -> WorkerFacts:
        engine = self._pool.primary
        return WorkerFacts(node_id=self._node_id, host=self._host, version=lightsr_version(), device=str(engine.device),
                           device_description=engine.device_description, precision=engine.precision,
                           batch=engine.batch, tta=engine.tta,
                           tile=engine.tile_for(height, width) if height and width else engine.tile,
                           autotune=engine.autotune, notes=tuple(engine.stats.notes), backend=engine.backend)

    def sees(self, files: list[tuple[str, int]]) -> bool:
        """Whether every (path, size) is a file of that size here: the driver's storage is shared."""
        try:
            return all(os.path.getsize(path) == size for path, size in files)
        except OSError:
            return False

    # -- units -------------------------------------------------------------------------------------

    def image(self, unit: ImageUnit, data: bytes | None) -> UnitOutcome:
        """Upscale one image file: on the shared paths, or from ``data`` into bytes sent back."""
        started, notes = time.perf_counter(), _NotesKept()
        fallbacks = self._pool.fp32_fallbacks
        work = None if unit.shared else Path(tempfile.mkdtemp(dir=self._scratch))
        try:
            job = unit.job
            if work is not None:
                source = work / "in" / unit.job.source.name
                source.parent.mkdir()
                source.write_bytes(data or b"")
                job = Job(source, work / "out" / unit.job.target.name, unit.job.kind)
            mp_in, mp_out = run_image_job(self._pool.primary, job, replace(self._output, overwrite=unit.shared
                                                                            and self._output.overwrite), notes)
            result = None if work is None else job.target.read_bytes()
            return self._outcome(started, notes, fallbacks, megapixels_in=mp_in, megapixels_out=mp_out, data=result)
        except Exception as error:  # noqa: BLE001 - the per-file boundary, as in run_jobs
            failure = error if isinstance(error, LightsrError) else unexpected_failure(error)
            if work is not None:
                failure.template = failure.template.replace(str(work / "in" / unit.job.source.name),
                                                            str(unit.job.source))
            return self._outcome(started, notes, fallbacks, failure=UnitFailure.of(failure))
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def segment(self, unit: SegmentUnit, source: list) -> UnitOutcome:
        """Upscale one segment of a video; ``source`` is [] (shared paths) or [ObjectRef of its bytes].

        The frames go the local pipeline's way (video.upscaled_frames): --dedup decides afresh from
        the segment's first frame, as it does locally at every segment boundary, so a segment done
        here is the segment a local run makes.
        """
        started, notes = time.perf_counter(), _NotesKept()
        fallbacks = self._pool.fp32_fallbacks
        try:
            info, written = unit.info, unit.written
            if source:
                local = self._local_video(unit, source[0])
                info, written = replace(info, path=local), replace(written, path=local)
            for engine in self._pool.engines:  # every worker cuts this video's frames the same way
                engine.use_tile(info.height, info.width, unit.tile)
            parts = self._parts(unit)
            counts = DedupCounts()
            with reader_for(info, unit.frames.start) as reader:
                batches = batches_with_reuse(_frames_of(unit, reader), self._pool.primary.batch, unit.dedup,
                                             unit.frames.start, unit.per_segment, counts)
                parts.write_segment(unit.index, upscaled_frames(self._pool, batches, unit.size, []),
                                    written.frame_rate, unit.encode, written, timing=segment_timing(written, unit.frames))
            if note := size_change_note(unit.info, reader):
                notes.note(note)
            data = None if unit.parts_folder is not None else parts.segment(unit.index).read_bytes()
            if unit.parts_folder is None:
                parts.segment(unit.index).unlink()
            count = len(unit.frames)
            out_w, out_h = unit.size
            return self._outcome(started, notes, fallbacks, megapixels_in=count * info.width * info.height / 1e6,
                                 megapixels_out=count * out_w * out_h / 1e6, data=data,
                                 frames_upscaled=counts.upscaled)
        except Exception as error:  # noqa: BLE001 - the per-file boundary
            failure = error if isinstance(error, LightsrError) else unexpected_failure(error)
            return self._outcome(started, notes, fallbacks, failure=UnitFailure.of(failure))

    def forget_video(self, key: str) -> None:
        """The driver is done with a video: drop its local copy."""
        path = self._videos.pop(key, None)
        if path is not None:
            shutil.rmtree(path.parent, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------------

    def _outcome(self, started: float, notes: _NotesKept, fallbacks: int, **fields) -> UnitOutcome:
        return UnitOutcome(node_id=self._node_id, host=self._host, seconds=time.perf_counter() - started,
                           notes=tuple(notes.notes), fp32_fallbacks=self._pool.fp32_fallbacks - fallbacks, **fields)

    def _local_video(self, unit: SegmentUnit, reference) -> Path:
        """This worker's copy of the video (fetched from the object store the first time)."""
        import ray

        key = str(unit.job.source)
        if key not in self._videos:
            folder = Path(tempfile.mkdtemp(dir=self._scratch))
            path = folder / unit.job.source.name
            path.write_bytes(ray.get(reference))
            self._videos[key] = path
        return self._videos[key]

    def _parts(self, unit: SegmentUnit) -> PartsFolder:
        """The shared parts folder beside the target, or a private one here whose segment goes back as bytes."""
        if unit.parts_folder is not None:
            return PartsFolder(unit.job.target, {})
        parts = PartsFolder(self._scratch / "segments" / unit.job.target.name, {})
        parts.folder.mkdir(parents=True, exist_ok=True)
        return parts


def _frames_of(unit: SegmentUnit, reader) -> Iterator[np.ndarray]:
    """The segment's decoded frames from a reader that starts at its first frame."""
    frames = iter(reader)
    for _ in unit.frames:
        frame = next(frames, None)
        if frame is None:
            raise LightsrError(f"{unit.job.source.name} ended before frame {unit.frames.stop}")
        yield frame
