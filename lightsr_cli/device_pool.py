"""Several engines, one per GPU, sharing the work: `--device cuda:0,cuda:1` (or `cuda:all`).

Each device gets its own Upscaler (its own copy of the network) and its own worker thread. Work
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

from .engine import Upscaler
from .errors import DeviceError, UsageError

Item = TypeVar("Item")
Result = TypeVar("Result")


def parse_devices(text: str) -> list[str]:
    """'cuda:0,cuda:1' -> ['cuda:0', 'cuda:1']; 'cuda:all' -> every visible GPU; one name -> [name]."""
    names = [part.strip().lower() for part in (text or "auto").split(",") if part.strip()]
    if names == ["cuda:all"]:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError("--device cuda:all was requested but CUDA is not available", hint="use --device cpu")
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if len(names) <= 1:
        return names or ["auto"]
    if any(not name.startswith("cuda:") for name in names):
        raise UsageError(f"--device {text}: several devices must all be numbered GPUs",
                         hint="write them as cuda:0,cuda:1 (or cuda:all)")
    if len(set(names)) != len(names):
        raise UsageError(f"--device {text} names a GPU twice")
    return names


class UpscalerPool:
    """One Upscaler per device; `map_ordered` spreads work over them and keeps the order."""

    def __init__(self, upscalers: Iterable[Upscaler]) -> None:
        self.upscalers = list(upscalers)
        if not self.upscalers:
            raise ValueError("a pool needs at least one upscaler")

    def __len__(self) -> int:
        return len(self.upscalers)

    @property
    def primary(self) -> Upscaler:
        """The first device's engine: its settings (scale, batch, precision, ...) are every engine's."""
        return self.upscalers[0]

    @property
    def device_names(self) -> str:
        return ",".join(str(upscaler.device) for upscaler in self.upscalers)

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for upscaler in self.upscalers for note in upscaler.stats.notes))

    @property
    def fp32_fallbacks(self) -> int:
        return sum(upscaler.stats.fp32_fallbacks for upscaler in self.upscalers)

    def map_ordered(self, work: Callable[[Upscaler, Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """Yield ``work(upscaler, item)`` for every item, in input order, each run on a free device.

        At most two items per device are in flight, so a long stream (a video) never piles up in
        memory. An exception from ``work`` is raised here when its item's turn comes.
        """
        if len(self.upscalers) == 1:
            for item in items:
                yield work(self.upscalers[0], item)
            return
        idle: queue.SimpleQueue[Upscaler] = queue.SimpleQueue()
        for upscaler in self.upscalers:
            idle.put(upscaler)

        def on_a_free_device(item: Item) -> Result:
            upscaler = idle.get()  # never waits long: there are as many workers as engines
            try:
                return work(upscaler, item)
            finally:
                idle.put(upscaler)

        executor = ThreadPoolExecutor(max_workers=len(self.upscalers), thread_name_prefix="lightsr-device")
        in_flight: deque = deque()
        try:
            for item in items:
                in_flight.append(executor.submit(on_a_free_device, item))
                if len(in_flight) >= 2 * len(self.upscalers):
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
