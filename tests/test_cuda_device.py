"""The engine on a real CUDA GPU: what tests/test_cuda_standins.py checks with stand-ins, for real.

Marked ``cuda`` (skipped without a GPU); benchmarks/gpu_acceptance.py runs them first.
"""

from __future__ import annotations

import pytest
import torch

from lightsr_cli.engine import Engine, EnginePool
from lightsr_cli.pipeline import bench
from tests.markers import cuda
from tests.test_engine import LocalNet, _image, _spec

pytestmark = cuda


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("tile", [0, 16])
def test_gpu_matches_cpu(precision, tile):
    image = _image(40, 52, count=3)
    reference = Engine(LocalNet(), _spec(), 2, device="cpu", tile=0).upscale(image)
    engine = Engine(LocalNet(), _spec(), 2, device="cuda", precision=precision, tile=tile, batch=2)
    out = engine.upscale(image)
    tolerance = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}[precision]
    torch.testing.assert_close(out, reference, atol=tolerance, rtol=0)
    assert engine.stats.fp32_fallbacks == 0 and torch.equal(out, engine.upscale(image))
    uint8 = engine.upscale((image * 255).round().to(torch.uint8), to_uint8=True)
    assert uint8.dtype == torch.uint8 and uint8.shape == out.shape


def test_fp32_is_ieee_on_the_gpu():
    """fp32 output equals a float64 reference to fp32 rounding (TF32 would be ~1e-3 off)."""
    net = LocalNet()
    image = _image(64, 64)
    out = Engine(net, _spec(), 2, device="cuda", precision="fp32", tile=0).upscale(image)
    reference = net.double()(image.double()).float()
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_device_index_and_no_context_on_other_gpus():
    engine = Engine(LocalNet(), _spec(), 2, device="cuda")
    assert engine.device.index is not None
    engine.upscale(_image(20, 20))
    last = torch.cuda.device_count() - 1
    other = Engine(LocalNet(), _spec(), 2, device=f"cuda:{last}")
    assert other.upscale(_image(20, 20)).device.type == "cpu"


def test_out_of_memory_recovery_is_remembered():
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    engine = Engine(LocalNet(), _spec(activation_bytes_per_pixel=1), 2, device="cuda", precision="fp32")
    torch.cuda.set_per_process_memory_fraction(0.02)
    try:
        side = int((total * 0.02 / 400) ** 0.5)  # LocalNet needs ~ 200 B per input pixel at fp32
        image = torch.rand(1, 3, side, side)
        engine.upscale(image)
        first = engine.stats.oom_retries
        engine.upscale(image)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert first >= 1 and engine.stats.oom_retries == first


def test_two_engines_on_one_gpu_share_frames():
    frames = [_image(30, 30 + i) for i in range(4)]
    pool = EnginePool([Engine(LocalNet(), _spec(), 2, device="cuda") for _ in range(2)])
    single = Engine(LocalNet(), _spec(), 2, device="cuda")
    together = list(pool.map_ordered(lambda engine, frame: engine.upscale(frame), frames))
    for a, frame in zip(together, frames, strict=True):
        assert torch.equal(a, single.upscale(frame))


def test_bench_model_time_is_at_most_end_to_end():
    engine = Engine(LocalNet(), _spec(), 2, device="cuda")
    result = bench.benchmark(engine, 256, 256, repeats=3)
    assert 0 < result.model_ms_per_frame <= result.end_to_end_ms_per_frame
