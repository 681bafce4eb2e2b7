"""GRL's transformer blocks and stages (residual post-norm, optional convolutional channel attention)
and the pixel-shuffle upsampler."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .attention import MixedAttention
from .geometry import Geometry, Pair


def tokens_to_map(x: torch.Tensor, size: Pair) -> torch.Tensor:
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, size[0], size[1])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class ChannelGate(nn.Module):
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


class LocalBranch(nn.Module):
    """GRL-base's local modelling: 3x3 conv (C -> C/4), GELU, 3x3 conv (C/4 -> C), channel gate."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.GELU(), nn.Conv2d(dim // 4, dim, 3, 1, 1), ChannelGate(dim)
        )

    def forward(self, x: torch.Tensor, size: Pair) -> torch.Tensor:
        # A contiguous NCHW map, as upstream feeds it (the token view would be channels-last, and
        # the convolutions may then take a different, equally valid but not bit-identical path).
        return map_to_tokens(self.cab(tokens_to_map(x, size).contiguous()))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        position: int,
        heads_window: int,
        heads_stripe: int,
        window: int,
        stripe: Pair,
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
        self.attn = MixedAttention(
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
        self.conv = LocalBranch(dim) if local_connection else None
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, size: Pair, geometry: Geometry) -> torch.Tensor:
        mixed = x + self.norm1(self.attn(x, size, geometry))
        if self.conv is not None:
            # Both branches read the block input: x + norm1(attn(x)) + conv(x).
            mixed = mixed + self.conv(x, size)
        return mixed + self.norm2(self.mlp(mixed))


class Stage(nn.Module):
    """Blocks, then a 3x3 conv on the map, plus the stage input."""

    def __init__(self, depth: int, dim: int, **block_args: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, i, **block_args) for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: Pair, geometry: Geometry) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y, size, geometry)
        return map_to_tokens(self.conv(tokens_to_map(y, size))) + x


class PixelShuffleUpsampler(nn.Module):
    """Convs + pixel shuffles stored under ``up`` (x2^n / x3 steps, or one direct step)."""

    def __init__(self, steps: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_ch, out_ch, factor in steps:
            layers += [nn.Conv2d(in_ch, out_ch * factor * factor, 3, 1, 1), nn.PixelShuffle(factor)]
        self.up = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)
