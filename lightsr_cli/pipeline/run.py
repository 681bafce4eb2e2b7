"""Every job of a run: images spread over the devices, videos one after another; a job that fails
is recorded and the others still run.

Each job runs inside a boundary that no exception crosses except KeyboardInterrupt (and other
BaseExceptions such as SystemExit): whatever a library raises for one bad file (an OpenCV
assertion, a MemoryError) becomes that file's failure, named by its exception type.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from ..engine import EnginePool
from ..errors import LightsrError, OutputExistsError, TargetBusyError, unexpected_failure
from ..progress import NullReporter, ProgressTask, Reporter
from .image_flow import flow_images
from .images import OutputSettings
from .jobs import Job, MediaKind
from .video import VideoResult, VideoSettings, run_video_job


@dataclass
class RunSummary:
    done: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, LightsrError]] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    megapixels_in: float = 0.0
    megapixels_out: float = 0.0
    seconds: float = 0.0
    videos: list[VideoResult] = field(default_factory=list)


class NotesOnce:
    """A Reporter that passes each distinct note on once: a folder of 500 photos says a loss once."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def task(self, description: str, total: float | None, unit: str = "") -> ProgressTask:
        return self._reporter.task(description, total, unit)

    def note(self, message: str) -> None:
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
        self._reporter.note(message)

    def failed(self, subject: str, error: LightsrError) -> None:
        self._reporter.failed(subject, error)


def run_jobs(pool: EnginePool, jobs: list[Job], output: OutputSettings, video: VideoSettings | None = None,
             reporter: Reporter | None = None) -> RunSummary:
    """Run every job; a job that fails is recorded and the others still run.

    Images are spread over the pool's devices (one file per device at a time), read ahead and
    written behind on their own threads (``image_flow``); videos run one after another, each
    spreading its frames over the devices.
    """
    reporter = NotesOnce(reporter or NullReporter())
    summary = RunSummary()
    started = time.perf_counter()
    files = reporter.task("files", total=len(jobs), unit="file") if len(jobs) > 1 else None

    def run_video(job: Job) -> tuple[float, float] | LightsrError:
        try:
            result = run_video_job(pool, job, output, video or VideoSettings(), reporter)
        except LightsrError as error:
            return error
        except Exception as error:  # noqa: BLE001 - the per-file boundary
            return unexpected_failure(error)
        summary.videos.append(result)
        return result.megapixels_in, result.megapixels_out

    image_jobs = [job for job in jobs if job.kind is not MediaKind.VIDEO]
    video_jobs = [job for job in jobs if job.kind is MediaKind.VIDEO]
    outcomes = itertools.chain(flow_images(pool, image_jobs, output, reporter),
                               ((job, run_video(job)) for job in video_jobs))
    try:
        for job, outcome in outcomes:
            if isinstance(outcome, (OutputExistsError, TargetBusyError)) and output.skip_existing:
                summary.skipped.append(job)  # another run finished it, or is writing it now
            elif isinstance(outcome, LightsrError):
                summary.failed.append((job, outcome))
                reporter.failed(str(job.source), outcome)
            else:
                summary.megapixels_in += outcome[0]
                summary.megapixels_out += outcome[1]
                summary.done.append(job)
            if files:
                files.advance()
    finally:
        if files:
            files.close()
        summary.seconds = time.perf_counter() - started
    return summary
