"""Engine behaviour with small synthetic networks: tiling, batching, padding, precision, NaN and OOM guards."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lightsr_cli.archs.spec import ArchSpec
from lightsr_cli.engine import Engine, resolve_device, resolve_precision
from lightsr_cli.errors import DeviceError, UsageError
from tests.markers import needs_c_compiler


class LocalNet(nn.Module):
    """A purely local x2 network (receptive field 5 px): tiled output must equal untiled output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x))


def _spec(**changes) -> ArchSpec:
    spec = ArchSpec(name="Toy", build=lambda scale: LocalNet(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    return dataclasses.replace(spec, **changes)


def _image(height=37, width=53, count=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 3, height, width, generator=generator)


def test_tiled_equals_untiled_for_a_local_network():
    net, image = LocalNet(), _image()
    whole = Engine(net, _spec(), 2, device="cpu", tile=0).upscale(image)
    tiled_engine = Engine(net, _spec(), 2, device="cpu", tile=8)
    tiled = tiled_engine.upscale(image)
    assert tiled_engine.stats.tile == 8 and tiled_engine.stats.patch_size > 8 and tiled_engine.stats.tiles > 4
    assert whole.shape == (1, 3, 74, 106)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_batch_one_equals_batch_n_and_images_are_independent():
    net, images = LocalNet(), _image(count=3)
    one = Engine(net, _spec(), 2, device="cpu", tile=8, batch=1).upscale(images)
    many = Engine(net, _spec(), 2, device="cpu", tile=8, batch=5).upscale(images)
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)
    single = Engine(net, _spec(), 2, device="cpu", tile=8).upscale(images[1:2])
    torch.testing.assert_close(many[1:2], single, atol=1e-6, rtol=0)


def test_small_inputs_are_padded_to_min_size_and_cropped_back():
    seen = []

    class NeedsSixteen(LocalNet):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            assert x.shape[-1] >= 16 and x.shape[-2] >= 16 and x.shape[-1] % 8 == 0
            return super().forward(x)

    out = Engine(NeedsSixteen(), _spec(min_size=16, size_multiple=8), 2, device="cpu").upscale(_image(5, 11))
    assert out.shape == (1, 3, 10, 22) and seen == [(16, 16)]


def test_input_range_is_applied_around_the_network():
    class Echo255(nn.Module):
        def forward(self, x):
            assert x.max() > 1.5  # saw the 0-255 range
            return nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    image = _image(8, 8)
    out = Engine(Echo255(), _spec(input_range=255.0), 2, device="cpu").upscale(image)
    torch.testing.assert_close(out[..., ::2, ::2], image)


def test_nan_in_half_precision_is_recomputed_in_fp32():
    class OverflowsInHalf(LocalNet):
        def forward(self, x):
            y = super().forward(x)
            if x.dtype != torch.float32:
                y = y * torch.tensor(float("nan"), dtype=y.dtype)
            return y

    image = _image(16, 16)
    engine = Engine(OverflowsInHalf(), _spec(), 2, device="cpu", precision="bf16")
    assert engine.precision == "bf16"
    out = engine.upscale(image)
    assert torch.isfinite(out).all() and engine.stats.fp32_fallbacks == 1
    reference = Engine(LocalNet(), _spec(), 2, device="cpu").upscale(image)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_out_of_memory_halves_the_tile_until_it_fits():
    class SmallMemory(LocalNet):
        def forward(self, x):
            if x.shape[-1] * x.shape[-2] > 48 * 48:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    image = _image(100, 90)
    engine = Engine(SmallMemory(), _spec(), 2, device="cpu", tile=None)
    out = engine.upscale(image)
    assert engine.stats.oom_retries >= 1 and out.shape == (1, 3, 200, 180)
    torch.testing.assert_close(out, Engine(LocalNet(), _spec(), 2, device="cpu").upscale(image), atol=1e-5, rtol=0)


def test_automatic_tile_uses_the_whole_image_when_it_fits():
    engine = Engine(LocalNet(), _spec(), 2, device="cpu")
    assert engine.auto_tile_size(480, 640) == 0
    huge = dataclasses.replace(_spec(), activation_bytes_per_pixel=1 << 40)
    assert Engine(LocalNet(), huge, 2, device="cpu").auto_tile_size(480, 640) > 0


def test_self_ensemble_of_an_equivariant_network_changes_nothing():
    class Nearest(nn.Module):
        def forward(self, x):
            return nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    image = _image(9, 14)
    plain = Engine(Nearest(), _spec(), 2, device="cpu").upscale(image)
    ensemble = Engine(Nearest(), _spec(), 2, device="cpu", tta=True).upscale(image)
    torch.testing.assert_close(plain, ensemble)


def test_device_and_precision_choices():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UsageError):
        resolve_device("toaster")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, _spec())[0] == torch.float32
    dtype, note = resolve_precision("fp16", cpu, _spec(fp16_safe=False))
    assert dtype == torch.bfloat16 and "not proven safe in fp16" in note
    dtype, note = resolve_precision("bf16", cpu, _spec(bf16_safe=False))
    assert dtype == torch.float32 and note
    with pytest.raises(UsageError):
        Engine(LocalNet(), _spec(), 2, device="cpu", batch=0)


