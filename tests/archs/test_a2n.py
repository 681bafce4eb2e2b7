"""A2N: strict loading of the official checkpoints, parity with the official outputs, detection,
reduced precision, and the official quadrant-chop inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightsr_cli.archs.a2n import A2N, SPEC, build, detect, forward_chop, prepare_state_dict
from lightsr_cli.checkpoints import unwrap_state_dict
from lightsr_cli.errors import ModelError

SCALES = (2, 3)
PARITY_TOL = 1e-4


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def a2n_state(official_weights: Path) -> dict[int, dict[str, torch.Tensor]]:
    return {s: prepare_state_dict(_load(official_weights / "A2N" / f"aan_x{s}.pt")) for s in SCALES}


@pytest.fixture(scope="module")
def a2n_models(a2n_state) -> dict[int, A2N]:
    models = {}
    for s, sd in a2n_state.items():
        model = SPEC.build(scale=s, nf=40, unf=24, nb=16)
        model.load_state_dict(sd, strict=True)
        models[s] = model.eval()
    return models


def _fixture(parity_dir: Path, scale: int) -> dict[str, np.ndarray]:
    with np.load(parity_dir / f"A2N__aan_x{scale}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("scale", SCALES)
def test_strict_load_and_param_count(official_weights: Path, scale: int) -> None:
    sd = prepare_state_dict(_load(official_weights / "A2N" / f"aan_x{scale}.pt"))
    model = build(scale=scale)
    model.load_state_dict(sd, strict=True)  # raises on any missing, unexpected or mis-shaped key
    # The count recorded by the official run (shared/reference/official_scores.json).
    assert sum(p.numel() for p in model.parameters()) == 1_036_443
    assert not model.training


@pytest.mark.parametrize("scale", SCALES)
def test_parity_with_official_output(a2n_models, parity_dir: Path, scale: int) -> None:
    data = _fixture(parity_dir, scale)
    assert int(data["scale"]) == scale
    lr = torch.from_numpy(data["lr"])
    model = a2n_models[scale]
    with torch.inference_mode():
        sr = model(lr * 255.0) / 255.0
        assert model.feature_gain != 1.0  # the default path is the range-folded one
        model.feature_gain = 1.0  # the official order of operations
        try:
            sr_literal = model(lr * 255.0) / 255.0
        finally:
            model.feature_gain = 1.0 / 255.0
    assert sr.shape == data["sr"].shape == (1, 3, 40 * scale, 36 * scale)
    assert np.abs(sr.numpy() - data["sr"]).max() <= PARITY_TOL
    assert np.abs(sr_literal.numpy() - data["sr"]).max() <= PARITY_TOL


@pytest.mark.parametrize("scale", SCALES)
def test_forward_chop_matches_official_chop(a2n_models, parity_dir: Path, scale: int) -> None:
    data = _fixture(parity_dir, scale)
    lr = torch.from_numpy(data["lr"])
    with torch.inference_mode():
        sr_chop = forward_chop(a2n_models[scale], lr * 255.0, scale) / 255.0
    assert np.abs(sr_chop.numpy() - data["sr_chop"]).max() <= PARITY_TOL
    # Chopping really is a different function for A2N (global pooling per patch).
    assert np.abs(data["sr_chop"] - data["sr"]).max() > 1e-3


@pytest.mark.parametrize("shape", [(26, 30), (27, 31), (40, 36)])
def test_forward_chop_stitching_is_exact_for_a_local_model(shape: tuple[int, int]) -> None:
    """With a purely local "network" (nearest upscaling) chopping must change nothing, at one level
    (min_size large) and two levels of quadrants (min_size small), for odd and even sizes."""
    h, w = shape
    x = torch.arange(3 * h * w, dtype=torch.float32).reshape(1, 3, h, w)
    calls: list[tuple[int, int]] = []

    def local_model(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape[2:]))
        return torch.nn.functional.interpolate(t, scale_factor=3, mode="nearest")

    expected = local_model(x)
    calls.clear()
    assert torch.equal(forward_chop(local_model, x, 3, shave=5), expected)
    assert len(calls) == 4
    calls.clear()
    two_level = forward_chop(local_model, x, 3, shave=5, min_size=300)
    assert torch.equal(two_level, expected)
    assert len(calls) == 16 and all(ph * pw < 300 for ph, pw in calls)


def test_forward_chop_clamps_patches_to_tiny_inputs(a2n_models) -> None:
    x = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(0)) * 255.0
    with torch.inference_mode():
        chopped = forward_chop(a2n_models[2], x, 2)  # shave 10 exceeds the image
        whole = a2n_models[2](x)
    # Every patch is the whole image, so chop equals the plain forward.
    assert chopped.shape == (1, 3, 14, 18)
    assert torch.allclose(chopped, whole, atol=1e-4)


def test_detect_a2n_files(a2n_state) -> None:
    for sd in a2n_state.values():
        # x2 and x3 files have identical shapes: the scale cannot be read from them.
        assert detect(sd) == {"scale": None, "nf": 40, "unf": 24, "nb": 16}
        assert SPEC.detect(sd) == detect(sd)  # what checkpoint detection calls through the spec
    with pytest.raises(ModelError):
        build(scale=None)


def test_detect_x4_layout_and_module_prefix() -> None:
    sd = build(scale=4).state_dict()
    assert detect(sd) == {"scale": 4, "nf": 40, "unf": 24, "nb": 16}
    small = build(scale=2, nf=16, unf=8, nb=3).state_dict()
    wrapped = {f"module.{k}": v for k, v in small.items()}
    assert detect(wrapped) is None  # detect runs after prepare_state_dict
    assert detect(prepare_state_dict(unwrap_state_dict(wrapped))) == {"scale": None, "nf": 16, "unf": 8, "nb": 3}
    damaged = dict(small)
    del damaged["AAB_trunk.1.attention.k3.weight"]
    assert detect(damaged) is None


def test_detect_rejects_other_archs(official_weights: Path) -> None:
    others = [p for arch in ("BSRN", "EMT", "PlainUSR") for p in sorted((official_weights / arch).glob("*.pth"))]
    assert len(others) >= 10
    for path in others:
        sd = _load(path)
        assert detect(sd) is None, path.name
        if isinstance(sd.get("params"), dict):
            assert detect(sd["params"]) is None, path.name


def test_min_size_is_one_pixel() -> None:
    assert SPEC.min_size == 1
    model = build(scale=3)
    with torch.inference_mode():
        out = model(torch.full((1, 3, 1, 1), 128.0))
    assert out.shape == (1, 3, 3, 3) and torch.isfinite(out).all()


def _set14_crop(shared_dir: Path, scale: int, size: int = 48) -> torch.Tensor:
    import cv2  # a dependency of the package

    img = cv2.imread(str(shared_dir / "data" / "benchmarks" / "Set14" / f"x{scale}" / "LR" / "img_003.png"))
    assert img is not None
    crop = np.ascontiguousarray(img[64 : 64 + size, 64 : 64 + size, ::-1])  # RGB patch of the baboon's face
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_on_real_image(a2n_models, shared_dir: Path, dtype: torch.dtype) -> None:
    model = a2n_models[2]
    x = _set14_crop(shared_dir, 2)
    low = build(scale=2)
    low.load_state_dict(model.state_dict())
    low = low.to(dtype)
    with torch.inference_mode():
        ref = model(x)
        out = low(x.to(dtype))
    assert out.dtype == dtype
    out = out.float()
    assert torch.isfinite(out).all()
    err = (out - ref).abs()
    # bf16 keeps 8 significant bits: an output near 255 is resolved only to ~1 level.
    # Measured on 64x64 Set14 crops: bf16 mean 0.12-0.28 and max 1.5-10 levels; fp16 mean <= 0.04
    # and max <= 0.9 levels.
    max_tol, mean_tol, psnr_min = (16.0, 0.5, 45.0) if dtype == torch.bfloat16 else (2.0, 0.1, 55.0)
    assert err.max().item() < max_tol
    assert err.mean().item() < mean_tol
    mse = torch.mean((out.clamp(0, 255).round() - ref.clamp(0, 255).round()) ** 2).item()
    assert 10 * np.log10(255.0**2 / max(mse, 1e-12)) > psnr_min


def test_feature_gain_scales_features_not_outputs(a2n_models, shared_dir: Path) -> None:
    """The range folding that gives fp16 its margin: trunk features shrink by exactly the gain
    (255x), the output does not change."""
    model = a2n_models[2]
    x = _set14_crop(shared_dir, 2, size=32)
    peaks: dict[float, float] = {}
    outputs: dict[float, torch.Tensor] = {}
    gain = 1.0

    def hook(_module, _inputs, output) -> None:
        peaks[gain] = max(peaks.get(gain, 0.0), output.abs().max().item())

    handles = [b.register_forward_hook(hook) for b in model.AAB_trunk]
    try:
        with torch.inference_mode():
            for gain in (1.0, 1.0 / 255.0):
                model.feature_gain = gain
                outputs[gain] = model(x)
    finally:
        model.feature_gain = 1.0 / 255.0
        for handle in handles:
            handle.remove()
    assert peaks[1.0] > 100.0
    assert peaks[1.0 / 255.0] == pytest.approx(peaks[1.0] / 255.0, rel=1e-4)
    assert torch.allclose(outputs[1.0], outputs[1.0 / 255.0], atol=1e-3)


def test_spec_traits() -> None:
    assert SPEC.name == "A2N"
    assert SPEC.input_range == 255.0
    assert SPEC.size_multiple == 1 and SPEC.tile_multiple == 1
    assert SPEC.tile_overlap > 0
    assert SPEC.prepare_state_dict(unwrap_state_dict({"module.conv_first.bias": torch.zeros(1)})).keys() == {"conv_first.bias"}
