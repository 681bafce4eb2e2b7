"""GRL: faithfulness to spandrel's port of the official code, checkpoint handling, detection.

spandrel (``pip install --no-deps spandrel einops``) is a test-only reference: its GRL is the
official ``models/networks/grl.py`` with imports rewired. The comparisons copy seeded random
weights from spandrel's model into ours and compare outputs on odd-sized inputs (so the
network's own padding to window multiples is exercised). They are skipped only when spandrel is
not installed; any other import failure fails them. Inputs stay tiny: every forward pads to at
least 64x64, and GRL-base is big.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lightsr_cli.archs import grl
from lightsr_cli.archs.grl import SPEC, VARIANTS, build, detect, prepare_state_dict
from lightsr_cli.checkpoints import unwrap_state_dict

from . import _torchvision_stub

TOLERANCE = 1e-5

# A small configuration with the same code paths as the official ones, cheap enough to run on
# several windows per axis: 4 blocks (all shift / orientation combinations), non-square stripes
# (16x32, transposed in "V" blocks), window 8, pad multiple 32.
MICRO: dict[str, Any] = {
    "in_channels": 3,
    "embed_dim": 36,
    "depths": [4, 2],
    "num_heads_window": [2, 3],
    "num_heads_stripe": [3, 2],
    "window_size": 8,
    "stripe_size": [16, 32],
    "stripe_shift": True,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "qkv_proj_type": "linear",
    "anchor_proj_type": "avgpool",
    "anchor_window_down_factor": 4,
    "local_connection": True,
    "upsampler": "pixelshuffledirect",
}

UPSAMPLER_SCALES = {"pixelshuffledirect": 2, "pixelshuffle": 3, "nearest+conv": 4}


@pytest.fixture(scope="module")
def reference_grl():
    """spandrel's GRL class; a skip only when spandrel is not installed.

    spandrel is a test dependency (the README's and CI's test set-up install it): any other import
    failure (a dependency broken at import time, a renamed module) fails the tests that need it.
    """
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed (pip install --no-deps spandrel==0.4.2): GRL's test reference")
    _torchvision_stub.install()
    from spandrel.architectures.GRL import GRL

    return GRL


def _reference_model(reference_grl, scale: int, hp: dict[str, Any]) -> torch.nn.Module:
    model = reference_grl(
        img_size=64,
        in_channels=hp["in_channels"],
        out_channels=hp["in_channels"],
        embed_dim=hp["embed_dim"],
        upscale=scale,
        upsampler=hp["upsampler"],
        depths=hp["depths"],
        num_heads_window=hp["num_heads_window"],
        num_heads_stripe=hp["num_heads_stripe"],
        window_size=hp["window_size"],
        stripe_size=list(hp["stripe_size"]),
        stripe_groups=[None, None],
        stripe_shift=hp["stripe_shift"],
        mlp_ratio=hp["mlp_ratio"],
        qkv_bias=hp["qkv_bias"],
        qkv_proj_type=hp["qkv_proj_type"],
        anchor_proj_type=hp["anchor_proj_type"],
        anchor_one_stage=True,
        anchor_window_down_factor=hp["anchor_window_down_factor"],
        local_connection=hp["local_connection"],
        conv_type="1conv",
    )
    return model.eval()


def _randomise(model: torch.nn.Module, seed: int, extreme_temperatures: bool = True) -> None:
    """Perturb every parameter (the stock init leaves LayerNorms, biases and temperatures uniform).

    ``extreme_temperatures`` also puts one head of every attention above the log(100) clamp.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
            if extreme_temperatures and name.endswith("logit_scale"):
                parameter[0] = 5.0  # above the log(100) clamp
                parameter[-1] = 1.0


