"""The engine's CUDA host code, driven on the CPU with stand-ins (issue #16's static review).

`fake_cuda` makes a CPU-only torch look like a machine with two GPUs: device queries, streams,
events, pinned memory, memory statistics and `Tensor.to("cuda:N")` are replaced by stand-ins that
keep the tensors on the CPU and log what the engine asked for. The engine then runs its real CUDA
host path (pinned copies on a side stream, events, OOM handling) end to end, and each test checks
one finding of the review. The GPU acceptance run (benchmarks/gpu_acceptance.py) checks the same
things on a real device.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import pytest
import torch

from lightsr_cli.archs import get_spec
from lightsr_cli.engine import Engine, EnginePool, resolve_device, resolve_precision
from lightsr_cli.engine.devices import is_out_of_memory
from lightsr_cli.pipeline import bench
from tests.test_engine import LocalNet, _image, _spec


class FakeStream:
    def __init__(self, device=None, log=None):
        self.device = torch.device(device) if device is not None else None
        self.log = log

    def wait_event(self, event):
        pass


class FakeCuda:
    """What the engine asked of the fake GPUs."""

    def __init__(self):
        self.events: list = []  # (kwargs, stream it was recorded on)
        self.device_contexts: list = []
        self.synchronized: list = []
        self.empty_cache_calls: list = []  # exception being handled at the time (None: none)
        self.record_stream_dense: list[bool] = []
        self.log: list[str] = []
        self.free, self.total, self.reserved, self.allocated = 8 << 30, 80 << 30, 0, 0
        self.capability = {0: (9, 0), 1: (9, 0)}
        self.pin_fails = False
        self.streams: dict = {}


def _to_cpu(value):
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    return value


@pytest.fixture
def fake_cuda(monkeypatch):
    state = FakeCuda()

    class FakeEvent:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.time = None
            state.events.append(self)
            self.stream = None

        def record(self, stream=None):
            self.stream = stream
            self.time = time.perf_counter()

        def synchronize(self):
            pass

        def query(self):
            return True

        def elapsed_time(self, end):
            return (end.time - self.time) * 1000

    class DeviceContext:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            state.device_contexts.append(self.device)

        def __exit__(self, *exc):
            return False

    def current_stream(device=None):
        key = str(device)
        return state.streams.setdefault(key, FakeStream(device))

    def index(device):
        return torch.device(device).index or 0

    original_to, original_empty_like, original_empty = torch.Tensor.to, torch.empty_like, torch.empty

    def fake_to(self, *args, **kwargs):
        args = tuple(_to_cpu(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        return original_to(self, *args, **kwargs)

    def pin(self, *args):
        if state.pin_fails:
            raise RuntimeError("CUDA error: out of memory")
        return self

    def without_pinning(original):
        def allocate(*args, pin_memory=False, **kwargs):
            if pin_memory and state.pin_fails:
                raise RuntimeError("CUDA error: out of memory")
            return original(*args, **kwargs)
        return allocate

    def record_stream(self, stream):
        state.record_stream_dense.append(self.is_contiguous() or self.is_contiguous(memory_format=torch.channels_last))

    cuda = torch.cuda
    for name, value in {
        "is_available": lambda: True, "device_count": lambda: 2, "current_device": lambda: 0,
        "get_device_capability": lambda device=None: state.capability[index(device)],
        "get_device_name": lambda device=None: f"Fake GPU {index(device)}",
        "is_bf16_supported": lambda including_emulation=True: True,
        "Stream": lambda device=None: FakeStream(device), "current_stream": current_stream,
        "stream": lambda stream: contextlib.nullcontext(), "device": DeviceContext, "Event": FakeEvent,
        "synchronize": lambda device=None: state.synchronized.append(device),
        "mem_get_info": lambda device=None: (state.free, state.total),
        "memory_reserved": lambda device=None: state.reserved,
        "memory_allocated": lambda device=None: state.allocated,
        "empty_cache": lambda: state.empty_cache_calls.append(sys.exc_info()[0]),
        "reset_peak_memory_stats": lambda device=None: state.log.append("reset_peak"),
        "max_memory_allocated": lambda device=None: 1 << 20,
    }.items():
        monkeypatch.setattr(cuda, name, value)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    monkeypatch.setattr(torch.Tensor, "record_stream", record_stream)
    monkeypatch.setattr(torch, "empty_like", without_pinning(original_empty_like))
    monkeypatch.setattr(torch, "empty", without_pinning(original_empty))
    return state


class Recorder(LocalNet):
    """LocalNet that logs, per forward, the input's batch size and the math settings in force."""

    def __init__(self, log=None):
        super().__init__()
        self.calls: list[dict] = []
        self.log = log

    def forward(self, x):
        backends = torch.backends
        self.calls.append({"batch": x.shape[0], "dtype": x.dtype,
                           "conv": backends.cudnn.conv.fp32_precision,
                           "matmul": backends.cuda.matmul.fp32_precision,
                           "benchmark": backends.cudnn.benchmark})
        if self.log is not None:
            self.log.append("forward")
        return super().forward(x)


