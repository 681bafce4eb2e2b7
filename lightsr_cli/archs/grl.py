"""GRL: global, regional and local modelling transformer, super-resolution variants.

Paper: Li, Fan, Xiang, Demandolx, Ranjan, Timofte, Van Gool, "Efficient and Explicit Modelling of
Image Hierarchies for Image Restoration", CVPR 2023.
Reference implementation: https://github.com/ofsoundof/GRL-Image-Restoration (MIT), the
"efficient" network ``models/networks/grl.py`` with ``models/common/mixed_attn_block_efficient.py``.
This is an independent re-implementation for lightsr; only the parameter names and shapes follow
the official checkpoints (``sr_grl_{tiny,small,base}_c3x{2,3,4}.ckpt`` of release v1.0.0, and the
real-world ``bsr_grl_base.ckpt``) so that they load with ``strict=True``.

Network outline (tokens are ``B x L x C`` with ``L = H*W`` of the padded input)::

    RGB [0,1] -> pad bottom/right to a multiple of max(window, stripe) -> minus DIV2K mean
      -> 3x3 conv (3 -> C) -> LayerNorm
      -> stages; each stage: blocks, then a 3x3 conv on the map, plus the stage input
      -> LayerNorm -> 3x3 conv -> plus the first conv's output
      -> upsampler -> plus the mean -> crop to scale * input size

Every block is "residual post-norm" (Swin-v2 style): ``x += norm1(attention(x))`` (plus, in GRL-base,
a convolutional channel-attention branch on ``x``), then ``x += norm2(mlp(x))``. One shared linear
layer gives q, k and v for two attention kinds that each get half of the channels:

* window attention over square windows (shifted by half a window in every other block);
* anchored stripe attention over large stripes (a 64x64 square for the SR models). Anchors are
  the block input average-pooled by ``anchor_window_down_factor`` and projected to C/2 channels.
  Attention runs in two hops: the anchors attend to the stripe's keys/values, then the stripe's
  queries attend to the anchors, whose values are the first hop's output. Stripes alternate
  between the "H" orientation (``stripe_size``) and the transposed "V" one, and are shifted by
  half a stripe in blocks 2 and 3 of every group of four.

All attention is cosine attention (normalised q and k) with a learnt per-head temperature
(``exp(min(logit_scale, log 100))``) plus a continuous relative-position bias: a small MLP maps
log-spaced relative coordinates to per-head values, squashed as ``16 * sigmoid``. Shifted windows
get the usual -100 penalty between pixels that came from different image regions.

Everything that depends on the feature size (coordinate tables, relative indices, shift masks)
is rebuilt here for the actual input size and cached; the official checkpoints also carry
copies computed for the training patch size, which :func:`prepare_state_dict` drops. Shift masks
are stored only for the windows that contain more than one region (the last row and column of
windows): adding zero to the other windows, as upstream does, changes nothing.

Precision: the cosine logits are multiplied by temperatures up to 100, so a bf16/fp16 rounding
error of 2^-8 in the cosine becomes ~0.4 in a logit. Normalisation, logits, position bias and
softmax therefore always run in fp32 (the probabilities are cast back to the caller's dtype
before they weight the values). For fp32 inputs this is exactly the upstream computation (the
tests find bit-identical outputs). The residual stream itself is not normalised before the
attention and MLP branches and can grow with depth; with no real weights available offline its
fp16 headroom is unverified, and other deployments keep it out of fp16 (spandrel marks GRL as not
half-safe; vs-grlir keeps the residual stream in fp32 for its fp16 mode), hence
``fp16_safe=False``. bf16 has the fp32 exponent range, so with the attention in fp32 it is marked
safe.

Engine traits (see ``SPEC``): the network pads itself (reflect, or zeros when the padding would
exceed the image, as upstream), so any size is accepted (``min_size=1``, ``size_multiple=1``).
Tiles are best kept at multiples of 64 = max(window, stripe) for every released model, otherwise
the network pads each tile itself. Attention reaches across a 64x64 stripe (shifted by 32) in
every block, so context flows across whole tiles; ``tile_overlap=32`` is the overlap upstream uses
for its own tiled evaluation (``tile_overlap: 32`` in ``experiment/sr/grl/grl_p256.yaml``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ArchSpec, StateDict

_Pair = tuple[int, int]

# DIV2K RGB mean used by upstream for 3-channel inputs (img_range 1.0).
_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Upstream clamps the learnt log-temperature at log(1 / 0.01).
_MAX_LOG_SCALE = math.log(1.0 / 0.01)
# Hidden width of the continuous position-bias MLP and channels of the SR reconstruction head.
_BIAS_MLP_HIDDEN = 512
_RECON_FEATS = 64
# Penalty added between pixels of different regions in shifted windows.
_SHIFT_PENALTY = -100.0

# The three SR variants of the paper, as used for the release checkpoints (models/grl/grl_*.yaml
# overridden by experiment/sr/grl/grl_p256.yaml: window 32, stripes 64x64 with no stripe groups,
# and the anchor down factor set by scripts/grl/grl_test.md: 4 for tiny/small, 2 for base).
_SHARED_SR_SETTINGS: dict[str, Any] = {
    "in_channels": 3,
    "window_size": 32,
    "stripe_size": [64, 64],
    "stripe_shift": True,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "qkv_proj_type": "linear",
    "anchor_proj_type": "avgpool",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {**_SHARED_SR_SETTINGS, "embed_dim": 64, "depths": [4, 4, 4, 4], "num_heads_window": [2, 2, 2, 2],
             "num_heads_stripe": [2, 2, 2, 2], "anchor_window_down_factor": 4, "local_connection": False,
             "upsampler": "pixelshuffledirect"},
    "small": {**_SHARED_SR_SETTINGS, "embed_dim": 128, "depths": [4, 4, 4, 4], "num_heads_window": [2, 2, 2, 2],
              "num_heads_stripe": [2, 2, 2, 2], "anchor_window_down_factor": 4, "local_connection": False,
              "upsampler": "pixelshuffle"},
    "base": {**_SHARED_SR_SETTINGS, "embed_dim": 180, "depths": [4, 4, 8, 8, 8, 4, 4],
             "num_heads_window": [3] * 7, "num_heads_stripe": [3] * 7, "anchor_window_down_factor": 2,
             "local_connection": True, "upsampler": "pixelshuffle"},
}

RELEASE_URL = "https://github.com/ofsoundof/GRL-Image-Restoration/releases/download/v1.0.0/"
# Official SR checkpoints per variant and scale (Lightning checkpoints, keys under "model.").
RELEASE_FILES: dict[str, dict[int, str]] = {
    name: {scale: f"sr_grl_{name}_c3x{scale}.ckpt" for scale in (2, 3, 4)} for name in VARIANTS
}

# Geometry of the real-world x4 model (bsr_grl_base.ckpt, keys under "model_g."); its weights are
# the GRL-base shape with the nearest+conv upsampler. Read from its buffers by spandrel.
_REAL_WORLD_GEOMETRY = {"window_size": 16, "stripe_size": [32, 64], "anchor_window_down_factor": 4}
_SR_GEOMETRY = {"window_size": 32, "stripe_size": [64, 64]}

# Size-dependent buffers that upstream registers (persistently) on the network.
_SIZE_BUFFERS = (
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
_SIZE_BUFFER_SUFFIXES = (".relative_coords_table", ".relative_position_index", ".attn_mask")


# --------------------------------------------------------------------------------------------
# Size-dependent geometry: coordinate tables, relative indices, shift masks
# --------------------------------------------------------------------------------------------


def _log_coords_table(window: _Pair, down: int) -> torch.Tensor:
    """Relative offsets between a window and its (down-scaled) anchor window, log-spaced.

    Returns ``1 x Lh x Lw x 2`` with ``L = window + window // down - 1`` per axis; each axis is
    scaled so that its largest positive offset maps to 8, then ``sign(t) * log2(1 + |t|) / 3``.
    ``down == 1`` gives the ordinary window-to-window table.
    """
    anchor = [w // down for w in window]
    highest = [w - 1 - (w - a) // 2 for w, a in zip(window, anchor)]
    lowest = [-(a - 1) - (w - a) // 2 for w, a in zip(window, anchor)]
    axes = [torch.arange(lo, hi + 1, dtype=torch.float32) for lo, hi in zip(lowest, highest)]
    table = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)
    table = table / torch.tensor(highest, dtype=torch.float32) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.unsqueeze(0)


def _grid_coords(height: int, width: int) -> torch.Tensor:
    """``2 x (height*width)`` integer (row, col) coordinates in raster order."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()])