def _shapes(state_dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _paired_models(reference_grl, scale: int, hp: dict[str, Any], seed: int = 0):
    torch.manual_seed(seed)  # spandrel's own initialisation draws from the global generator
    theirs = _reference_model(reference_grl, scale, hp)
    _randomise(theirs, seed)
    ours = build(scale, **hp).eval()
    ours.load_state_dict(prepare_state_dict(theirs.state_dict()), strict=True)
    return theirs, ours


def _max_diff(theirs, ours, x: torch.Tensor) -> float:
    with torch.no_grad():
        expected, actual = theirs(x), ours(x)
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    return (expected - actual).abs().max().item()


# --------------------------------------------------------------------------------------------
# Faithfulness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("upsampler", sorted(UPSAMPLER_SCALES))
def test_state_dict_matches_reference(reference_grl, variant, upsampler):
    scale = UPSAMPLER_SCALES[upsampler]
    hp = dict(VARIANTS[variant], upsampler=upsampler)
    theirs = _reference_model(reference_grl, scale, hp)
    ours = build(scale, **hp)
    # spandrel registers the size-dependent buffers as non-persistent; drop them the same way.
    assert _shapes(prepare_state_dict(theirs.state_dict())) == _shapes(ours.state_dict())
    assert not any(k.startswith(("table_", "index_", "mask_")) for k in ours.state_dict())


def _compare_on_one_patch(reference_grl, hp: dict[str, Any], scale: int) -> None:
    theirs, ours = _paired_models(reference_grl, scale, hp, seed=scale)
    x = torch.rand(1, 3, 36, 40, generator=torch.Generator().manual_seed(1))  # padded to 64x64
    assert _max_diff(theirs, ours, x) <= TOLERANCE


@pytest.mark.parametrize(("variant", "scale"), [("tiny", 4), ("small", 3)])
def test_official_variants_match_reference(reference_grl, variant, scale):
    _compare_on_one_patch(reference_grl, VARIANTS[variant], scale)


def test_base_blocks_match_reference(reference_grl):
    """GRL-base's layout (width 180, 3 heads, local conv branch, anchors pooled by 2) on one stage.

    The full network stacks 7 such stages (40 blocks); its keys and shapes are compared above and
    its full-depth forward is the opt-in test below (minutes on a shared 2-core machine).
    """
    one_stage = dict(VARIANTS["base"], depths=[4], num_heads_window=[3], num_heads_stripe=[3])
    _compare_on_one_patch(reference_grl, one_stage, 2)


@pytest.mark.skipif(
    not os.environ.get("LIGHTSR_SLOW_TESTS"),
    reason="full-depth GRL-base forward takes minutes on CPU; set LIGHTSR_SLOW_TESTS=1 to run it",
)
def test_full_base_matches_reference(reference_grl):
    _compare_on_one_patch(reference_grl, VARIANTS["base"], 2)


@pytest.mark.parametrize(
    ("overrides", "scale"),
    [
        ({"upsampler": "pixelshuffledirect"}, 2),
        ({"upsampler": "pixelshuffle", "anchor_window_down_factor": 2, "local_connection": False}, 3),
        ({"upsampler": "pixelshuffle", "anchor_proj_type": "maxpool", "qkv_bias": False}, 4),
        ({"upsampler": "nearest+conv", "stripe_size": [32, 16], "mlp_ratio": 1.5}, 4),
    ],
    ids=["direct-x2", "pixelshuffle-x3-df2", "pixelshuffle-x4-maxpool", "nearest-conv-x4"],
)
def test_every_upsampler_matches_reference_on_many_windows(reference_grl, overrides, scale):
    hp = dict(MICRO, **overrides)
    theirs, ours = _paired_models(reference_grl, scale, hp, seed=scale)
    generator = torch.Generator().manual_seed(2)
    # 45x70 -> 64x96 (reflect): 8x12 windows, 4x3 / 2x6 stripes, interior and border windows;
    # a batch of two checks that the shift masks line up with the batch-major window order.
    assert _max_diff(theirs, ours, torch.rand(2, 3, 45, 70, generator=generator)) <= TOLERANCE
    # 9x13 -> 32x32: the padding is larger than the image, so upstream falls back to zeros.
    assert _max_diff(theirs, ours, torch.rand(1, 3, 9, 13, generator=generator)) <= TOLERANCE


# --------------------------------------------------------------------------------------------
# Shapes and precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hp", "scale", "size"),
    [
        (VARIANTS["tiny"], 3, (37, 29)),  # reflect-padded to 64x64
        (MICRO, 2, (5, 7)),  # padding larger than the image: zero-padded to 32x32
        (dict(MICRO, upsampler="nearest+conv"), 4, (1, 66)),
        (dict(MICRO, upsampler="pixelshuffle"), 4, (33, 17)),
    ],
    ids=["tiny-x3", "micro-x2", "micro-nearest-x4", "micro-pixelshuffle-x4"],
)
def test_output_is_scale_times_input(hp, scale, size):
    model = build(scale, **hp).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()


