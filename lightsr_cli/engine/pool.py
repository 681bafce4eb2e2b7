"""Several engines, one per GPU, sharing the work: `--device cuda:0,cuda:1` (or `cuda:all`).

Each device gets its own Engine (its own copy of the network) and its own worker thread. Work
items (image files, batches of video frames) go to whichever device is free, and results come
back in the order the items went in, so a video's frames stay in sequence. With one device the
work runs on the calling thread, exactly as without a pool. Tensors in, tensors out: like the
engine, this module knows nothing of files.
"""

from __future__ import annotations

import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from ..errors import DeviceError, UsageError
from .torch_engine import Engine

Item = TypeVar("Item")
Result = TypeVar("Result")


def parse_devices(text: str) -> list[str]:
    """'cuda:0,cuda:1' -> ['cuda:0', 'cuda:1']; 'cuda:all' -> every visible GPU; one name -> [name]."""
    names = [part.strip().lower() for part in (text or "auto").split(",") if part.strip()]
    if names == ["cuda:all"]:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError("{--device cuda:all} was requested but CUDA is not available", hint="use {--device cpu}")
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if len(names) <= 1:
        return names or ["auto"]
    if any(not name.startswith("cuda:") for name in names):
        raise UsageError(f"{{--device {text}}}: several devices must all be numbered GPUs",
                         hint="write them as cuda:0,cuda:1 (or cuda:all)")
    if len(set(names)) != len(names):
        raise UsageError(f"{{--device {text}}} names a GPU twice")
    return names


class EnginePool:
    """One Engine per device; `map_ordered` spreads work over them and keeps the order."""

    def __init__(self, engines: Iterable[Engine], model_id: str = "") -> None:
        self.engines = list(engines)
        if not self.engines:
            raise ValueError("a pool needs at least one engine")
        self.model_id = model_id
        """Which model the engines run (for summaries and resume plans); the engines hold only its network."""

    def __len__(self) -> int:
        return len(self.engines)

    @property
    def primary(self) -> Engine:
        """The first device's engine: its settings (scale, batch, precision, ...) are every engine's."""
        return self.engines[0]

    @property
    def device_names(self) -> str:
        return ",".join(str(engine.device) for engine in self.engines)

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for engine in self.engines for note in engine.stats.notes))

    @property
    def fp32_fallbacks(self) -> int:
        return sum(engine.stats.fp32_fallbacks for engine in self.engines)

    def map_ordered(self, work: Callable[[Engine, Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """Yield ``work(engine, item)`` for every item, in input order, each run on a free device.

        At most two items per device are in flight, so a long stream (a video) never piles up in
        memory. An exception from ``work`` is raised here when its item's turn comes.
        """
        if len(self.engines) == 1:
            for item in items:
                yield work(self.engines[0], item)
            return
        idle: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        for engine in self.engines:
            idle.put(engine)

        def on_a_free_device(item: Item) -> Result:
            engine = idle.get()  # never waits long: there are as many workers as engines
            try:
                return work(engine, item)
            finally:
                idle.put(engine)

        executor = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="lightsr-device")
        in_flight: deque = deque()
        try:
            for item in items:
                in_flight.append(executor.submit(on_a_free_device, item))
                if len(in_flight) >= 2 * len(self.engines):
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