def _relative_index(window: _Pair, down: int, window_queries: bool) -> torch.Tensor:
    """Row index into the flattened coordinate table for every (query, key) pair.

    Both the window and its anchor window are counted from their top-left corner.
    ``window_queries``: queries are window pixels and keys anchors (``N_w x N_a``); otherwise
    the reverse (``N_a x N_w``).
    """
    anchor = (window[0] // down, window[1] // down)
    row_length = window[1] + anchor[1] - 1
    at_window, at_anchor = _grid_coords(*window), _grid_coords(*anchor)
    if window_queries:
        offset = (anchor[0] - 1, anchor[1] - 1)
        delta = at_window[:, :, None] - at_anchor[:, None, :]
    else:
        offset = (window[0] - 1, window[1] - 1)
        delta = at_anchor[:, :, None] - at_window[:, None, :]
    return (delta[0] + offset[0]) * row_length + (delta[1] + offset[1])


def _region_labels(size: _Pair, window: _Pair, shift: _Pair) -> torch.Tensor:
    """Label each pixel by which of the 3x3 bands of a cyclic shift it came from, per window.

    Returns ``num_windows x (window_h*window_w)``. The bands (written as Python slices, as
    upstream does, which also fixes their meaning when a shift is zero) are: everything above
    the last window, the last window minus the shift, and the last ``shift`` pixels.
    """
    labels = torch.zeros(size)
    bands = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for i, rows in enumerate(bands[0]):
        for j, cols in enumerate(bands[1]):
            labels[rows, cols] = 3 * i + j
    grid_h, grid_w = size[0] // window[0], size[1] // window[1]
    labels = labels.view(grid_h, window[0], grid_w, window[1]).permute(0, 2, 1, 3)
    return labels.reshape(grid_h * grid_w, window[0] * window[1])


class _ShiftMask:
    """The -100 penalty of shifted-window attention, for the windows that need it.

    Upstream stores ``num_windows x N_query x N_key`` penalties (0 or -100) and adds them to
    every window. Only windows that hold more than one region have non-zero entries, so only
    their region labels are kept (``windows`` indexes them within one image) and the penalty is
    expanded when it is added. Adding zero elsewhere would not change any logit.
    """

    def __init__(self, query_labels: torch.Tensor, key_labels: torch.Tensor) -> None:
        self.windows_per_image = query_labels.shape[0]
        both = torch.cat([query_labels, key_labels], dim=1)
        self.windows = torch.nonzero(both.amax(dim=1) != both.amin(dim=1)).flatten()
        self.query_labels = query_labels[self.windows]
        self.key_labels = key_labels[self.windows]

    def to(self, device: torch.device) -> "_ShiftMask":
        self.windows = self.windows.to(device)
        self.query_labels = self.query_labels.to(device)
        self.key_labels = self.key_labels.to(device)
        return self

    def add_to(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits``: ``(B*num_windows) x heads x N_query x N_key`` (fp32), updated in place."""
        if self.windows.numel():
            differs = self.query_labels[:, :, None] != self.key_labels[:, None, :]
            penalty = torch.zeros(differs.shape, dtype=logits.dtype, device=logits.device)
            penalty.masked_fill_(differs, _SHIFT_PENALTY)
            per_image = logits.view(-1, self.windows_per_image, *logits.shape[1:])
            per_image[:, self.windows] += penalty[None, :, None]
        return logits


class _StripeGeometry:
    """Tables, indices and shift masks of anchored stripe attention for one stripe orientation."""

    def __init__(self, size: _Pair, stripe: _Pair, down: int) -> None:
        self.table = _log_coords_table(stripe, down)
        self.index_anchor_to_stripe = _relative_index(stripe, down, window_queries=False)
        self.index_stripe_to_anchor = _relative_index(stripe, down, window_queries=True)
        shift = (stripe[0] // 2, stripe[1] // 2)
        stripe_labels = _region_labels(size, stripe, shift)
        anchor_labels = _region_labels(
            (size[0] // down, size[1] // down),
            (stripe[0] // down, stripe[1] // down),
            (shift[0] // down, shift[1] // down),
        )
        self.mask_anchor_to_stripe = _ShiftMask(anchor_labels, stripe_labels)
        self.mask_stripe_to_anchor = _ShiftMask(stripe_labels, anchor_labels)

    def to(self, device: torch.device) -> "_StripeGeometry":
        self.table = self.table.to(device)
        self.index_anchor_to_stripe = self.index_anchor_to_stripe.to(device)
        self.index_stripe_to_anchor = self.index_stripe_to_anchor.to(device)
        self.mask_anchor_to_stripe.to(device)
        self.mask_stripe_to_anchor.to(device)
        return self


class _Geometry:
    """Everything the attention layers need that depends on the padded feature size."""

    def __init__(self, size: _Pair, window: int, stripe: _Pair, down: int, device: torch.device) -> None:
        square = (window, window)
        self.window_table = _log_coords_table(square, 1).to(device)
        self.window_index = _relative_index(square, 1, window_queries=True).to(device)
        labels = _region_labels(size, square, (window // 2, window // 2))
        self.window_mask = _ShiftMask(labels, labels).to(device)
        self.stripes = {
            "H": _StripeGeometry(size, stripe, down).to(device),
            "V": _StripeGeometry(size, (stripe[1], stripe[0]), down).to(device),
        }


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def _to_windows(grid: torch.Tensor, window: _Pair) -> torch.Tensor:
    """``B x H x W x C`` -> ``(B*num_windows) x (wh*ww) x C``, windows in raster order."""
    b, h, w, c = grid.shape
    grid = grid.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _from_windows(tokens: torch.Tensor, window: _Pair, size: _Pair) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: ``(B*num_windows) x (wh*ww) x C`` -> ``B x H x W x C``."""
    grid_h, grid_w = size[0] // window[0], size[1] // window[1]
    c = tokens.shape[-1]
    tokens = tokens.view(-1, grid_h, grid_w, window[0], window[1], c)
    return tokens.permute(0, 1, 3, 2, 4, 5).reshape(-1, size[0], size[1], c)


class _PositionBiasMLP(nn.Sequential):
    """Continuous relative-position bias: 2 -> 512 -> ReLU -> heads (no bias), run in fp32."""

    def __init__(self, heads: int) -> None:
        super().__init__(nn.Linear(2, _BIAS_MLP_HIDDEN), nn.ReLU(), nn.Linear(_BIAS_MLP_HIDDEN, heads, bias=False))

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        hidden, _, out = self
        x = F.relu(F.linear(table, hidden.weight.float(), hidden.bias.float()))
        return F.linear(x, out.weight.float())


class _AttentionLogits(nn.Module):
    """Turns fp32 cosine similarities into logits: temperature, position bias, shift mask."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = _PositionBiasMLP(heads)

    def forward(
        self, cosine: torch.Tensor, table: torch.Tensor, index: torch.Tensor, mask: _ShiftMask | None
    ) -> torch.Tensor:
        heads = cosine.shape[1]
        # ``cosine`` is a fresh fp32 tensor owned by the caller, so it is updated in place.
        logits = cosine.mul_(torch.clamp(self.logit_scale.float(), max=_MAX_LOG_SCALE).exp())
        # Gather the per-offset bias for every (query, key) pair straight into heads x N_q x N_k
        # (from the transposed table, so the result is contiguous without a permute), then squash.
        # Squashing the small table first would be cheaper but not bit-identical on CPU, where
        # vectorised and scalar sigmoid paths can differ in the last bit.
        per_offset = self.cpb_mlp(table).view(-1, heads).t().contiguous()
        logits.add_(16 * torch.sigmoid(per_offset[:, index]))  # broadcast over windows
        if mask is not None:
            mask.add_to(logits)
        return logits


def _cosine_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    logits_of: _AttentionLogits,
    table: torch.Tensor,
    index: torch.Tensor,
    mask: _ShiftMask | None,
) -> torch.Tensor:
    """``softmax(logits(cos(q, k))) @ v`` on ``B_ x heads x N x d`` tensors.

    Normalisation, logits and softmax are computed in fp32 whatever the input dtype (no-ops for
    fp32 inputs); the probabilities are cast back to ``value``'s dtype for the weighted sum.
    """
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(key.float(), dim=-1)
    logits = logits_of(q @ k.transpose(-2, -1), table, index, mask)
    return logits.softmax(dim=-1).to(value.dtype) @ value


def _split_heads(tokens: torch.Tensor, parts: int, heads: int) -> torch.Tensor:
    """``B_ x N x (parts*heads*d)`` -> ``parts x B_ x heads x N x d``."""
    b, n, _ = tokens.shape
    return tokens.reshape(b, n, parts, heads, -1).permute(2, 0, 3, 1, 4)


class _WindowAttention(nn.Module):
    """Square-window attention; windows are cyclically shifted by half a window when ``shifted``."""

    def __init__(self, heads: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.heads = heads
        self.window = (window, window)
        self.shift = window // 2 if shifted else 0
        self.attn_transform = _AttentionLogits(heads)

    def forward(self, qkv: torch.Tensor, size: _Pair, geometry: _Geometry) -> torch.Tensor:
        b, length, channels = qkv.shape
        grid = qkv.view(b, size[0], size[1], channels)
        if self.shift:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        q, k, v = _split_heads(_to_windows(grid, self.window), 3, self.heads)
        mask = geometry.window_mask if self.shift else None
        out = _cosine_attention(q, k, v, self.attn_transform, geometry.window_table, geometry.window_index, mask)
        grid = _from_windows(out.transpose(1, 2).flatten(2), self.window, size)
        if self.shift:
            grid = torch.roll(grid, shifts=(self.shift, self.shift), dims=(1, 2))
        return grid.reshape(b, length, channels // 3)


class _AnchoredStripeAttention(nn.Module):
    """Stripe attention routed through anchors (two hops: anchors <- stripe, stripe <- anchors).

    ``orientation`` "H" uses ``stripe`` as (height, width); "V" uses it transposed.
    """

    def __init__(self, heads: int, stripe: _Pair, orientation: str, shifted: bool, down: int) -> None:
        super().__init__()
        self.heads = heads
        self.orientation = orientation
        self.stripe = stripe if orientation == "H" else (stripe[1], stripe[0])
        self.down = down
        self.shift = (self.stripe[0] // 2, self.stripe[1] // 2) if shifted else (0, 0)
        self.attn_transform1 = _AttentionLogits(heads)  # anchors attend to the stripe
        self.attn_transform2 = _AttentionLogits(heads)  # the stripe attends to the anchors

    def forward(self, qkv: torch.Tensor, anchors: torch.Tensor, size: _Pair, geometry: _Geometry) -> torch.Tensor:
        b, length, channels = qkv.shape
        shifted = self.shift != (0, 0)
        anchor_stripe = (self.stripe[0] // self.down, self.stripe[1] // self.down)
        grid = qkv.view(b, size[0], size[1], channels)
        if shifted:
            anchor_shift = (self.shift[0] // self.down, self.shift[1] // self.down)
            grid = torch.roll(grid, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
            anchors = torch.roll(anchors, shifts=(-anchor_shift[0], -anchor_shift[1]), dims=(1, 2))
        q, k, v = _split_heads(_to_windows(grid, self.stripe), 3, self.heads)
        a = _split_heads(_to_windows(anchors, anchor_stripe), 1, self.heads)[0]

        g = geometry.stripes[self.orientation]
        summary = _cosine_attention(
            a, k, v, self.attn_transform1, g.table, g.index_anchor_to_stripe,
            g.mask_anchor_to_stripe if shifted else None,
        )
        out = _cosine_attention(
            q, a, summary, self.attn_transform2, g.table, g.index_stripe_to_anchor,
            g.mask_stripe_to_anchor if shifted else None,
        )
        grid = _from_windows(out.transpose(1, 2).flatten(2), self.stripe, size)
        if shifted:
            grid = torch.roll(grid, shifts=self.shift, dims=(1, 2))
        return grid.reshape(b, length, channels // 3)


class _Projection(nn.Module):
    """A linear layer stored under ``body`` (upstream's QKV projection wrapper)."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.body = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _PooledReduction(nn.Module):
    """Anchors: pool by ``down`` (average or max), then a linear layer to half the channels."""

    def __init__(self, dim: int, down: int, pooling: str) -> None:
        super().__init__()
        self.down = down
        self.max_pool = pooling == "maxpool"
        self.reduction = nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor, size: _Pair) -> torch.Tensor:  # B x L x C -> B x h x w x C/2
        b, _, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, size[0], size[1])
        pool = F.max_pool2d if self.max_pool else F.avg_pool2d
        pooled = pool(grid, self.down, self.down)
        out = self.reduction(pooled.flatten(2).transpose(1, 2))
        return out.view(b, size[0] // self.down, size[1] // self.down, -1)


class _AnchorProjection(nn.Module):
    def __init__(self, dim: int, down: int, pooling: str) -> None:
        super().__init__()
        self.body = nn.ModuleList([_PooledReduction(dim, down, pooling)])

    def forward(self, x: torch.Tensor, size: _Pair) -> torch.Tensor:
        return self.body[0](x, size)


class _MixedAttention(nn.Module):
    """Shared qkv projection, window attention on one half of the channels, stripes on the other."""

    def __init__(
        self,
        dim: int,
        heads_window: int,
        heads_stripe: int,
        window: int,
        window_shifted: bool,
        stripe: _Pair,
        orientation: str,
        stripe_shifted: bool,
        down: int,
        qkv_bias: bool,
        anchor_pooling: str,
    ) -> None:
        super().__init__()
        self.qkv = _Projection(dim, 3 * dim, qkv_bias)
        self.anchor = _AnchorProjection(dim, down, anchor_pooling)
        self.window_attn = _WindowAttention(heads_window, window, window_shifted)
        self.stripe_attn = _AnchoredStripeAttention(heads_stripe, stripe, orientation, stripe_shifted, down)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: _Pair, geometry: _Geometry) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv_window, qkv_stripe = torch.split(qkv, qkv.shape[-1] // 2, dim=-1)
        anchors = self.anchor(x, size)
        out_window = self.window_attn(qkv_window, size, geometry)
        out_stripe = self.stripe_attn(qkv_stripe, anchors, size, geometry)
        return self.proj(torch.cat([out_window, out_stripe], dim=-1))


def _tokens_to_map(x: torch.Tensor, size: _Pair) -> torch.Tensor:
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, size[0], size[1])


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class _ChannelGate(nn.Module):
    """RCAN channel attention: global average -> 1x1 -> ReLU -> 1x1 -> sigmoid, times the input."""

    def __init__(self, channels: int, reduction: int = 18) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class _LocalBranch(nn.Module):
    """GRL-base's local modelling: 3x3 conv (C -> C/4), GELU, 3x3 conv (C/4 -> C), channel gate."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.GELU(), nn.Conv2d(dim // 4, dim, 3, 1, 1), _ChannelGate(dim)
        )

    def forward(self, x: torch.Tensor, size: _Pair) -> torch.Tensor:
        # A contiguous NCHW map, as upstream feeds it (the token view would be channels-last, and
        # the convolutions may then take a different, equally valid but not bit-identical path).
        return _map_to_tokens(self.cab(_tokens_to_map(x, size).contiguous()))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(
        self,
        dim: int,
        position: int,
        heads_window: int,
        heads_stripe: int,
        window: int,
        stripe: _Pair,
        stripe_shift: bool,
        down: int,
        mlp_ratio: float,
        qkv_bias: bool,
        anchor_pooling: str,
        local_connection: bool,
    ) -> None:
        super().__init__()
        # Position in the stage decides the variant: windows shift on even blocks, stripes are
        # "H" on even and "V" on odd blocks, and stripes shift on blocks 2, 3 (mod 4).
        self.attn = _MixedAttention(
            dim,
            heads_window,
            heads_stripe,
            window,
            window_shifted=position % 2 == 0,
            stripe=stripe,
            orientation="H" if position % 2 == 0 else "V",
            stripe_shifted=stripe_shift and position % 4 in (2, 3),
            down=down,
            qkv_bias=qkv_bias,
            anchor_pooling=anchor_pooling,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.conv = _LocalBranch(dim) if local_connection else None
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, size: _Pair, geometry: _Geometry) -> torch.Tensor:
        mixed = x + self.norm1(self.attn(x, size, geometry))
        if self.conv is not None:
            # Both branches read the block input: x + norm1(attn(x)) + conv(x).
            mixed = mixed + self.conv(x, size)
        return mixed + self.norm2(self.mlp(mixed))


class _Stage(nn.Module):
    """Blocks, then a 3x3 conv on the map, plus the stage input."""

    def __init__(self, depth: int, dim: int, **block_args: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(dim, i, **block_args) for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: _Pair, geometry: _Geometry) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y, size, geometry)
        return _map_to_tokens(self.conv(_tokens_to_map(y, size))) + x


class _PixelShuffleUpsampler(nn.Module):
    """Convs + pixel shuffles stored under ``up`` (x2^n / x3 steps, or one direct step)."""

    def __init__(self, steps: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_ch, out_ch, factor in steps:
            layers += [nn.Conv2d(in_ch, out_ch * factor * factor, 3, 1, 1), nn.PixelShuffle(factor)]
        self.up = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


_GeometryKey = tuple[int, int, str]


class GRL(nn.Module):
    """GRL for super-resolution. Takes RGB in [0, 1] of any size; returns ``scale`` times larger."""

    _GEOMETRY_CACHE_SIZE = 4

    def __init__(
        self,
        scale: int,
        in_channels: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads_window: Sequence[int],
        num_heads_stripe: Sequence[int],
        window_size: int,
        stripe_size: _Pair,
        stripe_shift: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        anchor_proj_type: str,
        anchor_window_down_factor: int,
        local_connection: bool,
        upsampler: str,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.upsampler = upsampler
        self.window_size = window_size
        self.stripe_size = stripe_size
        self.down = anchor_window_down_factor
        # The input is padded so that square windows and stripes tile it exactly.
        self.pad_multiple = max(window_size, *stripe_size)
        mean = _RGB_MEAN if in_channels == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self._geometry_cache: OrderedDict[_GeometryKey, _Geometry] = OrderedDict()

        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.norm_start = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(
            [
                _Stage(
                    depth,
                    embed_dim,
                    heads_window=heads_w,
                    heads_stripe=heads_s,
                    window=window_size,
                    stripe=stripe_size,
                    stripe_shift=stripe_shift,
                    down=anchor_window_down_factor,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    anchor_pooling=anchor_proj_type,
                    local_connection=local_connection,
                )
                for depth, heads_w, heads_s in zip(depths, num_heads_window, num_heads_stripe)
            ]
        )
        self.norm_end = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)

        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, _RECON_FEATS, 3, 1, 1), nn.LeakyReLU())
            factors = [3] if scale == 3 else [2] * int(math.log2(scale))
            self.upsample = _PixelShuffleUpsampler([(_RECON_FEATS, _RECON_FEATS, f) for f in factors])
            self.conv_last = nn.Conv2d(_RECON_FEATS, in_channels, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = _PixelShuffleUpsampler([(embed_dim, in_channels, scale)])
        else:  # "nearest+conv", x4: two nearest x2 steps, each followed by a conv
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, _RECON_FEATS, 3, 1, 1), nn.LeakyReLU())
            self.conv_up1 = nn.Conv2d(_RECON_FEATS, _RECON_FEATS, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(_RECON_FEATS, _RECON_FEATS, 3, 1, 1)
            self.conv_hr = nn.Conv2d(_RECON_FEATS, _RECON_FEATS, 3, 1, 1)
            self.conv_last = nn.Conv2d(_RECON_FEATS, in_channels, 3, 1, 1)

    def _geometry(self, size: _Pair, device: torch.device) -> _Geometry:
        key = (size[0], size[1], str(device))
        geometry = self._geometry_cache.get(key)
        if geometry is None:
            # Plain tensors even when first called under inference_mode, so that the cache can
            # be reused in any autograd mode.
            with torch.inference_mode(False), torch.no_grad():
                geometry = _Geometry(size, self.window_size, self.stripe_size, self.down, device)
            self._geometry_cache[key] = geometry
            while len(self._geometry_cache) > self._GEOMETRY_CACHE_SIZE:
                self._geometry_cache.popitem(last=False)
        else:
            self._geometry_cache.move_to_end(key)
        return geometry

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = -h % self.pad_multiple
        pad_w = -w % self.pad_multiple
        if not pad_h and not pad_w:
            return x
        # Upstream tries reflect padding and falls back to zeros when reflection is impossible
        # (padding at least as large as the side).
        mode = "reflect" if pad_h < h and pad_w < w else "constant"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        geometry = self._geometry(size, x.device)
        tokens = self.norm_start(_map_to_tokens(x))
        for stage in self.layers:
            tokens = stage(tokens, size, geometry)
        return _tokens_to_map(self.norm_end(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mean = self.mean.to(x.dtype)
        x = self._pad(x) - mean
        feat = self.conv_first(x)
        feat = self.conv_after_body(self._features(feat)) + feat
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(feat)
        else:
            y = self.conv_before_upsample(feat)
            y = F.leaky_relu(self.conv_up1(F.interpolate(y, scale_factor=2, mode="nearest")), 0.2)
            y = F.leaky_relu(self.conv_up2(F.interpolate(y, scale_factor=2, mode="nearest")), 0.2)
            out = self.conv_last(F.leaky_relu(self.conv_hr(y), 0.2))
        out = out + mean
        return out[:, :, : h * self.scale, : w * self.scale]


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


def build(
    scale: int,
    *,
    in_channels: int = 3,
    embed_dim: int,
    depths: Sequence[int],
    num_heads_window: Sequence[int],
    num_heads_stripe: Sequence[int],
    window_size: int,
    stripe_size: Sequence[int],
    stripe_shift: bool = True,
    mlp_ratio: float = 2.0,
    qkv_bias: bool = True,
    qkv_proj_type: str = "linear",
    anchor_proj_type: str = "avgpool",
    anchor_window_down_factor: int,
    local_connection: bool,
    upsampler: str,
) -> GRL:
    """Build an (uninitialised) GRL for SR; hyperparameters as in :data:`VARIANTS`.

    Only the options the official SR checkpoints use are implemented: linear qkv projection,
    pooled anchors (one stage), 3x3 conv at the end of each stage, fixed stripe sizes (no stripe
    groups), and the three SR upsamplers.
    """
    if len(stripe_size) != 2:
        raise ValueError(f"GRL: stripe_size must have two entries, got {stripe_size!r}")
    stripe = (int(stripe_size[0]), int(stripe_size[1]))
    if qkv_proj_type != "linear":
        raise ValueError(f"GRL: only qkv_proj_type='linear' is implemented, got {qkv_proj_type!r}")
    if anchor_proj_type not in ("avgpool", "maxpool"):
        raise ValueError(f"GRL: anchor_proj_type must be 'avgpool' or 'maxpool', got {anchor_proj_type!r}")
    if not len(depths) == len(num_heads_window) == len(num_heads_stripe) or not depths:
        raise ValueError("GRL: depths, num_heads_window and num_heads_stripe must have the same length")
    if embed_dim % 2 or any((embed_dim // 2) % h for h in [*num_heads_window, *num_heads_stripe]):
        raise ValueError("GRL: embed_dim/2 must be divisible by every head count")
    pad = max(window_size, *stripe)
    down = anchor_window_down_factor
    tiles_exactly = all(pad % s == 0 for s in (window_size, *stripe))
    if window_size < 2 or not tiles_exactly or any(s % down or s // down < 2 for s in stripe):
        raise ValueError(
            f"GRL: window {window_size} and stripes {stripe} must divide {pad}, and stripes must be "
            f"multiples of (and at least twice) the anchor down factor {down}"
        )
    if upsampler == "pixelshuffle":
        if scale != 3 and (scale < 2 or scale & (scale - 1)):
            raise ValueError(f"GRL: the pixelshuffle upsampler supports x2^n and x3, not x{scale}")
    elif upsampler == "pixelshuffledirect":
        if scale < 1:
            raise ValueError(f"GRL: invalid scale {scale}")
    elif upsampler == "nearest+conv":
        if scale != 4:
            raise ValueError(f"GRL: the nearest+conv upsampler is x4 only, not x{scale}")
    else:
        raise ValueError(f"GRL: unknown upsampler {upsampler!r}")
    return GRL(
        scale=int(scale),
        in_channels=in_channels,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads_window=list(num_heads_window),
        num_heads_stripe=list(num_heads_stripe),
        window_size=window_size,
        stripe_size=stripe,
        stripe_shift=stripe_shift,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        anchor_proj_type=anchor_proj_type,
        anchor_window_down_factor=down,
        local_connection=local_connection,
        upsampler=upsampler,
    )


def _is_size_buffer(key: str) -> bool:
    return key in _SIZE_BUFFERS or key.endswith(_SIZE_BUFFER_SUFFIXES)


def _unwrap(state_dict: Any) -> Mapping[str, Any]:
    """Strip checkpoint containers and the prefix that sits in front of the network's keys."""
    sd = state_dict
    for container in ("state_dict", "params_ema", "params"):
        if isinstance(sd, Mapping) and isinstance(sd.get(container), Mapping):
            sd = sd[container]
            break
    # Lightning keeps the network under "model." next to metric buffers ("best_val_metric", ...);
    # the real-world GAN checkpoint keeps the generator under "model_g." beside "model_d.".
    for prefix in ("model_g.", "model.module.", "model.", "module."):
        if f"{prefix}conv_first.weight" in sd:
            return {k[len(prefix) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
    return sd


def _geometry_from_buffers(sd: Mapping[str, Any]) -> dict[str, Any] | None:
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
        if any(s + s // down - 1 != int(n) for s, n in zip(stripe, table_sh.shape[1:3])):
            return None
    except (KeyError, AttributeError, IndexError, TypeError, ZeroDivisionError):
        return None
    return {"window_size": window, "stripe_size": stripe, "anchor_window_down_factor": down}


def prepare_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Official checkpoint -> state dict for :class:`GRL`.

    Unwraps ``state_dict`` / ``params``, keeps the network's keys (``model.``, ``model_g.`` or
    ``module.`` prefixes stripped; Lightning's metric buffers and a GAN discriminator dropped)
    and drops the size-dependent buffers, which are rebuilt for every input size.

    When those buffers are present they are also checked against the geometry that
    :func:`detect` assumes (it cannot see them): a contradiction raises ``ValueError`` rather
    than silently building a network with the wrong attention layout.
    """
    sd = _unwrap(state_dict)
    if "table_w" in sd and "conv_first.weight" in sd:
        from_buffers = _geometry_from_buffers(sd)
        kept = {k: v for k, v in sd.items() if not _is_size_buffer(k)}
        assumed = detect(kept)
        if from_buffers is not None and assumed is not None:
            differs = {k: (v, assumed[k]) for k, v in from_buffers.items() if assumed[k] != v}
            if differs:
                raise ValueError(
                    "GRL checkpoint geometry differs from what lightsr assumes for this variant "
                    f"(checkpoint buffers vs assumed): {differs}"
                )
        return kept
    return {k: v for k, v in sd.items() if not (isinstance(k, str) and _is_size_buffer(k))}


def _indices(keys: Sequence[str], prefix: str) -> list[int]:
    """Sorted integers ``i`` such that some key starts with ``prefix + f"{i}."``."""
    heads = (k[len(prefix) :].split(".", 1)[0] for k in keys if k.startswith(prefix))
    return sorted({int(h) for h in heads if h.isdigit()})


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
    keys = [k for k in state_dict.keys() if isinstance(k, str)]
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

    stages = _indices(keys, "layers.")
    if stages != list(range(len(stages))):
        return None
    depths, heads_window, heads_stripe = [], [], []
    for i in stages:
        blocks = _indices(keys, f"layers.{i}.blocks.")
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
        for i in _indices(keys, "upsample.up."):
            ratio = int(state_dict[f"upsample.up.{i}.weight"].shape[0]) // _RECON_FEATS
            factor = math.isqrt(ratio)
            if factor * factor != ratio or factor not in (2, 3):
                return None
            scale *= factor
    elif "upsample.up.0.weight" in state_dict:
        upsampler = "pixelshuffledirect"
        ratio = int(state_dict["upsample.up.0.weight"].shape[0]) // in_channels
        scale = math.isqrt(ratio)
        if scale * scale * in_channels != int(state_dict["upsample.up.0.weight"].shape[0]):
            return None
    else:
        return None  # restoration model (scale 1): not an upscaler
    if upsampler != "pixelshuffledirect" and int(state_dict["conv_last.weight"].shape[0]) != in_channels:
        return None

    if upsampler == "nearest+conv":
        geometry = dict(_REAL_WORLD_GEOMETRY)
    else:
        geometry = dict(_SR_GEOMETRY, anchor_window_down_factor=2 if local_connection else 4)
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


SPEC = ArchSpec(
    name="GRL",
    build=build,
    input_range=1.0,
    min_size=1,
    size_multiple=1,
    tile_overlap=32,
    tile_multiple=64,
    fp16_safe=False,
    bf16_safe=True,
    prepare_state_dict=prepare_state_dict,
    detect=detect,
    # Peak activation memory per LR pixel (benchmarks/memory_estimates.py, CPU peak RSS slope
    # between 64^2 and 128^2 inputs): GRL-tiny 29.7 KB fp32 / 27.1 KB bf16, GRL-small 26.7 / 24.8 KB.
    # The attention logits and softmax stay fp32 in bf16 and dominate, so bf16 saves little. GRL-base
    # has 3 heads to their 2 (1.5x the logits): ~45 / ~41 KB, plus ~8% headroom.
    activation_bytes_per_pixel=49152,
    half_activation_bytes_per_pixel=45056,
    # Attention logits of GRL-base: 3 heads x 1024 tokens (32x32 window) per pixel, fp32.
    widest_activation=3072,
    paper=(
        "Efficient and Explicit Modelling of Image Hierarchies for Image Restoration "
        "(Li et al., CVPR 2023)"
    ),
)
