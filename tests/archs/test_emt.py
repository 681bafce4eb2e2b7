"""EMT: strict loading, parity with the official outputs, detection, reduced precision, small inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightsr_cli.archs import emt
from lightsr_cli.archs.emt import SPEC
from lightsr_cli.checkpoints import unwrap_state_dict

SCALES = (2, 3, 4)
OFFICIAL_HPARAMS = {
    "dim": 60,
    "n_blocks": 6,
    "n_layers": 6,
    "num_heads": 3,
    "mlp_ratio": 2,
    "n_GTLs": 2,
    "window_list": ((32, 8), (8, 32)),
    "shift_list": ((16, 4), (4, 16)),
}
# every nn.Parameter (incl. fixed masks and mean shifts) / trainable ones, from official_scores.json
OFFICIAL_PARAM_COUNTS = {2: (741_876, 670_572), 3: (749_991, 678_687), 4: (761_352, 690_048)}


def _raw_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))


_MODELS: dict[int, torch.nn.Module] = {}


def _model(official_weights: Path, scale: int) -> torch.nn.Module:
    if scale not in _MODELS:
        sd = SPEC.prepare_state_dict(_raw_state_dict(official_weights / "EMT" / f"EMT_LSR_x{scale}.pth"))
        model = SPEC.build(scale=scale, **OFFICIAL_HPARAMS)
        model.load_state_dict(sd, strict=True)
        _MODELS[scale] = model.eval()
    return _MODELS[scale]


def _set14_crop(shared_dir: Path, rows: int = 40, cols: int = 48) -> torch.Tensor:
    """A real LR patch (RGB, [0,255], 1x3xHxW) with texture: Set14 x4 img_003, top-left corner."""
    import cv2  # a dependency of the package

    bgr = cv2.imread(str(shared_dir / "data" / "benchmarks" / "Set14" / "x4" / "LR" / "img_003.png"), cv2.IMREAD_COLOR)
    rgb = np.ascontiguousarray(bgr[:rows, :cols, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()


# ---------------------------------------------------------------------------------------------
# Loading and parity with the official implementation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_official_checkpoint_loads_strictly(official_weights: Path, scale: int) -> None:
    sd = SPEC.prepare_state_dict(_raw_state_dict(official_weights / "EMT" / f"EMT_LSR_x{scale}.pth"))
    model = SPEC.build(scale=scale, **OFFICIAL_HPARAMS)
    model.load_state_dict(sd, strict=True)  # raises on any missing, unexpected or mis-shaped key
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == OFFICIAL_PARAM_COUNTS[scale]
    # The fixed tensors the checkpoint carries equal what a fresh build would create.
    fresh = SPEC.build(scale=scale)
    for name, p in fresh.named_parameters():
        if not p.requires_grad:
            assert torch.allclose(p, sd[name], atol=1e-4), name


@pytest.mark.parametrize("scale", SCALES)
def test_parity_with_official_output(official_weights: Path, parity_dir: Path, scale: int) -> None:
    fixture = np.load(parity_dir / f"EMT__EMT_LSR_x{scale}.npz")
    lr = torch.from_numpy(fixture["lr"])
    assert tuple(lr.shape) == (1, 3, 40, 36)  # 40 and 36 are not window multiples: exercises the padding
    model = _model(official_weights, scale)
    with torch.inference_mode():
        sr = model(lr * SPEC.input_range) / SPEC.input_range
    ref = torch.from_numpy(fixture["sr"])
    assert sr.shape == ref.shape == (1, 3, 40 * scale, 36 * scale)
    assert (sr - ref).abs().max().item() <= 1e-4


# ---------------------------------------------------------------------------------------------
# Detection and checkpoint preparation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_detect_reads_scale_and_hyperparameters(official_weights: Path, scale: int) -> None:
    sd = SPEC.prepare_state_dict(_raw_state_dict(official_weights / "EMT" / f"EMT_LSR_x{scale}.pth"))
    found = SPEC.detect(sd)
    assert found == {"scale": scale, **OFFICIAL_HPARAMS}
    # what detect returns is exactly what build accepts
    SPEC.build(**found).load_state_dict(sd, strict=True)


def test_detect_rejects_other_architectures(official_weights: Path) -> None:
    others = [p for p in sorted(official_weights.glob("*/*.pt*")) if p.parent.name != "EMT"]
    assert {p.parent.name for p in others} >= {"BSRN", "A2N", "PlainUSR"}
    for path in others:
        sd = SPEC.prepare_state_dict(_raw_state_dict(path))
        assert SPEC.detect(sd) is None, path.name


def test_detect_rejects_partial_emt_state_dict(official_weights: Path) -> None:
    sd = SPEC.prepare_state_dict(_raw_state_dict(official_weights / "EMT" / "EMT_LSR_x4.pth"))
    assert SPEC.detect({k: v for k, v in sd.items() if not k.startswith("sub_mean.")}) is None
    assert SPEC.detect({k: v for k, v in sd.items() if not k.startswith("body.")}) is None


def test_prepare_state_dict_strips_module_prefix() -> None:
    model = SPEC.build(scale=2, n_blocks=1, n_layers=3)
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    prepared = SPEC.prepare_state_dict(unwrap_state_dict(wrapped))
    assert set(prepared) == set(model.state_dict())
    model.load_state_dict(prepared, strict=True)
    found = SPEC.detect(prepared)
    assert found is not None and found["scale"] == 2 and found["n_blocks"] == 1 and found["n_layers"] == 3
    assert found["n_GTLs"] == 2


def test_build_accepts_lists_like_the_yaml_config() -> None:
    model = SPEC.build(scale=3, window_list=[[32, 8], [8, 32]], shift_list=[[16, 4], [4, 16]])
    assert model.body[0].sa_list[0].windows == ((32, 8), (8, 32))
    assert model.body[0].sa_list[0].shifts == ((0, 0), (0, 0))  # first attention layer: no shift
    assert model.body[0].sa_list[1].shifts == ((16, 4), (4, 16))  # second: shifted windows
    assert isinstance(model.body[0].sa_list[2], emt._PixelMixLayer)


# ---------------------------------------------------------------------------------------------
# Window attention internals (checked against a plain per-window loop)
# ---------------------------------------------------------------------------------------------


def _attend_loop(qv: torch.Tensor, heads: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """Straightforward reference: pad, roll, then loop over windows and heads."""
    b, ch, h, w = qv.shape
    wh, ww = window
    padded = F.pad(qv, (0, (-w) % ww, 0, (-h) % wh), mode="reflect")
    padded = torch.roll(padded, shifts=shift, dims=(2, 3))
    c = ch // (2 * heads)
    q_all, v_all = padded[:, : ch // 2], padded[:, ch // 2 :]
    out = torch.zeros_like(q_all)
    for i in range(0, padded.shape[2], wh):
        for j in range(0, padded.shape[3], ww):
            for hd in range(heads):
                q = q_all[0, hd * c : (hd + 1) * c, i : i + wh, j : j + ww].reshape(c, -1).T
                v = v_all[0, hd * c : (hd + 1) * c, i : i + wh, j : j + ww].reshape(c, -1).T
                o = torch.softmax(q @ q.T, dim=-1) @ v
                out[0, hd * c : (hd + 1) * c, i : i + wh, j : j + ww] = o.T.reshape(c, wh, ww)
    out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    return out[:, :, :h, :w]


@pytest.mark.parametrize("shift", [(0, 0), (4, 2)])
def test_window_attention_matches_per_window_loop(shift: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    qv = torch.randn(1, 2 * 3 * 4, 13, 10, generator=gen)  # 13x10: not multiples of the 8x4 window
    got = emt._attend_in_windows(qv, heads=3, window=(8, 4), shift=shift)
    want = _attend_loop(qv, heads=3, window=(8, 4), shift=shift)
    assert got.shape == (1, 12, 13, 10)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_attention_computes_logits_in_fp32(dtype: torch.dtype) -> None:
    # |q|^2 = 8 * 120^2 = 115200 > fp16 max (65504): an fp16 q @ q^T would overflow to inf -> NaN.
    gen = torch.Generator().manual_seed(1)
    qv = (torch.randn(1, 2 * 1 * 8, 16, 16, generator=gen).sign() * 120).to(dtype)
    got = emt._attend_in_windows(qv, heads=1, window=(8, 8), shift=(0, 0))
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    want = emt._attend_in_windows(qv.float(), heads=1, window=(8, 8), shift=(0, 0))
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Reduced precision on a real image (CPU)
# ---------------------------------------------------------------------------------------------


def _reduced_precision_run(official_weights: Path, shared_dir: Path, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    import copy

    x = _set14_crop(shared_dir)
    ref_model = _model(official_weights, 4)
    low_model = copy.deepcopy(ref_model).to(dtype)
    with torch.inference_mode():
        ref = ref_model(x)
        low = low_model(x.to(dtype))  # torch >= 2.1 has CPU kernels for every op in both dtypes
    assert low.dtype == dtype
    return ref, low.float()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 255).round() - b.clamp(0, 255).round()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_bf16_on_cpu_is_finite_and_close(official_weights: Path, shared_dir: Path) -> None:
    ref, low = _reduced_precision_run(official_weights, shared_dir, torch.bfloat16)
    assert torch.isfinite(low).all()
    # bf16 keeps 8 mantissa bits: outputs near 255 are only resolved to ~1, so compare loosely.
    assert (low - ref).abs().mean().item() < 1.5
    assert _psnr(low, ref) > 40.0


def test_fp16_on_cpu_is_finite_and_close(official_weights: Path, shared_dir: Path) -> None:
    ref, low = _reduced_precision_run(official_weights, shared_dir, torch.float16)
    assert torch.isfinite(low).all()
    assert (low - ref).abs().mean().item() < 0.2
    assert _psnr(low, ref) > 50.0


def test_fp16_stays_finite_on_dithered_input_that_overflows_fp16_logits(
    official_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Bayer-dithered gradient (1-px 0/255 patterns) drives the unscaled logits far past fp16's
    65504 with the real weights; a plain fp16 q @ q^T turns the whole output into NaN there. The
    fp32 attention core keeps the fp16 forward finite."""
    import copy

    rows, cols = 24, 32
    yy, xx = np.mgrid[:rows, :cols]
    bayer = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]) / 16
    dithered = (xx / cols > bayer[yy % 4, xx % 4]).astype(np.float32) * 255
    x = torch.from_numpy(np.repeat(dithered[None, None], 3, axis=1))

    peak = {"logit": 0.0}
    attend = emt._attend_in_windows

    def recording(qv, heads, window, shift):
        b, ch, h, w = qv.shape
        q = qv[:, : ch // 2].float().reshape(b, heads, ch // (2 * heads), h, w)
        peak["logit"] = max(peak["logit"], (q * q).sum(2).max().item())  # = max diagonal of q @ q^T
        return attend(qv, heads, window, shift)

    monkeypatch.setattr(emt, "_attend_in_windows", recording)
    model = copy.deepcopy(_model(official_weights, 4)).half()
    with torch.inference_mode():
        y = model(x.half())
    assert peak["logit"] > 65504  # the input really is in the overflow regime
    assert torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(17, 17), (17, 23), (31, 20)])
