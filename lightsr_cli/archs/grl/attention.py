"""GRL's attention: cosine window attention, anchored stripe attention, and the mixed block that
splits the channels between them (normalisation, logits and softmax always in fp32)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import BIAS_MLP_HIDDEN, MAX_LOG_SCALE, Geometry, Pair, ShiftMask, from_windows, to_windows


class PositionBiasMLP(nn.Sequential):
    """Continuous relative-position bias: 2 -> 512 -> ReLU -> heads (no bias), run in fp32."""

    def __init__(self, heads: int) -> None:
        super().__init__(nn.Linear(2, BIAS_MLP_HIDDEN), nn.ReLU(), nn.Linear(BIAS_MLP_HIDDEN, heads, bias=False))

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        hidden, _, out = self
        x = F.relu(F.linear(table, hidden.weight.float(), hidden.bias.float()))
        return F.linear(x, out.weight.float())


class AttentionLogits(nn.Module):
    """Turns fp32 cosine similarities into logits: temperature, position bias, shift mask."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = PositionBiasMLP(heads)

    def forward(
        self, cosine: torch.Tensor, table: torch.Tensor, index: torch.Tensor, mask: ShiftMask | None
    ) -> torch.Tensor:
        heads = cosine.shape[1]
        # ``cosine`` is a fresh fp32 tensor owned by the caller, so it is updated in place.
        logits = cosine.mul_(torch.clamp(self.logit_scale.float(), max=MAX_LOG_SCALE).exp())
        # Gather the per-offset bias for every (query, key) pair straight into heads x N_q x N_k
        # (from the transposed table, so the result is contiguous without a permute), then squash.
        # Squashing the small table first would be cheaper but not bit-identical on CPU, where
        # vectorised and scalar sigmoid paths can differ in the last bit.
        per_offset = self.cpb_mlp(table).view(-1, heads).t().contiguous()
        logits.add_(16 * torch.sigmoid(per_offset[:, index]))  # broadcast over windows
        return logits if mask is None else mask.add_to(logits)


def cosine_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    logits_of: AttentionLogits,
    table: torch.Tensor,
    index: torch.Tensor,
    mask: ShiftMask | None,
) -> torch.Tensor:
    """``softmax(logits(cos(q, k))) @ v`` on ``B_ x heads x N x d`` tensors.

    Normalisation, logits and softmax are computed in fp32 whatever the input dtype (no-ops for
    fp32 inputs); the probabilities are cast back to ``value``'s dtype for the weighted sum.
    """
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(key.float(), dim=-1)
    logits = logits_of(q @ k.transpose(-2, -1), table, index, mask)
    return logits.softmax(dim=-1).to(value.dtype) @ value


def split_heads(tokens: torch.Tensor, parts: int, heads: int) -> torch.Tensor:
    """``B_ x N x (parts*heads*d)`` -> ``parts x B_ x heads x N x d``."""
    b, n, _ = tokens.shape
    return tokens.reshape(b, n, parts, heads, -1).permute(2, 0, 3, 1, 4)