def test_attention_logits_are_fp32_for_low_precision_inputs():
    """bf16 q/k/v: cosine, logits and softmax are the fp32 computation; only the weighted sum is bf16."""
    torch.manual_seed(0)
    logits_of = grl.AttentionLogits(heads=2)
    geometry = grl.Geometry((16, 16), 8, (16, 16), 4, torch.device("cpu"))
    table, index, mask = geometry.window_table, geometry.window_index, geometry.window_mask
    q, k, v = (torch.randn(4, 2, 64, 8).bfloat16() for _ in range(3))  # one image, 2x2 windows
    with torch.no_grad():
        actual = grl.cosine_attention(q, k, v, logits_of, table, index, mask)
        cosine = F.normalize(q.float(), dim=-1) @ F.normalize(k.float(), dim=-1).transpose(-2, -1)
        probabilities = logits_of(cosine, table, index, mask).softmax(dim=-1)
    assert actual.dtype == torch.bfloat16
    assert torch.equal(actual, probabilities.bfloat16() @ v)


def test_bf16_forward_is_finite_and_close_to_fp32():
    """A smoke test only: random weights say little about real activations (see the module notes)."""
    model = build(2, **MICRO).eval()
    _randomise(model, seed=3, extreme_temperatures=False)
    x = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = model(x)
        low = model.to(torch.bfloat16)(x.bfloat16())
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    relative = (low.float() - reference).norm() / reference.norm()
    assert relative < 0.03, relative


def test_spec_traits():
    assert SPEC.name == "GRL"
    assert SPEC.input_range == 1.0
    assert SPEC.size_multiple == 1  # the network pads itself to max(window, stripe)
    for hp in VARIANTS.values():
        assert SPEC.tile_multiple % max(hp["window_size"], *hp["stripe_size"]) == 0
    assert SPEC.tile_overlap >= 32
    assert not SPEC.fp16_safe and SPEC.bf16_safe


