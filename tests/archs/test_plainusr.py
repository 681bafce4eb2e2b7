"""PlainUSR (folded inference networks): strict loading, parity, detection, precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightsr_cli.archs import plainusr
from lightsr_cli.archs.plainusr import SPEC, SoftPool2d, build, soft_pool2d
from lightsr_cli.checkpoints import unwrap_state_dict

# checkpoint stem -> hyperparameters detect() must report (widths inferred from the official files)
ULTRA_U = {"block": "ultra", "n_feat": 16, "im_feat": [16, 8], "attn_feat": 4}
ULTRA_T = {"block": "ultra", "n_feat": 32, "im_feat": [32, 16], "attn_feat": 4}
GENERAL_S = {"block": "general", "n_feat": 32, "im_feat": [32, 16, 8], "attn_feat": 4}
GENERAL_M = {"block": "general", "n_feat": 48, "im_feat": [48, 32, 16], "attn_feat": 8}
GENERAL_BASE = {"block": "general", "n_feat": 64, "im_feat": [64, 48, 32], "attn_feat": 16}
LARGE_L = {"block": "large", "n_feat": 80, "im_feat": [80, 64, 48], "attn_feat": 16}
VARIANTS = {"U": ULTRA_U, "T": ULTRA_T, "S": GENERAL_S, "M": GENERAL_M, "": GENERAL_BASE, "L": LARGE_L}
CHECKPOINTS = {
    f"PlainUSR{tag}_Rep_x{scale}": {"scale": scale, **params}
    for tag, params in VARIANTS.items()
    for scale in (2, 4)
}

FP16_EXP_LIMIT = 11.09  # exp(v) is inf in fp16 above this


def _load(official_weights: Path, stem: str) -> dict[str, torch.Tensor]:
    state = torch.load(official_weights / "PlainUSR" / f"{stem}.pth", map_location="cpu", weights_only=True)
    return SPEC.prepare_state_dict(state)


def _model(official_weights: Path, stem: str) -> torch.nn.Module:
    state = _load(official_weights, stem)
    model = build(**CHECKPOINTS[stem])
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or mis-shaped key
    return model.eval()


def _reference_soft_pool(x: torch.Tensor, k: int = 7, s: int = 3) -> torch.Tensor:
    """Soft pooling in float64 as an explicit softmax over each unfolded window."""
    n, c, h, w = x.shape
    cols = F.unfold(x.double(), k, stride=s).view(n, c, k * k, -1)
    pooled = (torch.softmax(cols, dim=2) * cols).sum(dim=2)
    return pooled.view(n, c, (h - k) // s + 1, (w - k) // s + 1)


def _upstream_soft_pool(x: torch.Tensor, k: int = 7, s: int = 3) -> torch.Tensor:
    """The official formula, evaluated in the input dtype (the fp16 hazard)."""
    e = torch.exp(x)
    return F.avg_pool2d(e * x, k, s) / F.avg_pool2d(e, k, s)


# --- loading, parity, detection ------------------------------------------------------------------


@pytest.mark.parametrize("stem", sorted(CHECKPOINTS))
def test_official_checkpoint_loads_strictly_and_matches_reference(official_weights, parity_dir, stem):
    model = _model(official_weights, stem)
    fixture = np.load(parity_dir / f"PlainUSR__{stem}.npz")
    assert int(fixture["scale"]) == CHECKPOINTS[stem]["scale"]
    with torch.inference_mode():
        sr = model(torch.from_numpy(fixture["lr"])).numpy()
    assert sr.shape == fixture["sr"].shape
    assert float(np.abs(sr - fixture["sr"]).max()) <= 1e-4


@pytest.mark.parametrize("stem", sorted(CHECKPOINTS))
def test_detect_reads_block_widths_and_scale(official_weights, stem):
    assert SPEC.detect(_load(official_weights, stem)) == CHECKPOINTS[stem]


def test_detect_rejects_other_architectures(official_weights):
    others = [p for arch in ("BSRN", "A2N", "EMT") for p in sorted((official_weights / arch).glob("*.pt*"))]
    assert len(others) == 9
    for path in others:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("params", state)
        assert SPEC.detect(state) is None, path.name


def test_detect_rejects_damaged_plainusr_state(official_weights):
    state = _load(official_weights, "PlainUSRS_Rep_x4")
    missing = {k: v for k, v in state.items() if k != "block3.body.2.bias"}
    assert SPEC.detect(missing) is None
    extra = dict(state, **{"block5.body.0.weight": torch.zeros(1)})
    assert SPEC.detect(extra) is None
    reshaped = dict(state, **{"blockm.body.3.body.3.weight": torch.zeros(8, 4, 1, 1)})
    assert SPEC.detect(reshaped) is None
    assert SPEC.detect({}) is None


def test_prepare_state_dict_strips_module_prefix(official_weights):
    state = _load(official_weights, "PlainUSRU_Rep_x2")
    wrapped = {f"module.{k}": v for k, v in state.items()}
    prepared = SPEC.prepare_state_dict(unwrap_state_dict(wrapped))
    assert prepared.keys() == state.keys()
    assert SPEC.detect(prepared) == CHECKPOINTS["PlainUSRU_Rep_x2"]


def test_spec_traits():
    assert SPEC.name == "PlainUSR"
    assert SPEC.input_range == 1.0
    assert SPEC.min_size == 7 and SPEC.size_multiple == 1
    # tile origins (k * tile - overlap) must stay on the 6-px importance-map grid
    assert SPEC.tile_multiple % 6 == 0 and SPEC.tile_overlap % 6 == 0 and SPEC.tile_overlap >= 18
    assert SPEC.fp16_safe and SPEC.bf16_safe
    assert "ACCV 2024" in SPEC.paper


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [GENERAL_S, LARGE_L], ids=["general", "large"])
def test_pooled_blocks_accept_any_size_from_7_px(params):
    torch.manual_seed(0)
    model = build(scale=3, **params)
    with torch.inference_mode():
        for h, w in [(7, 7), (7, 11), (13, 8), (20, 9)]:
            assert model(torch.rand(1, 3, h, w)).shape == (1, 3, 3 * h, 3 * w)
        with pytest.raises(ValueError, match="at least 7x7"):
            model(torch.rand(1, 3, 6, 12))


def test_ultra_has_no_size_minimum():
    model = build(scale=2, **ULTRA_U)
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 1, 5)).shape == (1, 3, 2, 10)


def test_build_validates_widths():
    with pytest.raises(ValueError):
        build(scale=4, block="general", n_feat=32, im_feat=[32, 16])
    with pytest.raises(ValueError):
        build(scale=4, block="ultra", n_feat=16, im_feat=[32, 8])
    with pytest.raises(ValueError):
        build(scale=4, block="huge")


def test_training_path_matches_inplace_inference_and_backpropagates():
    torch.manual_seed(0)
    model = build(scale=2, **GENERAL_S)
    x = torch.rand(1, 3, 16, 14)
    with torch.inference_mode():
        expected = model(x)
    out = model(x)
    assert torch.equal(out, expected)
    out.mean().backward()
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()


# --- precision -----------------------------------------------------------------------------------


def test_soft_pool_fp32_is_the_upstream_formula_on_ordinary_values():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 23, 17) * 6
    assert torch.equal(soft_pool2d(x), _upstream_soft_pool(x))
    assert torch.allclose(soft_pool2d(x).double(), _reference_soft_pool(x), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_pool_stays_finite_on_large_activations(dtype):
    torch.manual_seed(0)
    # Values up to ~30: exp() overflows fp16 (limit ~11.1), the official formula returns NaN there.
    x = (torch.randn(1, 4, 31, 29) * 5 + 12).to(dtype)
    if dtype == torch.float16:
        assert not torch.isfinite(_upstream_soft_pool(x)).all()
    pooled = soft_pool2d(x)
    assert pooled.dtype == dtype and torch.isfinite(pooled).all()
    ref = _reference_soft_pool(x.float())
    assert torch.allclose(pooled.double(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("offset", [150.0, -150.0])
def test_soft_pool_handles_values_beyond_fp32_exp_range(dtype, offset):
    # exp overflows (v > 88.7) or underflows (v < -103) in fp32 and bf16 alike: the shift must cancel.
    torch.manual_seed(0)
    x = (torch.randn(1, 3, 19, 22) * 3 + offset).to(dtype)
    assert not torch.isfinite(_upstream_soft_pool(x.float())).all()
    pooled = soft_pool2d(x)
    assert torch.isfinite(pooled).all()
    tol = 1e-4 if dtype == torch.float32 else 2.0  # bf16 spacing near 150 is 1.0
    assert torch.allclose(pooled.double(), _reference_soft_pool(x.float()), rtol=0, atol=tol)


@pytest.fixture(scope="module")
def hot_crop(shared_dir):
    """A crop of Set14 img_013 (x4 LR) where PlainUSR-S's soft-pool input exceeds the fp16 exp limit."""
    import cv2  # a dependency of the package

    bgr = cv2.imread(str(shared_dir / "data" / "benchmarks" / "Set14" / "x4" / "LR" / "img_013.png"), cv2.IMREAD_COLOR)
    assert bgr is not None
    rgb = np.ascontiguousarray(bgr[:, :, ::-1]).astype(np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None, :, CROP_ROWS, CROP_COLS].contiguous()