class WindowAttention(nn.Module):
    """Square-window attention; windows are cyclically shifted by half a window when ``shifted``."""

    def __init__(self, heads: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.heads = heads
        self.window = (window, window)
        self.shift = window // 2 if shifted else 0
        self.attn_transform = AttentionLogits(heads)

    def forward(self, qkv: torch.Tensor, size: Pair, geometry: Geometry) -> torch.Tensor:
        b, length, channels = qkv.shape
        grid = qkv.view(b, size[0], size[1], channels)
        if self.shift:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        q, k, v = split_heads(to_windows(grid, self.window), 3, self.heads)
        mask = geometry.window_mask if self.shift else None
        out = cosine_attention(q, k, v, self.attn_transform, geometry.window_table, geometry.window_index, mask)
        grid = from_windows(out.transpose(1, 2).flatten(2), self.window, size)
        if self.shift:
            grid = torch.roll(grid, shifts=(self.shift, self.shift), dims=(1, 2))
        return grid.reshape(b, length, channels // 3)


class AnchoredStripeAttention(nn.Module):
    """Stripe attention routed through anchors (two hops: anchors <- stripe, stripe <- anchors).

    ``orientation`` "H" uses ``stripe`` as (height, width); "V" uses it transposed.
    """

    def __init__(self, heads: int, stripe: Pair, orientation: str, shifted: bool, down: int) -> None:
        super().__init__()
        self.heads = heads
        self.orientation = orientation
        self.stripe = stripe if orientation == "H" else (stripe[1], stripe[0])
        self.down = down
        self.shift = (self.stripe[0] // 2, self.stripe[1] // 2) if shifted else (0, 0)
        self.attn_transform1 = AttentionLogits(heads)  # anchors attend to the stripe
        self.attn_transform2 = AttentionLogits(heads)  # the stripe attends to the anchors

    def forward(self, qkv: torch.Tensor, anchors: torch.Tensor, size: Pair, geometry: Geometry) -> torch.Tensor:
        b, length, channels = qkv.shape
        shifted = self.shift != (0, 0)
        anchor_stripe = (self.stripe[0] // self.down, self.stripe[1] // self.down)
        grid = qkv.view(b, size[0], size[1], channels)
        if shifted:
            anchor_shift = (self.shift[0] // self.down, self.shift[1] // self.down)
            grid = torch.roll(grid, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
            anchors = torch.roll(anchors, shifts=(-anchor_shift[0], -anchor_shift[1]), dims=(1, 2))
        q, k, v = split_heads(to_windows(grid, self.stripe), 3, self.heads)
        a = split_heads(to_windows(anchors, anchor_stripe), 1, self.heads)[0]

        g = geometry.stripes[self.orientation]
        summary = cosine_attention(
            a, k, v, self.attn_transform1, g.table, g.index_anchor_to_stripe,
            g.mask_anchor_to_stripe if shifted else None,
        )
        out = cosine_attention(
            q, a, summary, self.attn_transform2, g.table, g.index_stripe_to_anchor,
            g.mask_stripe_to_anchor if shifted else None,
        )
        grid = from_windows(out.transpose(1, 2).flatten(2), self.stripe, size)
        if shifted:
            grid = torch.roll(grid, shifts=self.shift, dims=(1, 2))
        return grid.reshape(b, length, channels // 3)


class Projection(nn.Module):
    """A linear layer stored under ``body`` (upstream's QKV projection wrapper)."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.body = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PooledReduction(nn.Module):
    """Anchors: pool by ``down`` (average or max), then a linear layer to half the channels."""

    def __init__(self, dim: int, down: int, pooling: str) -> None:
        super().__init__()
        self.down = down
        self.max_pool = pooling == "maxpool"
        self.reduction = nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor, size: Pair) -> torch.Tensor:  # B x L x C -> B x h x w x C/2
        b, _, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, size[0], size[1])
        pool = F.max_pool2d if self.max_pool else F.avg_pool2d
        pooled = pool(grid, self.down, self.down)
        out = self.reduction(pooled.flatten(2).transpose(1, 2))
        return out.view(b, size[0] // self.down, size[1] // self.down, -1)


class AnchorProjection(nn.Module):
    def __init__(self, dim: int, down: int, pooling: str) -> None:
        super().__init__()
        self.body = nn.ModuleList([PooledReduction(dim, down, pooling)])

    def forward(self, x: torch.Tensor, size: Pair) -> torch.Tensor:
        return self.body[0](x, size)


class MixedAttention(nn.Module):
    """Shared qkv projection, window attention on one half of the channels, stripes on the other."""

    def __init__(
        self,
        dim: int,
        heads_window: int,
        heads_stripe: int,
        window: int,
        window_shifted: bool,
        stripe: Pair,
        orientation: str,
        stripe_shifted: bool,
        down: int,
        qkv_bias: bool,
        anchor_pooling: str,
    ) -> None:
        super().__init__()
        self.qkv = Projection(dim, 3 * dim, qkv_bias)
        self.anchor = AnchorProjection(dim, down, anchor_pooling)
        self.window_attn = WindowAttention(heads_window, window, window_shifted)
        self.stripe_attn = AnchoredStripeAttention(heads_stripe, stripe, orientation, stripe_shifted, down)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: Pair, geometry: Geometry) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv_window, qkv_stripe = torch.split(qkv, qkv.shape[-1] // 2, dim=-1)
        anchors = self.anchor(x, size)
        out_window = self.window_attn(qkv_window, size, geometry)
        out_stripe = self.stripe_attn(qkv_stripe, anchors, size, geometry)
        return self.proj(torch.cat([out_window, out_stripe], dim=-1))