def test_inputs_smaller_than_the_window_work(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SPEC.build(scale=2, n_blocks=1).eval()  # random weights: shapes and finiteness only
    x = torch.rand(1, 3, *size) * 255
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 2 * size[0], 2 * size[1])
    assert torch.isfinite(y).all()


def test_real_weights_on_input_smaller_than_the_window(official_weights: Path, shared_dir: Path) -> None:
    """A 17x20 input (smaller than every 32-px window side) runs with the real weights and gives a
    plausible image: close to bicubic (same content), far better than a flat guess."""
    x = _set14_crop(shared_dir, rows=17, cols=20)
    model = _model(official_weights, 2)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 34, 40)
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert (y - bicubic).abs().mean().item() < 8.0


def test_min_size_is_the_smallest_accepted_side() -> None:
    model = SPEC.build(scale=2, n_blocks=1, n_layers=2).eval()
    assert model.min_input_size == SPEC.min_size == 17
    with torch.inference_mode():
        model(torch.rand(1, 3, SPEC.min_size, 40) * 255)
        model(torch.rand(1, 3, 40, SPEC.min_size) * 255)
        with pytest.raises(ValueError, match="at least 17"):
            model(torch.rand(1, 3, SPEC.min_size - 1, 40) * 255)


def test_spec_traits() -> None:
    assert SPEC.name == "EMT"
    assert SPEC.input_range == 255.0
    assert SPEC.size_multiple == 1
    # tiles and overlaps in whole 32-px windows keep tile origins on the window grid
    assert SPEC.tile_multiple == 32
    assert SPEC.tile_overlap >= 32 and SPEC.tile_overlap % 32 == 0
    assert SPEC.fp16_safe and not SPEC.bf16_safe
    assert "Efficient Mixed Transformer" in SPEC.paper
