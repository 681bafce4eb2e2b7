"""PlainUSR, re-parameterized (folded) inference networks.

Paper: "PlainUSR: Chasing Faster ConvNet for Efficient Super-Resolution" (ACCV 2024).
Upstream project: https://github.com/icandle/PlainUSR (this is an independent implementation
written for lightsr; parameter names follow the official "_Rep" checkpoints so they load strictly).

How the network works
---------------------
* The head is a single 3x3 conv from RGB to ``n_feat + 3`` channels. The three extra channels
  were initialised as a copy of the input, so the feature map carries the LR image along with it.
* A U-shaped chain of blocks follows. Each block only rewrites a *leading slice* of the channels
  (``im_feat`` widths, e.g. 64 -> 48 -> 32 -> 48 -> 64); the remaining channels flow past it
  untouched. The training-time residual connections were folded into the conv weights, so a block
  is just ``conv -> LeakyReLU(0.05) -> conv [-> LeakyReLU -> conv] [-> gate]``.
* The gate multiplies the block output by two sigmoids: one of the block's own first channel, and
  one "importance" map. In the ultra variant the importance map is a 3x3 conv of the features; in
  the general/large variants it is computed on a coarse grid (1x1 conv, soft pooling with a 7x7
  window at stride 3, a stride-2 conv, a 3x3 conv) and resized back bilinearly.
* The tail is a 3x3 conv to ``3 * scale**2`` channels and a pixel shuffle. The output is not
  clipped; input and output are RGB in [0, 1].

Variants of the official checkpoints (all inferred from the state-dict shapes):

=========  ========  ======  ============  =========
file       block     n_feat  im_feat       attn_feat
=========  ========  ======  ============  =========
PlainUSRU  ultra     16      16, 8         (unused)
PlainUSRT  ultra     32      32, 16        (unused)
PlainUSRS  general   32      32, 16, 8     4
PlainUSRM  general   48      48, 32, 16    8
PlainUSR   general   64      64, 48, 32    16
PlainUSRL  large     80      80, 64, 48    16
=========  ========  ======  ============  =========

Precision
---------
Soft pooling is ``sum(exp(v) * v) / sum(exp(v))`` over each window. In fp16, ``exp`` overflows
for v > 11.1, which real images reach. :func:`soft_pool2d` therefore always evaluates in fp32
(only this small ``attn_feat``-channel tensor is upcast) and casts the pooled result back; the
pooled values lie within each window's range, so the cast back cannot overflow. For inputs where
even fp32 ``exp`` would overflow (v > ~88) or every weight would underflow (v < ~-87), a
per-channel constant is subtracted first, which cancels exactly in the ratio; upstream returns NaN
there.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import facts
from .detection import matches_network, pixel_shuffle_scale, shape_of
from .spec import ArchSpec, StateDict

LEAKY_SLOPE = 0.05
POOL_KERNEL = 7
POOL_STRIDE = 3
# Soft pooling shifts each channel so that its peak lies in [0, _SOFTPOOL_PEAK_CAP] before exp():
# exp(60) ~ 1.1e26 stays far below the fp32 limit (~3.4e38) even after multiplying by v and summing
# a window, and windows at least ~87 below the peak keep a non-zero weight. Channels whose peak is
# already in range are not shifted at all, so ordinary inputs follow exactly the upstream arithmetic
# (measured soft-pool inputs on Set14 span about -28..16).
_SOFTPOOL_PEAK_CAP = 60.0

BLOCK_TYPES = ("ultra", "general", "large")

# Block names in forward order, with the index into ``im_feat`` that gives each block's width.
_STAGES: dict[str, tuple[tuple[str, int], ...]] = {
    "ultra": (("block1", 0), ("blockm", 1), ("block2", 0)),
    "general": (("block1", 0), ("block2", 1), ("blockm", 2), ("block3", 1), ("block4", 0)),
    "large": (("block1", 0), ("block2", 1), ("blockm", 2), ("block3", 1), ("block4", 0)),
}

# Official class defaults, used when build() is called without explicit widths.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ultra": {"n_feat": 32, "im_feat": (32, 16), "attn_feat": 4},
    "general": {"n_feat": 64, "im_feat": (64, 48, 32), "attn_feat": 16},
    "large": {"n_feat": 80, "im_feat": (80, 64, 48), "attn_feat": 16},
}


def soft_pool2d(x: torch.Tensor, kernel_size: int = POOL_KERNEL, stride: int = POOL_STRIDE) -> torch.Tensor:
    """Exp-weighted mean of each (unpadded) window: sum(e^v * v) / sum(e^v).

    Computed in fp32 whatever the input dtype, then cast back to it. The result is a convex
    combination of the window's values, so it always fits the input dtype.
    """
    v = x.float()
    # A constant per (sample, channel) cancels exactly in the ratio. It is zero unless the channel's
    # peak is negative (then the peak moves to 0: fewer windows underflow to 0/0) or above the cap
    # (then it moves to the cap: exp() cannot overflow to inf/inf).
    peak = v.detach().amax(dim=(-2, -1), keepdim=True)
    shift = peak - peak.clamp(0.0, _SOFTPOOL_PEAK_CAP)
    weight = torch.exp(v - shift)
    # avg_pool divides numerator and denominator by the same window area; the ratio is unaffected.
    numerator = F.avg_pool2d(weight * v, kernel_size, stride)
    denominator = F.avg_pool2d(weight, kernel_size, stride)
    return (numerator / denominator).to(x.dtype)


class SoftPool2d(nn.Module):
    """Module wrapper of :func:`soft_pool2d` (no parameters)."""

    def __init__(self, kernel_size: int = POOL_KERNEL, stride: int = POOL_STRIDE) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class CoarseImportanceGate(nn.Module):
    """Gate of the general/large blocks: importance estimated on a ~1/6 resolution grid.

    ``body`` indices (0 conv1x1, 1 pool, 2 strided conv, 3 conv, 4 sigmoid) match the checkpoints.
    """

    def __init__(self, channels: int, attn_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, attn_feat, 1),
            SoftPool2d(POOL_KERNEL, POOL_STRIDE),
            nn.Conv2d(attn_feat, attn_feat, 3, stride=2, padding=1),
            nn.Conv2d(attn_feat, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        importance = F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * importance * torch.sigmoid(x[:, :1])


class PixelImportanceGate(nn.Module):
    """Gate of the ultra middle block: full-resolution importance from one 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x[:, :1]) * self.body(x)


