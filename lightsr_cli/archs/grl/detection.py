"""GRL checkpoints: the size-dependent buffers to drop (checked against the assumed geometry) and
detection of a GRL SR state dict's hyperparameters from its key names and shapes."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..detection import block_indices, pixel_shuffle_scale
from ..spec import StateDict
from .geometry import RECON_FEATS

# Geometry of the real-world x4 model (bsr_grl_base.ckpt, keys under "model_g."); its weights are
# the GRL-base shape with the nearest+conv upsampler. Read from its buffers by spandrel.
REAL_WORLD_GEOMETRY = {"window_size": 16, "stripe_size": [32, 64], "anchor_window_down_factor": 4}
SR_GEOMETRY = {"window_size": 32, "stripe_size": [64, 64]}

# Size-dependent buffers that upstream registers (persistently) on the network.
SIZE_BUFFERS = (
    "table_w",
    "table_sh",
    "table_sv",
    "index_w",
    "index_sh_a2w",
    "index_sh_w2a",
    "index_sv_a2w",
    "index_sv_w2a",
    "mask_w",
    "mask_sh_a2w",
    "mask_sh_w2a",
    "mask_sv_a2w",
    "mask_sv_w2a",
)
# Per-module buffers of the non-shared-buffer blocks of upstream's other code paths.
SIZE_BUFFER_SUFFIXES = (".relative_coords_table", ".relative_position_index", ".attn_mask")


def is_size_buffer(key: str) -> bool:
    return key in SIZE_BUFFERS or key.endswith(SIZE_BUFFER_SUFFIXES)


def geometry_from_buffers(sd: Mapping[str, Any]) -> dict[str, Any] | None:
    """Window, stripe and anchor down factor implied by upstream's size buffers, if present."""
    try:
        table_w, table_sh, index = sd["table_w"], sd["table_sh"], sd["index_sh_a2w"]
        window = (int(table_w.shape[1]) + 1) // 2
        n_anchor, n_stripe = int(index.shape[0]), int(index.shape[1])
        down = math.isqrt(n_stripe // n_anchor)
        if down < 1 or down * down * n_anchor != n_stripe:
            return None
        # The stripe table spans stripe + stripe // down - 1 per axis.
        stripe = [(int(n) + 1) * down // (down + 1) for n in table_sh.shape[1:3]]
        if any(s + s // down - 1 != int(n) for s, n in zip(stripe, table_sh.shape[1:3], strict=False)):
            return None
    except (KeyError, AttributeError, IndexError, TypeError, ZeroDivisionError):
        return None
    return {"window_size": window, "stripe_size": stripe, "anchor_window_down_factor": down}


def prepare_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Official checkpoint -> state dict for :class:`GRL`.

    Receives a state dict unwrapped by :mod:`lightsr_cli.checkpoints` (containers, Lightning's
    metric buffers, a GAN discriminator and key prefixes are gone) and drops the size-dependent
    buffers, which are rebuilt for every input size.

    When those buffers are present they are also checked against the geometry that
    :func:`detect` assumes (it cannot see them): a contradiction raises ``ValueError`` rather
    than silently building a network with the wrong attention layout.
    """
    sd = state_dict
    if "table_w" in sd and "conv_first.weight" in sd:
        from_buffers = geometry_from_buffers(sd)
        kept = {k: v for k, v in sd.items() if not is_size_buffer(k)}
        assumed = detect(kept)
        if from_buffers is not None and assumed is not None:
            differs = {k: (v, assumed[k]) for k, v in from_buffers.items() if assumed[k] != v}
            if differs:
                raise ValueError(
                    "GRL checkpoint geometry differs from what lightsr assumes for this variant "
                    f"(checkpoint buffers vs assumed): {differs}"
                )
        return kept
    return {k: v for k, v in sd.items() if not (isinstance(k, str) and is_size_buffer(k))}


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    """Recognise a GRL SR state dict (after :func:`prepare_state_dict`) and read its hyperparameters.

    Widths, depths, heads, MLP ratio, qkv bias, the local branch, the upsampler and the scale are
    read from key names and shapes. Window size, stripe size and the anchor down factor leave no
    trace in the weights; the official SR values are returned (window 32, stripes 64x64, down
    factor 2 for GRL-base with its local branch and 4 otherwise), or the real-world model's
    (window 16, stripes 32x64, down factor 4) for the nearest+conv upsampler.

    Returns None for other architectures, for GRL restoration models without an upsampler
    (denoising, JPEG, deblurring), and for GRL options this module does not implement.
    """
    keys = [k for k in state_dict if isinstance(k, str)]
    block0 = "layers.0.blocks.0."
    required = (
        "conv_first.weight",
        "norm_start.weight",
        "norm_end.weight",
        "conv_after_body.weight",
        block0 + "attn.window_attn.attn_transform.logit_scale",
        block0 + "attn.stripe_attn.attn_transform1.logit_scale",
        block0 + "attn.proj.weight",
        block0 + "mlp.fc1.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    first = state_dict["conv_first.weight"]
    if first.ndim != 4:
        return None
    embed_dim, in_channels = int(first.shape[0]), int(first.shape[1])

    # Options outside what build() implements.
    qkv = state_dict.get(block0 + "attn.qkv.body.weight")
    reduction = state_dict.get(block0 + "attn.anchor.body.0.reduction.weight")
    after_body = state_dict["conv_after_body.weight"]
    if qkv is None or tuple(qkv.shape) != (3 * embed_dim, embed_dim):
        return None  # separable-conv qkv projection
    if reduction is None or block0 + "attn.anchor.body.0.reduction.bias" not in state_dict:
        return None  # conv / patch-merging anchors
    if after_body.ndim != 4 or tuple(after_body.shape[2:]) != (3, 3):
        return None  # other conv_type

    stages = block_indices(keys, "layers.")
    if stages != list(range(len(stages))):
        return None
    depths, heads_window, heads_stripe = [], [], []
    for i in stages:
        blocks = block_indices(keys, f"layers.{i}.blocks.")
        if not blocks or blocks != list(range(len(blocks))):
            return None
        depths.append(len(blocks))
        attn = f"layers.{i}.blocks.0.attn."
        heads_window.append(int(state_dict[attn + "window_attn.attn_transform.logit_scale"].shape[0]))
        heads_stripe.append(int(state_dict[attn + "stripe_attn.attn_transform1.logit_scale"].shape[0]))
    hidden = int(state_dict[block0 + "mlp.fc1.weight"].shape[0])
    local_connection = block0 + "conv.cab.0.weight" in state_dict

    if "conv_up1.weight" in state_dict:
        upsampler, scale = "nearest+conv", 4
    elif "conv_before_upsample.0.weight" in state_dict and "upsample.up.0.weight" in state_dict:
        upsampler, scale = "pixelshuffle", 1
        for i in block_indices(keys, "upsample.up."):
            ratio = int(state_dict[f"upsample.up.{i}.weight"].shape[0]) // RECON_FEATS
            factor = math.isqrt(ratio)
            if factor * factor != ratio or factor not in (2, 3):
                return None
            scale *= factor
    elif "upsample.up.0.weight" in state_dict:
        upsampler = "pixelshuffledirect"
        scale = pixel_shuffle_scale(int(state_dict["upsample.up.0.weight"].shape[0]), in_channels)
        if scale is None:
            return None
    else:
        return None  # restoration model (scale 1): not an upscaler
    if upsampler != "pixelshuffledirect" and int(state_dict["conv_last.weight"].shape[0]) != in_channels:
        return None

    if upsampler == "nearest+conv":
        geometry = dict(REAL_WORLD_GEOMETRY)
    else:
        geometry = dict(SR_GEOMETRY, anchor_window_down_factor=2 if local_connection else 4)
    return {
        "scale": scale,
        "in_channels": in_channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads_window": heads_window,
        "num_heads_stripe": heads_stripe,
        "window_size": geometry["window_size"],
        "stripe_size": list(geometry["stripe_size"]),
        "stripe_shift": True,
        "mlp_ratio": hidden / embed_dim,
        "qkv_bias": block0 + "attn.qkv.body.bias" in state_dict,
        "qkv_proj_type": "linear",
        "anchor_proj_type": "avgpool",
        "anchor_window_down_factor": geometry["anchor_window_down_factor"],
        "local_connection": local_connection,
        "upsampler": upsampler,
    }
