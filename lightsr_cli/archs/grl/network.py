"""The GRL network for super-resolution and :func:`build`, which checks the options the official
SR checkpoints use."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PixelShuffleUpsampler, Stage, map_to_tokens, tokens_to_map
from .geometry import RECON_FEATS, RGB_MEAN, Geometry, Pair

GeometryKey = tuple[int, int, str]


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
        stripe_size: Pair,
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
        mean = RGB_MEAN if in_channels == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self._geometry_cache: OrderedDict[GeometryKey, Geometry] = OrderedDict()

        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.norm_start = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(
            [
                Stage(
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
                for depth, heads_w, heads_s in zip(depths, num_heads_window, num_heads_stripe, strict=False)
            ]
        )
        self.norm_end = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)

        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, RECON_FEATS, 3, 1, 1), nn.LeakyReLU())
            factors = [3] if scale == 3 else [2] * int(math.log2(scale))
            self.upsample = PixelShuffleUpsampler([(RECON_FEATS, RECON_FEATS, f) for f in factors])
            self.conv_last = nn.Conv2d(RECON_FEATS, in_channels, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = PixelShuffleUpsampler([(embed_dim, in_channels, scale)])
        else:  # "nearest+conv", x4: two nearest x2 steps, each followed by a conv
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, RECON_FEATS, 3, 1, 1), nn.LeakyReLU())
            self.conv_up1 = nn.Conv2d(RECON_FEATS, RECON_FEATS, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(RECON_FEATS, RECON_FEATS, 3, 1, 1)
            self.conv_hr = nn.Conv2d(RECON_FEATS, RECON_FEATS, 3, 1, 1)
            self.conv_last = nn.Conv2d(RECON_FEATS, in_channels, 3, 1, 1)

    def _geometry(self, size: Pair, device: torch.device) -> Geometry:
        key = (size[0], size[1], str(device))
        geometry = self._geometry_cache.get(key)
        if geometry is None:
            # Plain tensors even when first called under inference_mode, so that the cache can
            # be reused in any autograd mode.
            with torch.inference_mode(False), torch.no_grad():
                geometry = Geometry(size, self.window_size, self.stripe_size, self.down, device)
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
        tokens = self.norm_start(map_to_tokens(x))
        for stage in self.layers:
            tokens = stage(tokens, size, geometry)
        return tokens_to_map(self.norm_end(tokens), size)

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