CROP_ROWS = slice(0, 48)
CROP_COLS = slice(84, 132)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def test_real_image_reaches_fp16_overflow_in_soft_pool(official_weights, hot_crop):
    model = _model(official_weights, "PlainUSRS_Rep_x4")
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
        for m in model.modules()
        if isinstance(m, SoftPool2d)
    ]
    with torch.inference_mode():
        model(hot_crop)
    for hook in hooks:
        hook.remove()
    hottest = max(seen, key=lambda t: float(t.max()))
    assert float(hottest.max()) > FP16_EXP_LIMIT
    # The official arithmetic in fp16 breaks on this real activation; ours does not.
    assert not torch.isfinite(_upstream_soft_pool(hottest.half())).all()
    ours = soft_pool2d(hottest.half())
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours.float(), soft_pool2d(hottest), atol=2e-2, rtol=2e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_forward_close_to_fp32_on_real_image(official_weights, hot_crop, dtype, monkeypatch):
    model = _model(official_weights, "PlainUSRS_Rep_x4")
    with torch.inference_mode():
        ref = model(hot_crop)
        low = model.to(dtype)(hot_crop.to(dtype))
        assert low.dtype == dtype
        low = low.float()
        assert torch.isfinite(low).all()
        # measured: bf16 50.1 dB, fp16 69.4 dB
        assert _psnr(low, ref) > (45.0 if dtype == torch.bfloat16 else 60.0)
        if dtype == torch.float16:
            # Same network with the upstream fp16 soft pool: the hazard this module removes.
            monkeypatch.setattr(plainusr, "soft_pool2d", _upstream_soft_pool)
            assert not torch.isfinite(model(hot_crop.to(dtype))).all()