class FoldedBlock(nn.Module):
    """``n_convs`` 3x3 convs separated by LeakyReLU(0.05), optionally followed by a gate.

    The layout of ``body`` reproduces the official Sequential indices (convs at even positions,
    the gate last), which is what the checkpoint keys refer to.
    """

    def __init__(self, channels: int, n_convs: int, gate: nn.Module | None) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1)]
        for _ in range(n_convs - 1):
            layers += [nn.LeakyReLU(LEAKY_SLOPE, inplace=True), nn.Conv2d(channels, channels, 3, padding=1)]
        if gate is not None:
            layers.append(gate)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _make_block(block: str, stage: str, width: int, attn_feat: int) -> FoldedBlock:
    if block == "ultra":
        # Only the middle block of the ultra net is gated, and its gate has no pooling.
        return FoldedBlock(width, 2, PixelImportanceGate(width) if stage == "blockm" else None)
    n_convs = 3 if block == "large" else 2
    return FoldedBlock(width, n_convs, CoarseImportanceGate(width, attn_feat))


class PlainUSR(nn.Module):
    """Folded PlainUSR network (ultra / general / large), RGB [0,1] in, RGB [0,1] out."""

    def __init__(
        self,
        scale: int = 4,
        block: str = "general",
        n_feat: int = 64,
        im_feat: Sequence[int] = (64, 48, 32),
        attn_feat: int = 16,
    ) -> None:
        super().__init__()
        if block not in _STAGES:
            raise ValueError(f"unknown PlainUSR block type {block!r}; expected one of {BLOCK_TYPES}")
        im_feat = tuple(int(c) for c in im_feat)
        n_widths = 1 + max(i for _, i in _STAGES[block])
        if len(im_feat) != n_widths:
            raise ValueError(f"PlainUSR {block} needs {n_widths} im_feat widths, got {list(im_feat)}")
        if any(c < 1 or c > n_feat for c in im_feat):
            raise ValueError(f"PlainUSR im_feat widths {list(im_feat)} must lie in 1..n_feat={n_feat}")
        if scale < 1:
            raise ValueError(f"PlainUSR scale must be >= 1, got {scale}")

        self.scale = int(scale)
        self.block_type = block
        self.n_feat = int(n_feat)
        self.im_feat = im_feat
        self.attn_feat = int(attn_feat)
        # Spatial minimum: the 7x7 unpadded soft pooling needs at least 7 px; ultra has no pooling.
        self.min_size = 1 if block == "ultra" else POOL_KERNEL

        # n_feat working channels plus 3 channels that carry (a learned copy of) the input image.
        self.head = nn.Conv2d(3, n_feat + 3, 3, padding=1)
        self._stages: list[tuple[str, int]] = []
        for stage, width_index in _STAGES[block]:
            width = im_feat[width_index]
            self.add_module(stage, _make_block(block, stage, width, attn_feat))
            self._stages.append((stage, width))
        self.tail = nn.Sequential(
            nn.Conv2d(n_feat + 3, 3 * self.scale**2, 3, padding=1),
            nn.PixelShuffle(self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"PlainUSR-{self.block_type} needs inputs of at least {self.min_size}x{self.min_size} px, "
                f"got {tuple(x.shape[-2:])}"
            )
        feat = self.head(x)
        # Gradients through an in-place slice write would be wrong, so fall back to concatenation
        # when autograd is recording; inference overwrites the slice in place (no extra full copy).
        # An ONNX trace concatenates too: the slice write would export as ScatterND, which runs
        # 6-20% slower in ONNX Runtime than Concat.
        track = torch.jit.is_tracing() or (torch.is_grad_enabled() and (feat.requires_grad or x.requires_grad))
        for stage, width in self._stages:
            updated = getattr(self, stage)(feat[:, :width])
            if track:
                feat = torch.cat([updated, feat[:, width:]], dim=1)
            else:
                feat[:, :width] = updated
        return self.tail(feat)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, block={self.block_type!r}, n_feat={self.n_feat}, "
            f"im_feat={list(self.im_feat)}, attn_feat={self.attn_feat}"
        )