# -- 1, 2, 3: bench ---------------------------------------------------------------------------------

def test_model_only_time_is_the_network_alone(monkeypatch):
    """#16.1: host work around the network (here: slow blending) is not model-only time."""
    class Slow(LocalNet):
        def forward(self, x):
            time.sleep(0.02)
            return super().forward(x)

    engine = Engine(Slow(), _spec(), 2, device="cpu", tile=16)
    original = Engine._blend_weights

    def slow_blend(self, *args):
        time.sleep(1.5)
        return original(self, *args)

    frames = _image(40, 40)
    engine.upscale(frames)  # warm-up: first-call costs of the CPU kernels
    monkeypatch.setattr(Engine, "_blend_weights", slow_blend)
    engine.stats.tiles = 0
    seconds = bench.time_model(engine, frames, repeats=1)
    tiles = engine.stats.tiles
    assert tiles >= 4 and 0.02 * tiles <= seconds < 1.0  # the blending alone takes 1.5 s


def test_bench_events_and_peak_memory_on_the_engines_gpu(fake_cuda):
    """#16.2 peak memory reset after the warm-up; #16.3 events on cuda:1's stream, not GPU 0's."""
    network = Recorder(fake_cuda.log)
    engine = Engine(network, _spec(), 2, device="cuda:1", precision="fp32", tile=0)
    assert engine.device == torch.device("cuda:1")
    result = bench.benchmark(engine, 64, 48, warmup=1, repeats=2)
    assert fake_cuda.log.index("reset_peak") > fake_cuda.log.index("forward")  # after the warm-up forward
    timed = [event for event in fake_cuda.events if event.kwargs.get("enable_timing")]
    assert timed and all(event.stream is not None and event.stream.device == torch.device("cuda:1")
                         for event in timed)
    assert all(device is not None and torch.device(device).index == 1 for device in fake_cuda.synchronized)
    assert fake_cuda.device_contexts and all(torch.device(d).index == 1 for d in fake_cuda.device_contexts)
    assert result.model_ms_per_frame > 0 and result.device == "cuda:1"


# -- 4, 8: precision and cuDNN switches -------------------------------------------------------------

def test_fp32_is_ieee_tf32_is_a_choice_and_switches_are_restored(fake_cuda):
    """#16.4: fp32 turns TF32 off in the forward (torch's default runs convolutions in TF32)."""
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
              torch.backends.cudnn.benchmark)
    network = Recorder()
    engine = Engine(network, _spec(), 2, device="cuda:0", precision="fp32")
    engine.upscale(_image(16, 16))
    assert network.calls[-1]["conv"] == "ieee" and network.calls[-1]["matmul"] == "ieee"
    tf32 = Engine(network, _spec(), 2, device="cuda:0", precision="tf32")
    tf32.upscale(_image(16, 16))
    assert tf32.precision == "tf32" and network.calls[-1]["conv"] == "tf32" and network.calls[-1]["matmul"] == "tf32"
    # #16.8: no autotuning unless asked, and nothing left behind for the rest of the process
    assert network.calls[-1]["benchmark"] is False
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
            torch.backends.cudnn.benchmark) == before


