"""Speed measurement of one engine: model-only time on the device, and end to end from host arrays.

Used by `lightsr bench` and the scripts in benchmarks/. Model-only is the network's forward passes
alone (Engine.network_seconds): on CUDA from events recorded on the engine's device and stream
around each forward, on the CPU from a monotonic clock. End to end includes the conversions from
and to uint8 host arrays, uploads, downloads, tiling and blending: what a user's frame costs.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import Engine
from .pixels import upscale_pixels


@dataclass(frozen=True)
class BenchResult:
    output_size: tuple[int, int]
    """(width, height) of the upscaled frame."""
    batch: int
    tile: int
    device: str
    precision: str
    model_ms_per_frame: float
    end_to_end_ms_per_frame: float
    peak_memory_mb: float
    """CUDA: peak allocated by torch in the timed runs (after warm-up and autotuning); CPU: the
    process's peak resident set (includes everything)."""
    compiled_graphs: int = 0
    """--compile: graphs compiled (one per input shape); 0 without it."""
    graph_breaks: int = 0

    @property
    def output_megapixels_per_second(self) -> float:
        width, height = self.output_size
        return width * height / 1e6 / (self.end_to_end_ms_per_frame / 1000)

    @property
    def model_megapixels_per_second(self) -> float:
        width, height = self.output_size
        return width * height / 1e6 / (self.model_ms_per_frame / 1000)


def synthetic_frame(height: int, width: int) -> np.ndarray:
    """A textured frame (smooth gradients plus detail), so no path is sped up by flat input."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    planes = [127 + 60 * np.sin(x / (7 + c) + y / (11 + 2 * c)) + rng.normal(0, 12, (height, width)) for c in range(3)]
    return np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(engine: Engine, frames: torch.Tensor, repeats: int) -> float:
    """Median seconds per call that the network itself runs (uploads, downloads, blending left out)."""
    return statistics.median(engine.network_seconds(lambda: engine.upscale(frames)) for _ in range(repeats))


def benchmark(engine: Engine, output_width: int, output_height: int, warmup: int = 1, repeats: int = 3) -> BenchResult:
    scale = engine.scale
    height, width = max(1, output_height // scale), max(1, output_width // scale)
    frame = synthetic_frame(height, width)
    batch = engine.batch
    frames = torch.from_numpy(np.stack([frame] * batch).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    for _ in range(warmup):
        engine.upscale(frames)
    _synchronize(engine.device)
    if engine.device.type == "cuda":
        # After the warm-up: autotuning workspaces and compilation are not what a frame needs.
        torch.cuda.reset_peak_memory_stats(engine.device)
    model_seconds = time_model(engine, frames, repeats) / batch
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        upscale_pixels(engine, frame)
        _synchronize(engine.device)
        samples.append(time.perf_counter() - started)
    end_to_end = statistics.median(samples)
    if engine.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(engine.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult((width * scale, height * scale), batch, engine.stats.tile, str(engine.device),
                       engine.precision, model_seconds * 1000, end_to_end * 1000, peak,
                       engine.stats.compiled_graphs, engine.stats.graph_breaks)
