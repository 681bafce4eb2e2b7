"""BSRN / BSRN-S: strict loading, parity with the official outputs, detection, size and precision."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightsr_cli.archs import bsrn
from lightsr_cli.archs.bsrn import SPEC
from lightsr_cli.checkpoints import unwrap_state_dict

# checkpoint stem -> (scale, hyperparameters as the registry passes them, official param count)
OFFICIAL = {
    "net_g_BSRN_x2": (2, {"variant": "bsrn", "num_feat": 64, "num_block": 8}, 331_628),
    "net_g_BSRN_x3": (3, {"variant": "bsrn", "num_feat": 64, "num_block": 8}, 340_283),
    "net_g_BSRN_x4": (4, {"variant": "bsrn", "num_feat": 64, "num_block": 8}, 352_400),
    "net_g_BSRN-S": (4, {"variant": "bsrn-s", "num_feat": 48, "num_block": 5}, 156_288),
}
STEMS = list(OFFICIAL)


@pytest.fixture(autouse=True)
def _two_threads():
    """CI has two cores shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return SPEC.prepare_state_dict(unwrap_state_dict(obj))


_MODELS: dict[str, torch.nn.Module] = {}


def _model(official_weights: Path, stem: str) -> torch.nn.Module:
    """The official checkpoint in our module, loaded strictly (cached across tests)."""
    if stem not in _MODELS:
        scale, hyper, _ = OFFICIAL[stem]
        model = SPEC.build(scale=scale, **hyper)
        model.load_state_dict(_state_dict(official_weights / "BSRN" / f"{stem}.pth"), strict=True)
        _MODELS[stem] = model.eval()
    return _MODELS[stem]


def _set14_crop(shared_dir: Path, size: int = 32) -> torch.Tensor:
    """A textured real LR patch (baboon, Set14 x4), RGB float32 in [0,1], 1x3xsize x size."""
    path = shared_dir / "data" / "benchmarks" / "Set14" / "x4" / "LR" / "img_001.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    h, w = bgr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    rgb = bgr[top : top + size, left : left + size, ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# --------------------------------------------------------------------------------------------
# Checkpoints and parity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", STEMS)
def test_official_checkpoint_loads_strict(official_weights, stem):
    scale, hyper, n_params = OFFICIAL[stem]
    model = SPEC.build(scale=scale, **hyper)
    # strict=True raises on any missing, unexpected or mis-shaped key.
    model.load_state_dict(_state_dict(official_weights / "BSRN" / f"{stem}.pth"), strict=True)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert not model.training


@pytest.mark.parametrize("stem", STEMS)
def test_parity_with_official_output(official_weights, parity_dir, stem):
    data = np.load(parity_dir / f"BSRN__{stem}.npz")
    scale = OFFICIAL[stem][0]
    assert int(data["scale"]) == scale
    lr = torch.from_numpy(data["lr"])
    with torch.inference_mode():
        sr = _model(official_weights, stem)(lr).numpy()
    assert sr.shape == data["sr"].shape == (1, 3, 40 * scale, 36 * scale)
    max_diff = float(np.abs(sr - data["sr"]).max())
    assert max_diff <= 1e-4, f"{stem}: max |diff| {max_diff:.3g}"