def test_tf32_without_an_ampere_gpu_is_plain_fp32_with_a_note(fake_cuda):
    fake_cuda.capability[0] = (7, 5)
    engine = Engine(LocalNet(), _spec(), 2, device="cuda:0", precision="tf32")
    assert engine.precision == "fp32" and any("tf32" in note for note in engine.stats.notes)
    assert Engine(LocalNet(), _spec(), 2, device="cpu", precision="tf32").precision == "fp32"


def test_the_nan_recompute_runs_in_ieee_fp32(fake_cuda):
    class OverflowsInHalf(Recorder):
        def forward(self, x):
            y = super().forward(x)
            return y * torch.tensor(float("nan"), dtype=y.dtype) if x.dtype != torch.float32 else y

    network = OverflowsInHalf()
    engine = Engine(network, _spec(), 2, device="cuda:0", precision="fp16")
    out = engine.upscale(_image(16, 16))
    assert torch.isfinite(out).all() and engine.stats.fp32_fallbacks == 1
    assert network.calls[-1]["dtype"] == torch.float32 and network.calls[-1]["conv"] == "ieee"


# -- 5, 6: automatic tiles --------------------------------------------------------------------------

def test_automatic_tile_counts_cached_memory_and_keeps_its_choice(fake_cuda):
    """#16.5: memory torch caches but does not use is free; a size keeps its tile whatever runs later."""
    heavy = _spec(activation_bytes_per_pixel=1 << 20)
    fake_cuda.free, fake_cuda.reserved, fake_cuda.allocated = 1 << 30, 8 << 30, 1 << 30
    engine = Engine(LocalNet(), heavy, 2, device="cuda:0", precision="fp32")
    without_cache = Engine(LocalNet(), heavy, 2, device="cuda:0", precision="fp32")
    fake_cuda.reserved = fake_cuda.allocated
    small = without_cache.auto_tile_size(400, 400)
    fake_cuda.reserved = 8 << 30
    assert engine.auto_tile_size(400, 400) > small > 0
    first = engine.tile_for(400, 400)
    fake_cuda.free = fake_cuda.reserved = fake_cuda.allocated  # the next frame sees less memory
    assert engine.auto_tile_size(400, 400) < first and engine.tile_for(400, 400) == first


def test_out_of_memory_is_remembered_per_size():
    """#16.6: the second image of a size that overflowed starts from the tile that fitted."""
    class SmallMemory(LocalNet):
        failures = 0

        def forward(self, x):
            if x.shape[-1] * x.shape[-2] > 48 * 48:
                SmallMemory.failures += 1
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    engine = Engine(SmallMemory(), _spec(), 2, device="cpu")
    first = engine.upscale(_image(100, 90))
    failures = SmallMemory.failures
    second = engine.upscale(_image(100, 90))
    assert failures >= 1 and SmallMemory.failures == failures and engine.stats.oom_retries == failures
    torch.testing.assert_close(first, second)


# -- 7: memory estimates ----------------------------------------------------------------------------

def test_memory_estimates_cover_the_measured_peaks():
    """#16.7: every architecture's estimate is at least its measured peak (fp32 and bf16 separately)."""
    from pathlib import Path

    results = json.loads((Path(__file__).parent.parent / "benchmarks" / "results-memory-estimates.json").read_text())
    for row in results["results"]:
        spec = get_spec(row["arch"])
        assert spec.bytes_per_pixel(torch.float32) >= row["float32_bytes_per_pixel"], row
        assert spec.bytes_per_pixel(torch.bfloat16) >= row["bfloat16_bytes_per_pixel"], row


def test_a_half_precision_estimate_is_used_in_half_precision():
    spec = _spec(activation_bytes_per_pixel=1 << 16, half_activation_bytes_per_pixel=1 << 16)
    assert spec.bytes_per_pixel(torch.bfloat16) == 1 << 16
    assert _spec(activation_bytes_per_pixel=1 << 16).bytes_per_pixel(torch.float16) == 1 << 15


# -- 8: resume plan ---------------------------------------------------------------------------------