# --- tiling --------------------------------------------------------------------------------------


def _tiled(model: torch.nn.Module, x: torch.Tensor, tile: int, overlap: int, scale: int) -> torch.Tensor:
    """Core tiles at multiples of ``tile``, each run with ``overlap`` px of context per side."""
    _, _, h, w = x.shape
    out = torch.zeros(1, 3, h * scale, w * scale)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa, yb, xb = max(0, y0 - overlap), max(0, x0 - overlap), min(h, y1 + overlap), min(w, x1 + overlap)
            sr = model(x[:, :, ya:yb, xa:xb])
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                :, :, (y0 - ya) * scale : (y1 - ya) * scale, (x0 - xa) * scale : (x1 - xa) * scale
            ]
    return out


def test_grid_aligned_tiling_stays_close_to_whole_image(official_weights, shared_dir):
    import cv2  # a dependency of the package

    bgr = cv2.imread(str(shared_dir / "data" / "benchmarks" / "Set14" / "x4" / "LR" / "img_013.png"), cv2.IMREAD_COLOR)
    x = torch.from_numpy(np.ascontiguousarray(bgr[:96, :96, ::-1]).astype(np.float32) / 255).permute(2, 0, 1)[None]
    model = _model(official_weights, "PlainUSRS_Rep_x4")
    tile = 8 * SPEC.tile_multiple
    with torch.inference_mode():
        whole = model(x)
        aligned = _tiled(model, x, tile, SPEC.tile_overlap, 4)
        misaligned = _tiled(model, x, tile, SPEC.tile_overlap - 4, 4)
    # measured: 58.5 dB aligned (48 px tiles, 24 px overlap) vs 45.8 dB with a 20 px overlap
    assert _psnr(aligned, whole) > 55.0
    assert _psnr(aligned, whole) > _psnr(misaligned, whole) + 6.0