@pytest.mark.parametrize("stem", STEMS)
def test_cpu_inference_form_reproduces_official_output(official_weights, parity_dir, stem):
    """The oneDNN form (sums instead of concatenations, fused activations) is the same function."""
    data = np.load(parity_dir / f"BSRN__{stem}.npz")
    model = copy.deepcopy(_model(official_weights, stem)).to(memory_format=torch.channels_last)
    fast = SPEC.cpu_inference_form(model)
    if fast is model:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    assert isinstance(fast, bsrn.OneDnnBSRN)
    lr = torch.from_numpy(data["lr"]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        sr = fast(lr).numpy()
    max_diff = float(np.abs(sr - data["sr"]).max())
    assert max_diff <= 1e-4, f"{stem}: max |diff| {max_diff:.3g}"


@pytest.mark.parametrize("stem", ["net_g_BSRN_x4", "net_g_BSRN-S"])
def test_cpu_inference_form_matches_network_on_a_batch_of_odd_sizes(official_weights, shared_dir, stem):
    model = _model(official_weights, stem)
    fast = SPEC.cpu_inference_form(model)
    if fast is model:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    crop = _set14_crop(shared_dir, 48)[..., :37, :45]  # odd sides, not a multiple of anything
    batch = torch.cat([crop, crop.flip(-1)])
    for x in (batch, batch.contiguous(memory_format=torch.channels_last)):
        with torch.inference_mode():
            expected, got = model(x), fast(x)
        assert got.shape == expected.shape == (2, 3, 37 * 4, 45 * 4)
        assert float((got - expected).abs().max()) <= 1e-5
    assert [p.data_ptr() for p in fast.parameters()] == [p.data_ptr() for p in model.parameters()]


@pytest.mark.parametrize(("dtype", "levels"), [(torch.float16, 1), (torch.bfloat16, 4)])
@pytest.mark.parametrize("stem", ["net_g_BSRN_x4", "net_g_BSRN-S"])
def test_cpu_inference_form_in_half_precision_stays_within_rounding_of_that_network(official_weights, shared_dir,
                                                                                    stem, dtype, levels):
    """fp16 and bf16 on the CPU (auto on CPUs with AMX-FP16 or AVX512-BF16) run the form too; the two sum in
    other orders, so they agree to that precision's rounding on a real picture: within one 8-bit level in
    fp16; in bf16 (8 mantissa bits, one output step is a level near 1.0) a few levels."""
    model = copy.deepcopy(_model(official_weights, stem)).to(dtype).to(memory_format=torch.channels_last)
    fast = SPEC.cpu_inference_form(model)
    if fast is model:
        pytest.skip(f"this torch build has no oneDNN fused convolutions in {dtype}")
    assert isinstance(fast, bsrn.OneDnnBSRN)
    crop = _set14_crop(shared_dir, 48)[..., :37, :45].to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = model(crop).float(), fast(crop).float()
    assert got.shape == expected.shape == (1, 3, 37 * 4, 45 * 4)
    assert 0 < float((got - expected).abs().max()) <= levels / 255


def test_cpu_inference_form_leaves_other_networks_alone():
    other = torch.nn.Conv2d(3, 3, 3)
    assert SPEC.cpu_inference_form(other) is other


def test_cpu_inference_form_falls_back_where_it_disagrees(official_weights, monkeypatch):
    """A oneDNN build that computes something else (or fails) keeps the network as built."""
    model = _model(official_weights, "net_g_BSRN-S")
    monkeypatch.setattr(bsrn, "_add_pointwise", lambda total, x, weight: total)
    assert SPEC.cpu_inference_form(model) is model

    def unsupported(*args):
        raise RuntimeError("mkldnn_convolution_pointwise: unsupported")

    monkeypatch.setattr(bsrn, "_add_pointwise", unsupported)
    assert SPEC.cpu_inference_form(model) is model


# --------------------------------------------------------------------------------------------
# Detection and checkpoint preparation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", STEMS)
def test_detect_recognises_official_files(official_weights, stem):
    scale, hyper, _ = OFFICIAL[stem]
    assert SPEC.detect(_state_dict(official_weights / "BSRN" / f"{stem}.pth")) == {"scale": scale, **hyper}


def test_detect_rejects_other_architectures(official_weights):
    others = [
        p for p in sorted(official_weights.glob("*/*")) if p.parent.name != "BSRN" and p.suffix in (".pth", ".pt")
    ]
    assert len(others) >= 10, others  # A2N, EMT and PlainUSR files
    for path in others:
        assert SPEC.detect(_state_dict(path)) is None, path


def test_detect_rejects_altered_bsrn(official_weights):
    sd = _state_dict(official_weights / "BSRN" / "net_g_BSRN_x4.pth")
    # one block's channel attention missing
    missing = {k: v for k, v in sd.items() if not k.startswith("B3.cca.")}
    assert SPEC.detect(missing) is None
    # an extra, unknown tensor
    assert SPEC.detect({**sd, "B1.extra.weight": torch.zeros(1)}) is None
    # a shape that no BSRN has
    assert SPEC.detect({**sd, "B2.c5.weight": torch.zeros(64, 96, 1, 1)}) is None
    # an upsampler that is not 3*s*s channels
    assert SPEC.detect({**sd, "upsampler.upsampleOneStep.0.weight": torch.zeros(47, 64, 3, 3)}) is None
    assert SPEC.detect({}) is None


def test_prepare_state_dict_strips_module_prefix(official_weights):
    sd = _state_dict(official_weights / "BSRN" / "net_g_BSRN-S.pth")
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    prepared = SPEC.prepare_state_dict(unwrap_state_dict(wrapped))
    assert list(prepared) == list(sd)
    assert SPEC.detect(prepared) == {"scale": 4, **OFFICIAL["net_g_BSRN-S"][1]}


def test_spec_traits_and_build_arguments():
    assert SPEC.name == "BSRN"
    assert SPEC.input_range == 1.0
    assert SPEC.min_size == 15
    assert SPEC.size_multiple == 1
    for scale in (2, 3, 4):
        model = SPEC.build(scale=scale, variant="bsrn", num_feat=64, num_block=8)
        assert model.upsampler.upsampleOneStep[0].out_channels == 3 * scale * scale
    small = SPEC.build(scale=2, variant="bsrn-s", num_feat=16, num_block=2)
    with torch.inference_mode():
        assert small(torch.rand(1, 3, 17, 19)).shape == (1, 3, 34, 38)
    with pytest.raises(ValueError):
        SPEC.build(scale=4, variant="bsrn-xl")


# --------------------------------------------------------------------------------------------
# Minimum size
# --------------------------------------------------------------------------------------------


def test_min_size_is_tight_and_padding_recovers(official_weights):
    """Below 15 px the ESA's unpadded stride-2 conv leaves the 7x7 pool too small a map."""
    model = _model(official_weights, "net_g_BSRN-S")
    m = SPEC.min_size
    with torch.inference_mode():
        assert model(torch.rand(1, 3, m, m)).shape == (1, 3, 4 * m, 4 * m)
        for shape in ((m - 1, 32), (32, m - 1)):
            with pytest.raises(RuntimeError):
                model(torch.rand(1, 3, *shape))
        # what the engine does for small inputs: pad up to min_size, run, crop back
        lr = torch.rand(1, 3, 9, 12)
        padded = F.pad(lr, (0, m - 12, 0, m - 9), mode="replicate")
        sr = model(padded)[..., : 9 * 4, : 12 * 4]
    assert sr.shape == (1, 3, 36, 48) and torch.isfinite(sr).all()


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


def _upstream_style_stats(x: torch.Tensor) -> torch.Tensor:
    """CCA's descriptor computed the way the official code does: plain sums over H and W."""
    n = x.size(2) * x.size(3)
    mean = x.sum(3, keepdim=True).sum(2, keepdim=True) / n
    var = (x - mean).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / n
    return var.pow(0.5) + F.adaptive_avg_pool2d(x, 1)


def test_contrast_stats_match_upstream_in_fp32():
    x = torch.randn(2, 8, 33, 47) * 3 + 1
    assert torch.allclose(bsrn.contrast_stats(x), _upstream_style_stats(x), rtol=1e-5, atol=1e-6)
    assert bsrn.contrast_stats(x).dtype == torch.float32


def test_contrast_stats_do_not_overflow_fp16_on_720p_map():
    g = torch.Generator().manual_seed(0)
    x32 = torch.randn(1, 4, 720, 1280, generator=g) * 2 + 3  # mean 3, std 2 per channel
    x16 = x32.half()
    # the hazard is real: summing a 720p map in fp16 overflows (921,600 px x ~3 >> 65,504)
    assert not torch.isfinite(_upstream_style_stats(x16)).all()
    stats = bsrn.contrast_stats(x16)
    assert stats.dtype == torch.float16
    assert torch.isfinite(stats).all()
    expected = _upstream_style_stats(x16.double())
    assert torch.allclose(stats.double(), expected, rtol=2e-3)
    # and the whole CCA layer stays finite in half precision
    cca = bsrn.ContrastChannelAttention(4, reduction=2).half().eval()
    with torch.inference_mode():
        assert torch.isfinite(cca(x16)).all()


@pytest.mark.parametrize(
    ("stem", "dtype", "min_psnr"),
    [
        # measured on this patch: bf16 ~51.7 / ~52.7 dB, fp16 ~70.6 dB
        ("net_g_BSRN_x4", torch.bfloat16, 45.0),
        ("net_g_BSRN-S", torch.bfloat16, 45.0),
        ("net_g_BSRN_x4", torch.float16, 60.0),
    ],
)
def test_low_precision_forward_close_to_fp32(official_weights, shared_dir, stem, dtype, min_psnr):
    """A plain ``.to(dtype)`` of the whole network stays finite and close to fp32 on a real patch."""
    lr = _set14_crop(shared_dir)
    model = _model(official_weights, stem)
    low = SPEC.build(scale=OFFICIAL[stem][0], **OFFICIAL[stem][1])
    low.load_state_dict(model.state_dict())
    low = low.to(dtype)
    with torch.inference_mode():
        ref = model(lr)
        out = low(lr.to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    psnr = _psnr(out, ref)
    assert psnr > min_psnr, f"{stem} {dtype}: {psnr:.2f} dB vs fp32"