def test_resume_adopts_the_first_runs_tile_and_refuses_another_device(tmp_path):
    from lightsr_cli.errors import LightsrError
    from lightsr_cli.pipeline.video import PartsFolder

    plan = {"model": "m", "devices": ["cuda:0 (NVIDIA H200)"], "tile": 256}
    first = PartsFolder(tmp_path / "out.mp4", plan)
    assert first.start(resume=False) == 0
    first.segment(0).write_bytes(b"done")
    again = PartsFolder(tmp_path / "out.mp4", {**plan, "tile": 128})  # less free memory this time
    assert again.start(resume=True) == 1 and again.plan["tile"] == 256
    with pytest.raises(LightsrError, match=r"other settings: devices .+ \(now .+\)"):
        PartsFolder(tmp_path / "out.mp4", {**plan, "devices": ["cpu"]}).start(resume=True)


def test_video_plan_names_the_device_and_the_tile_used(fake_cuda):
    engine = Engine(LocalNet(), _spec(), 2, device="cuda:1", tile=None)
    assert engine.device_description == "cuda:1 (Fake GPU 1)"


# -- 9, 10: torch.compile ---------------------------------------------------------------------------

def _fake_compile(monkeypatch, seen: list, active: list):
    """torch.compile stand-in: the first call of each shape 'compiles' (slowly, watching for overlap)."""
    def compile_(module, **kwargs):
        shapes: set = set()

        def run(x):
            if tuple(x.shape) not in shapes:
                active.append(1)
                seen.append(len(active))
                time.sleep(0.05)
                shapes.add(tuple(x.shape))
                active.pop()
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", compile_)


def test_pool_engines_compile_one_at_a_time(monkeypatch):
    """#16.9: two engines of a pool never compile at the same time."""
    seen, active = [], []
    _fake_compile(monkeypatch, seen, active)
    pool = EnginePool([Engine(LocalNet(), _spec(), 2, device="cpu", compile=True) for _ in range(2)])
    sizes = [(16 + 2 * i, 16) for i in range(6)]
    results = list(pool.map_ordered(lambda engine, size: engine.upscale(_image(*size)), sizes))
    assert [tuple(r.shape[-2:]) for r in results] == [(2 * h, 2 * w) for h, w in sizes]
    assert len(seen) >= 6 and max(seen) == 1


def test_compiled_graphs_are_counted_and_the_limit_is_honest(monkeypatch):
    """#16.10: a short batch is not padded with copies; shapes past the limit run eager, openly."""
    from lightsr_cli.engine import compiled

    # Not torch._dynamo.config itself: restoring its recompile_limit alias left the config broken
    # for every later torch.compile in the process.
    monkeypatch.setattr(compiled, "recompile_limit", lambda: 2)
    seen, active = [], []
    _fake_compile(monkeypatch, seen, active)
    network = Recorder()
    engine = Engine(network, _spec(), 2, device="cpu", batch=4, compile=True)
    engine.upscale(_image(16, 16))
    assert network.calls[-1]["batch"] == 1  # one image computed once, not four times
    engine.upscale(_image(20, 16))
    assert engine.compiled and engine.stats.compiled_graphs == 2
    engine.upscale(_image(24, 16))
    assert not engine.compiled and engine.stats.eager_shapes == 1 and engine.stats.compiled_graphs == 2
    assert any("runs without it" in note for note in engine.stats.notes)
    engine.upscale(_image(16, 16))
    assert engine.compiled


# -- 11, 12: device queries -------------------------------------------------------------------------

def test_bf16_is_asked_of_the_engines_gpu_without_emulation(fake_cuda):
    """#16.11: cuda:1 is a Turing card: GRL (fp16-unsafe) falls back to fp32, not emulated bf16."""
    fake_cuda.capability = {0: (8, 0), 1: (7, 5)}
    grl = get_spec("GRL")
    assert resolve_precision("auto", torch.device("cuda:1"), grl)[0] == torch.float32
    assert resolve_precision("auto", torch.device("cuda:0"), grl)[0] == torch.bfloat16