def _claims_channels_last(arch: str) -> bool:
    from lightsr_cli.archs import get_spec

    return get_spec(arch).channels_last


@pytest.mark.parametrize("arch", [a for a in ("BSRN", "A2N", "EMT", "PlainUSR", "GRL") if _claims_channels_last(a)])
def test_memory_format_trait_is_truthful(arch):
    """Archs that claim channels_last must compute the same in it (the engine uses it on every device)."""
    from lightsr_cli.archs import get_spec
    from lightsr_cli.registry import CARDS

    spec = get_spec(arch)
    card = next(c for c in CARDS if c.arch == arch and c.scale == 2)
    torch.manual_seed(0)
    network = spec.build(scale=2, **dict(card.hyperparameters)).eval()
    x = torch.rand(1, 3, 34, 38) * spec.input_range
    with torch.inference_mode():
        reference = network(x)
        network = network.to(memory_format=torch.channels_last)
        nhwc = network(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, reference, atol=1e-3 * spec.input_range, rtol=1e-3)


@pytest.mark.parametrize("tile", [0, 8])
@pytest.mark.parametrize("input_range", [1.0, 255.0])
def test_uint8_in_and_out_equals_the_float_path(tile, input_range):
    """8-bit pixels travel as uint8 and are scaled and rounded on the device: same pixels as via float."""
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8, generator=generator)
    engine = Engine(LocalNet(), _spec(input_range=input_range), 2, device="cpu", tile=tile, batch=2)
    via_float = engine.upscale(pixels.float() / 255).clamp(0, 1).mul(255).round().to(torch.uint8)
    direct = engine.upscale(pixels, to_uint8=True)
    assert direct.dtype == torch.uint8 and direct.shape == (2, 3, 74, 106)
    if input_range == 1.0:
        torch.testing.assert_close(direct, via_float, atol=0, rtol=0)
    else:  # the float path carries (p / 255) * 255, which is not always exactly p
        assert (direct.int() - via_float.int()).abs().max() <= 1


@needs_c_compiler
def test_compiled_engine_matches_eager_and_does_not_recompile_per_frame():
    """--compile: same output as eager within 1e-3, and a second frame of the same size reuses the graph."""
    from torch._dynamo.utils import counters

    from lightsr_cli.archs import get_spec

    spec = get_spec("BSRN")
    torch.manual_seed(0)
    network = spec.build(scale=4, num_feat=16, num_block=1).eval()
    # 72x100 with --tile 24 cuts 2 x 3 tiles of one shape; batch 4 leaves a short last batch to pad.
    frames = _image(72, 100, count=3)
    eager = Engine(network, spec, 4, device="cpu", tile=24, batch=4)
    compiled = Engine(network, spec, 4, device="cpu", tile=24, batch=4, compile=True)
    expected = eager.upscale(frames[:1])
    torch.testing.assert_close(compiled.upscale(frames[:1]), expected, atol=1e-3, rtol=0)
    assert compiled.compiled, compiled.stats.notes  # it did not fall back to eager
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the counter does count compiled graphs
    for index in (1, 2):
        torch.testing.assert_close(compiled.upscale(frames[index:index + 1]), eager.upscale(frames[index:index + 1]),
                                   atol=1e-3, rtol=0)
    assert counters["stats"]["unique_graphs"] == graphs


class Doubles(nn.Module):
    """A network and, as its 'CPU inference form', a differently-built module of the same function."""

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class DoublesFast(Doubles):
    def __init__(self, network):
        super().__init__()
        self.network = network


@pytest.mark.parametrize(("precision", "compile", "uses_form"),
                         [("fp32", False, True), ("fp16", False, True), ("bf16", False, True), ("fp32", True, False)])
def test_cpu_inference_form_is_used_for_eager_networks_on_the_cpu_only(precision, compile, uses_form):
    built = []
    spec = _spec(cpu_inference_form=lambda network: built.append(network) or DoublesFast(network))
    engine = Engine(Doubles(), spec, 2, device="cpu", precision=precision, compile=compile)
    assert isinstance(engine._eager_network, DoublesFast) is uses_form
    assert len(built) == int(uses_form)
    image = _image()
    expected = Engine(Doubles(), _spec(), 2, device="cpu").upscale(image)
    torch.testing.assert_close(engine.upscale(image), expected, atol=1e-6 if precision == "fp32" else 0.01, rtol=0)
