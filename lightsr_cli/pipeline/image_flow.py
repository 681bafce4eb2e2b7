"""A run's image jobs as three overlapping stages: read ahead, upscale on the devices, write behind.

While the devices run the network, one thread decodes the next files and another encodes and
writes the finished ones (realesrgan-ncnn-vulkan's load:proc:save threads): with a fast network, or
a GPU, or a folder of small photos whose metadata is carried over, the codecs would otherwise leave
the devices idle. Each stage holds at most a few files (``READ_AHEAD`` per device, ``WRITE_BEHIND``) and
at most a byte budget of pixels each (``READ_BUDGET``, ``WRITE_BUDGET``; a file larger than the budget
goes alone), so memory stays bounded over any folder, huge photos included. A job keeps its target claimed from its read until its
bytes are renamed into place; a failure in any stage is that job's outcome and the others go on;
outcomes come back in input order. Ctrl-C cancels what has not started and releases every claim.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from ..engine import Engine, EnginePool
from ..errors import LightsrError, unexpected_failure
from ..progress import Reporter
from .images import DecodedImage, OutputSettings, read_image_job, upscale_image_job, write_image_job
from .jobs import Job

READ_AHEAD = 2
"""Files per device read (decoded, or being decoded) ahead of the one the device runs."""
WRITE_BEHIND = 2
"""Upscaled files waiting to be encoded and written; the devices wait when this many are queued."""

READ_BUDGET = 512 << 20
"""Bytes of decoded pixels read ahead of the devices (beyond this, the reader waits)."""
WRITE_BUDGET = 1 << 30
"""Bytes of upscaled pixels waiting to be written (beyond this, the devices wait)."""

Outcome = tuple[float, float] | LightsrError
"""(megapixels in, megapixels out) of a job that was written, or why it failed."""


def flow_images(pool: EnginePool, jobs: list[Job], output: OutputSettings,
                reporter: Reporter) -> Iterator[tuple[Job, Outcome]]:
    """Every image job through read -> upscale -> write, overlapped; (job, outcome) in input order."""
    claims = _Claims()
    read_budget, write_budget = _Budget(READ_BUDGET), _Budget(WRITE_BUDGET)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightsr-read")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightsr-write")
    scale = pool.primary.scale

    def read(job: Job) -> DecodedImage | LightsrError:
        read_budget.wait_for_room()
        decoded = _guarded(read_image_job, job, output, scale, reporter)
        if not isinstance(decoded, LightsrError):
            claims.add(decoded)
            read_budget.add(_nbytes(decoded.picture.frames))
        return decoded

    def upscale(engine: Engine, item: tuple[Job, Future]) -> tuple[Job, DecodedImage | LightsrError]:
        job, reading = item
        decoded = reading.result()
        if isinstance(decoded, LightsrError):
            return job, decoded
        write_budget.wait_for_room()
        read_budget.give_back(_nbytes(decoded.picture.frames))  # on the device now, no longer ahead
        upscaled = _guarded(upscale_image_job, engine, decoded, output, reporter)
        if isinstance(upscaled, LightsrError):
            claims.release(decoded)
        else:
            write_budget.add(_nbytes(upscaled.upscaled))
        return job, upscaled

    def write(decoded: DecodedImage) -> Outcome:
        try:
            return _guarded(write_image_job, decoded, output, reporter)
        finally:
            write_budget.give_back(_nbytes(decoded.upscaled))
            claims.release(decoded)

    reads = _ahead(jobs, lambda job: reader.submit(read, job), (READ_AHEAD + 1) * len(pool.engines))
    writes: deque[tuple[Job, Future]] = deque()
    try:
        with contextlib.closing(pool.map_ordered(upscale, reads)) as upscaled:
            for job, decoded in upscaled:
                writes.append((job, _done(decoded) if isinstance(decoded, LightsrError)
                               else writer.submit(write, decoded)))
                while len(writes) > WRITE_BEHIND or (writes and writes[0][1].done()):
                    job, writing = writes.popleft()
                    yield job, writing.result()
        while writes:
            job, writing = writes.popleft()
            yield job, writing.result()
    finally:
        for budget in (read_budget, write_budget):
            budget.close()  # a reader waiting for room must not hold up the shutdown
        for executor in (reader, writer):
            executor.shutdown(wait=True, cancel_futures=True)
        claims.release_all()


def _guarded(stage: Callable, *args) -> object:
    """A stage's result, or its failure as a LightsrError (the per-file boundary: no exception but
    KeyboardInterrupt and other BaseExceptions crosses it)."""
    try:
        return stage(*args)
    except LightsrError as error:
        return error
    except Exception as error:  # noqa: BLE001 - one bad file never stops the run
        return unexpected_failure(error)


def _ahead(jobs: list[Job], start: Callable[[Job], Future], depth: int) -> Iterator[tuple[Job, Future]]:
    """(job, its started read) in order, keeping ``depth`` reads started ahead of the consumer."""
    started: deque[tuple[Job, Future]] = deque()
    pending = iter(jobs)
    for job in pending:
        started.append((job, start(job)))
        if len(started) >= depth:
            break
    while started:
        yield started.popleft()
        job = next(pending, None)
        if job is not None:
            started.append((job, start(job)))


def _nbytes(frames) -> int:
    return sum(frame.nbytes for frame in frames)


class _Budget:
    """Bytes held between two stages. The stage before waits for room before it makes the next item
    (``wait_for_room``: until less than the limit is held, so one item larger than the whole budget
    still goes, alone), then adds what it made; the stage after gives it back. ``close`` ends every wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._closed = False
        self._changed = threading.Condition()

    def wait_for_room(self) -> None:
        with self._changed:
            while self.held >= self.limit and not self._closed:
                self._changed.wait(0.5)  # a timeout keeps a waiting main thread responsive to Ctrl-C

    def add(self, amount: int) -> None:
        with self._changed:
            self.held += amount

    def give_back(self, amount: int) -> None:
        with self._changed:
            self.held -= amount
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class _Claims:
    """The targets claimed by decoded jobs not yet written, released whatever ends them."""

    def __init__(self) -> None:
        self._held: dict[int, DecodedImage] = {}
        self._lock = threading.Lock()

    def add(self, decoded: DecodedImage) -> None:
        with self._lock:
            self._held[id(decoded.claim)] = decoded

    def release(self, decoded: DecodedImage) -> None:
        with self._lock:
            self._held.pop(id(decoded.claim), None)
        decoded.claim.release()

    def release_all(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for decoded in held:
            decoded.claim.release()