def test_an_unnumbered_gpu_is_bound_once(fake_cuda, monkeypatch):
    """#16.12: 'cuda' and 'auto' resolve to the GPU current at that moment, with its index."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("auto") == torch.device("cuda:1")


# -- 13, 14, 17: transfers and out-of-memory handling -----------------------------------------------

def test_cropped_fp32_outputs_are_dense_before_the_copy(fake_cuda):
    """#16.13: a padded-and-cropped fp32 output is made dense before the non-blocking copy."""
    engine = Engine(LocalNet(), _spec(size_multiple=8), 2, device="cuda:0", precision="fp32", tile=0)
    out = engine.upscale(_image(13, 13))
    assert out.shape == (1, 3, 26, 26) and fake_cuda.record_stream_dense and all(fake_cuda.record_stream_dense)


def test_cache_is_emptied_outside_the_exception_handler(fake_cuda):
    """#16.14: empty_cache runs once the failed pass's traceback is gone."""
    class SmallMemory(LocalNet):
        def forward(self, x):
            if x.shape[-1] * x.shape[-2] > 40 * 40:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return super().forward(x)

    engine = Engine(SmallMemory(), _spec(), 2, device="cuda:0", precision="fp32")
    engine.upscale(_image(80, 80))
    assert fake_cuda.empty_cache_calls and all(exc is None for exc in fake_cuda.empty_cache_calls)


def test_library_allocation_failures_count_as_out_of_memory():
    """#16.17: cuDNN/cuBLAS report allocation failures in their own words."""
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`"))
    assert not is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))


def test_pinned_memory_exhaustion_does_not_shrink_tiles(fake_cuda):
    """#16.17: page-locked host memory running out falls back to pageable copies, same tile."""
    fake_cuda.pin_fails = True
    engine = Engine(LocalNet(), _spec(), 2, device="cuda:0", precision="fp32", tile=0)
    image = _image(20, 20)
    out = engine.upscale(image)
    assert engine.stats.oom_retries == 0 and engine.stats.tiles == 1
    assert any("page-locked" in note for note in engine.stats.notes)
    torch.testing.assert_close(out, Engine(LocalNet(), _spec(), 2, device="cpu").upscale(image))


def test_copy_events_sleep_instead_of_spinning(fake_cuda):
    """#16.17: the events the host waits on are blocking (the decoder and encoder threads need the core)."""
    Engine(LocalNet(), _spec(), 2, device="cuda:0", tile=8).upscale(_image(20, 20))
    compute_streams = list(fake_cuda.streams.values())
    waited = [event for event in fake_cuda.events if event.stream is not None and
              all(event.stream is not stream for stream in compute_streams)]  # recorded on the copy stream
    assert waited and all(event.kwargs.get("blocking") for event in waited)


# -- 15: 32-bit indexing ----------------------------------------------------------------------------

def test_passes_stay_below_two_to_the_31_elements():
    """#16.15: a pass whose widest tensor would reach 2^31 elements is tiled (BSRN x2 on a 4K frame)."""
    wide = _spec(widest_activation=(2**31) // 2000)  # 2000 px of input reach the limit
    image = _image(100, 100)
    engine = Engine(LocalNet(), wide, 2, device="cpu", tile=0)
    out = engine.upscale(image)
    assert engine.stats.tiles > 1 and any("2^31" in note for note in engine.stats.notes)
    torch.testing.assert_close(out, Engine(LocalNet(), _spec(), 2, device="cpu", tile=0).upscale(image),
                               atol=1e-5, rtol=0)
    bsrn = get_spec("BSRN")
    lr_4k_x2 = 1920 * 1080
    assert lr_4k_x2 * bsrn.widest_activation < 2**31 < 2160 * 3840 * bsrn.widest_activation


def test_math_switches_are_restored_after_passes_that_overlap_in_threads():
    """Engines of a pool run their forwards at once: the last one out restores the process's switches
    (with save/restore per pass, the second pass in would put back the first one's settings)."""
    import threading

    from lightsr_cli.engine.devices import math_mode

    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.benchmark)
    entered = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]

    def forward(index):
        with math_mode(allow_tf32=False, autotune=True):
            entered[index].set()
            leave[index].wait(timeout=10)

    threads = [threading.Thread(target=forward, args=(index,)) for index in range(2)]
    threads[0].start()
    assert entered[0].wait(timeout=10)
    threads[1].start()
    assert entered[1].wait(timeout=10)
    leave[0].set()  # the first in leaves first
    threads[0].join()
    leave[1].set()
    threads[1].join()
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.benchmark) == before