def build(
    scale: int,
    block: str = "general",
    n_feat: int | None = None,
    im_feat: Sequence[int] | None = None,
    attn_feat: int | None = None,
) -> PlainUSR:
    """Build an (uninitialised) PlainUSR; omitted widths take the official class defaults."""
    if block not in _DEFAULTS:
        raise ValueError(f"unknown PlainUSR block type {block!r}; expected one of {BLOCK_TYPES}")
    defaults = _DEFAULTS[block]
    return PlainUSR(
        scale=scale,
        block=block,
        n_feat=defaults["n_feat"] if n_feat is None else n_feat,
        im_feat=defaults["im_feat"] if im_feat is None else im_feat,
        attn_feat=defaults["attn_feat"] if attn_feat is None else attn_feat,
    ).eval()


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    """Hyperparameters of a PlainUSR state dict, or None when it is not one.

    Widths are read from a few weights, then a meta-device model built from them must reproduce
    every key and shape exactly, so other architectures with similar names (EMT also has
    ``head``/``tail.0``) are rejected.
    """
    head = shape_of(state_dict, "head.weight")
    tail = shape_of(state_dict, "tail.0.weight")
    if head is None or tail is None or len(head) != 4 or len(tail) != 4 or head[1:] != (3, 3, 3):
        return None
    n_feat = head[0] - 3
    scale = pixel_shuffle_scale(tail[0])
    if n_feat < 1 or scale is None:
        return None

    if "block1.body.5.body.0.weight" in state_dict:
        block, gate_key = "large", "block1.body.5.body.0.weight"
    elif "block1.body.3.body.0.weight" in state_dict:
        block, gate_key = "general", "block1.body.3.body.0.weight"
    elif "blockm.body.3.body.0.weight" in state_dict:
        block, gate_key = "ultra", None
    else:
        return None

    width_blocks = ("block1", "blockm") if block == "ultra" else ("block1", "block2", "blockm")
    im_feat = []
    for name in width_blocks:
        shape = shape_of(state_dict, f"{name}.body.0.weight")
        if shape is None:
            return None
        im_feat.append(shape[0])
    if gate_key is None:
        attn_feat = _DEFAULTS["ultra"]["attn_feat"]  # not used by the ultra network
    else:
        gate = shape_of(state_dict, gate_key)
        if gate is None:
            return None
        attn_feat = gate[0]

    params = {"scale": scale, "block": block, "n_feat": n_feat, "im_feat": im_feat, "attn_feat": attn_feat}
    try:
        if not matches_network(state_dict, lambda: build(**params)):
            return None
    except (ValueError, RuntimeError):
        return None
    return params


SPEC = ArchSpec(
    name="PlainUSR",
    build=build,
    input_range=1.0,
    # general/large: the 7x7 soft pooling has no padding. ultra would accept 1 px, but the family
    # shares one spec and padding a tiny ultra input to 7 px costs nothing.
    min_size=7,
    # Pooling (stride 3), the stride-2 conv and the bilinear resize back handle any size >= 7.
    size_multiple=1,
    # The importance maps live on a grid anchored at the input's top-left corner (pool stride 3,
    # then a stride-2 conv: period 6 px) and are resized to the input size, so tiling is never exact.
    # What matters most is that each tile's input origin stays on that grid: with tile sizes and
    # overlap both multiples of 6, origins (k * tile - overlap) are too. Measured on Set14 x4
    # (PlainUSR base, 60 px tiles), tiled-vs-whole PSNR rises steadily with aligned overlap
    # (6: 46.5, 12: 47.7, 18: 48.5, 24: 49.2, 36: 50.4 dB), while misaligned origins lose
    # 2-4 dB (64 px tiles, overlap 12/24: 45.9/46.1 dB). PSNR-Y against HR does not drop
    # (whole 28.5432, tiled 60/24 28.5519 dB).
    tile_overlap=24,
    tile_multiple=6,
    # Soft pooling runs in fp32 internally (see soft_pool2d); every other activation stays below
    # ~64 on Set14 for all 12 checkpoints. Measured on CPU, whole Set14 x4 for S and base (where the
    # upstream fp16 formula gives NaN/Inf on 4 of 14 images each) plus the images with the hottest
    # soft-pool inputs for every other checkpoint and for x2: fp16 always finite, 65-73 dB PSNR
    # against fp32 (max |diff| <= 0.014); bf16 always finite, 48.5-56 dB (max |diff| <= 0.08).
    fp16_safe=True,
    bf16_safe=True,
    detect=detect,
    paper=facts.PLAINUSR.paper,
)