def test_variants_are_plain_json():
    import json

    assert json.loads(json.dumps(VARIANTS)) == VARIANTS


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _upstream_size_buffers(
    window: int, stripe: tuple[int, int], down: int, size: int = 64
) -> dict[str, torch.Tensor]:
    """Buffers shaped like the ones upstream saves (computed for a ``size`` x ``size`` patch)."""
    square = (window, window)
    buffers = {"table_w": grl.log_coords_table(square, 1), "index_w": grl.relative_index(square, 1, True)}
    buffers["mask_w"] = torch.zeros((size // window) ** 2, window**2, window**2)
    for tag, shape in (("h", stripe), ("v", (stripe[1], stripe[0]))):
        n_stripe = shape[0] * shape[1]
        n_anchor = n_stripe // (down * down)
        n_windows = (size // shape[0]) * (size // shape[1])
        buffers[f"table_s{tag}"] = grl.log_coords_table(shape, down)
        buffers[f"index_s{tag}_a2w"] = grl.relative_index(shape, down, False)
        buffers[f"index_s{tag}_w2a"] = grl.relative_index(shape, down, True)
        buffers[f"mask_s{tag}_a2w"] = torch.zeros(n_windows, n_anchor, n_stripe)
        buffers[f"mask_s{tag}_w2a"] = torch.zeros(n_windows, n_stripe, n_anchor)
    return buffers


def _lightning_checkpoint(model: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> dict[str, Any]:
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state.update({f"model.{k}": v for k, v in buffers.items()})
    # Lightning also saves the module's metric buffers next to the network.
    state["current_val_metric"] = torch.tensor(30.0)
    state["best_val_metric"] = torch.tensor(31.0)
    state["best_iter"] = torch.tensor(5)
    return {"epoch": 3, "global_step": 1000, "state_dict": state, "hyper_parameters": {"lr": 1e-4}}


def test_prepare_state_dict_loads_a_lightning_checkpoint_strictly():
    hp = VARIANTS["tiny"]
    source = build(2, **hp)
    _randomise(source, seed=5)
    checkpoint = _lightning_checkpoint(source, _upstream_size_buffers(32, (64, 64), 4))
    prepared = prepare_state_dict(unwrap_state_dict(checkpoint))
    assert not any(k.startswith(("table_", "index_", "mask_", "model.")) for k in prepared)
    target = build(**detect(prepared))
    target.load_state_dict(prepared, strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_prepare_state_dict_strips_other_prefixes():
    model = build(2, **VARIANTS["tiny"])
    weights = model.state_dict()
    expected = _shapes(weights)
    assert _shapes(prepare_state_dict(unwrap_state_dict({f"module.{k}": v for k, v in weights.items()}))) == expected
    # The real-world GAN checkpoint keeps the generator under "model_g." beside a discriminator.
    gan = {f"model_g.{k}": v for k, v in weights.items()}
    gan["model_d.conv0.weight"] = torch.zeros(64, 3, 3, 3)
    assert _shapes(prepare_state_dict(unwrap_state_dict({"state_dict": gan}))) == expected


def test_prepare_state_dict_rejects_buffers_that_contradict_the_assumed_geometry():
    source = build(2, **VARIANTS["tiny"])
    # GRL-tiny is assumed to use anchors pooled by 4; buffers computed with 2 contradict that.
    checkpoint = _lightning_checkpoint(source, _upstream_size_buffers(32, (64, 64), 2))
    with pytest.raises(ValueError, match="anchor_window_down_factor"):
        prepare_state_dict(unwrap_state_dict(checkpoint))


def test_geometry_is_read_back_from_upstream_buffers():
    for window, stripe, down in ((32, (64, 64), 4), (32, (64, 64), 2), (16, (32, 64), 4)):
        found = grl.geometry_from_buffers(_upstream_size_buffers(window, stripe, down))
        assert found == {"window_size": window, "stripe_size": list(stripe), "anchor_window_down_factor": down}


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _meta_state_dict(scale: int, hp: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return build(scale, **hp).state_dict()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_detect_recovers_variant_and_scale(variant, scale):
    weights = _meta_state_dict(scale, VARIANTS[variant])
    state = prepare_state_dict(unwrap_state_dict({"state_dict": {f"model.{k}": v for k, v in weights.items()}}))
    assert detect(state) == {"scale": scale, **VARIANTS[variant]}


def test_detect_real_world_model():
    hp = dict(VARIANTS["base"], upsampler="nearest+conv", window_size=16, stripe_size=[32, 64])
    hp["anchor_window_down_factor"] = 4
    assert detect(_meta_state_dict(4, hp)) == {"scale": 4, **hp}


def test_detect_rejects_restoration_models():
    state = _meta_state_dict(2, VARIANTS["tiny"])
    state = {k: v for k, v in state.items() if not k.startswith("upsample.")}
    state["conv_last.weight"] = torch.empty(3, 64, 3, 3, device="meta")
    state["conv_last.bias"] = torch.empty(3, device="meta")
    assert detect(state) is None


def test_detect_ignores_other_official_weights(official_weights):
    files = sorted(p for p in official_weights.rglob("*") if p.suffix in (".pth", ".pt", ".ckpt", ".safetensors"))
    assert files
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path))
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert detect(prepare_state_dict(unwrap_state_dict(checkpoint))) is None, path.name


def test_release_file_names():
    assert grl.RELEASE_FILES["tiny"] == {s: f"sr_grl_tiny_c3x{s}.ckpt" for s in (2, 3, 4)}
    assert grl.RELEASE_FILES["base"][4] == "sr_grl_base_c3x4.ckpt"
