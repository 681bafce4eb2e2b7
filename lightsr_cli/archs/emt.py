"""EMT: Efficient Mixed Transformer, lightweight super-resolution ("lsr") variant.

Paper: "Efficient Mixed Transformer for Single Image Super-Resolution" (Zheng et al., arXiv 2023).
Reference implementation: https://github.com/Fried-Rice-Lab/EMT (``archs/emt_arch.py``). This is an
independent re-implementation whose parameter names and shapes follow the official checkpoints, so
``EMT_LSR_x{2,3,4}.pth`` load with ``strict=True``.

Network outline (all maps are ``B x C x H x W``)::

    x in [0,255] -> minus DF2K mean*255 -> 3x3 conv (3 -> dim)
      -> n_blocks mixed blocks, each of n_layers pre-norm-free residual layers:
             x = x + mixer(x)          mixer = windowed self-attention for the first n_GTLs layers,
                                               circular pixel shift minus identity + BatchNorm otherwise
             x = x + mlp(x)            two "shift-then-1x1" convolutions around Swish
      -> + long skip -> 3x3 conv (dim -> 3*s*s) -> pixel shuffle -> plus DF2K mean*255

Details that matter for matching the official numbers:

* The mean shifts and the fixed shift masks are ``nn.Parameter`` objects in the checkpoint
  (``requires_grad=False``); they are loaded, not recomputed.
* The attention has no key projection and no scaling: logits are ``q @ q^T`` on channel vectors of
  size ``dim / (2 * num_heads)``. Half of the projected channels use tall windows (32x8), the other
  half wide windows (8x32). Each half is reflect-padded at the bottom/right up to a window multiple,
  rolled by the shift on every second attention layer, attended, rolled back and cropped.
  Reflect padding needs ``pad < size``, so the smallest accepted side is ``max(window)//2 + 1``
  (17 px for 32-px windows).
* The pixel mixer wraps around the image border (circular padding); the MLP shift convolutions
  zero-pad.

Precision: measured on Set14 (x4, fp32), the attention logits ``q @ q^T`` peak around 50 and no
activation exceeds ~270 (the [0,255] image itself), so fp16 has ample range. The logits are not
scaled, though, and an input far from natural images could push them past fp16's 65504, so under
fp16/bf16 the attention core (logits, softmax, weighted sum) upcasts q and v to fp32 and casts the
result back; everything else runs in the caller's dtype. fp32 inputs follow the official computation
order exactly (bit-identical on the parity fixtures).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import facts
from .detection import block_indices, is_numbered_from, pixel_shuffle_scale
from .spec import ArchSpec, StateDict

# RGB mean of DF2K (images 1-3450), as used by the official MeanShift(data_type="DF2K").
_DF2K_RGB_MEAN = (0.4690, 0.4490, 0.4036)
_PIXEL_RANGE = 255.0

_Pair = tuple[int, int]


def _as_pairs(values: Sequence[Sequence[int]]) -> tuple[_Pair, ...]:
    """[[32, 8], [8, 32]] (YAML lists) or tuples -> ((32, 8), (8, 32))."""
    return tuple((int(a), int(b)) for a, b in values)


# --------------------------------------------------------------------------------------------
# Fixed (non-trainable) building blocks whose tensors live in the checkpoint
# --------------------------------------------------------------------------------------------


class _ColourOffset(nn.Module):
    """Adds ``sign * 255 * DF2K mean`` per channel, expressed (as in the checkpoint) as a 1x1 conv."""

    def __init__(self, sign: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(3).view(3, 3, 1, 1), requires_grad=False)
        self.bias = nn.Parameter(sign * _PIXEL_RANGE * torch.tensor(_DF2K_RGB_MEAN), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


def _four_way_mask(channels: int, contiguous: bool) -> torch.Tensor:
    """One-hot 3x3 depthwise kernels that move each channel by one pixel in one of four directions
    (or not at all). ``contiguous`` chooses the channel layout: five consecutive groups (MLP shift
    convs) or interleaved with period five (pixel mixer). The checkpoint holds the same values;
    this only gives a freshly built module the right content.
    """
    mask = torch.zeros(channels, 1, 3, 3)
    # taps (row, col) in the order: from right, from left, from below, from above, centre
    taps = ((1, 2), (1, 0), (2, 1), (0, 1), (1, 1))
    if contiguous:
        group = channels // 5
        for i, (r, c) in enumerate(taps):
            end = channels if i == 4 else (i + 1) * group
            mask[i * group : end, 0, r, c] = 1.0
    else:
        for i, (r, c) in enumerate(taps):
            mask[i::5, 0, r, c] = 1.0
    return mask


class _ShiftPointwise(nn.Module):
    """Per-channel one-pixel shift (zero-padded 3x3 depthwise one-hot kernel), then a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels % 5:
            raise ValueError(f"shift conv needs channels divisible by 5, got {in_channels}")
        self.in_channels = in_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.mask = nn.Parameter(_four_way_mask(in_channels, contiguous=True), requires_grad=False)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1.0 / math.sqrt(in_channels), 1.0 / math.sqrt(in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = F.conv2d(x, self.mask, None, padding=1, groups=self.in_channels)
        return F.conv2d(shifted, self.weight, self.bias)


class _WrapShift(nn.Module):
    """Per-channel one-pixel shift that wraps around the image border (circular padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 5:
            raise ValueError(f"pixel mixer needs channels divisible by 5, got {channels}")
        self.channels = channels
        self.mask = nn.Parameter(_four_way_mask(channels, contiguous=False), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wrapped = F.pad(x, (1, 1, 1, 1), mode="circular")
        return F.conv2d(wrapped, self.mask, None, groups=self.channels)


# --------------------------------------------------------------------------------------------
# Token mixers and MLP
# --------------------------------------------------------------------------------------------


class _PixelMixLayer(nn.Module):
    """Local token mixer: BatchNorm(shifted(x) - x)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token_mixer = _WrapShift(dim)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token_mixer(x) - x)


def _attend_in_windows(qv: torch.Tensor, heads: int, window: _Pair, shift: _Pair) -> torch.Tensor:
    """Self-attention inside non-overlapping ``window`` tiles of one channel group.

    ``qv`` holds queries (first half of its channels, ``heads`` heads) and values (second half).
    Keys are the queries themselves and the logits are not scaled. Returns ``B x C/2 x H x W``.
    """
    b, ch, h, w = qv.shape
    wh, ww = window
    pad_h, pad_w = (-h) % wh, (-w) % ww
    if pad_h or pad_w:
        qv = F.pad(qv, (0, pad_w, 0, pad_h), mode="reflect")
    if shift[0] or shift[1]:
        qv = torch.roll(qv, shifts=shift, dims=(2, 3))
    hp, wp = qv.shape[-2:]
    nh, nw = hp // wh, wp // ww
    c = ch // (2 * heads)

    # (B, [q|v], head, c, nh, wh, nw, ww) -> ([q|v], B*head*nh*nw, wh*ww, c)
    tokens = qv.reshape(b, 2, heads, c, nh, wh, nw, ww).permute(1, 0, 2, 4, 6, 5, 7, 3)
    tokens = tokens.reshape(2, b * heads * nh * nw, wh * ww, c)
    q, v = tokens[0], tokens[1]

    low_precision = q.dtype not in (torch.float32, torch.float64)
    if low_precision:
        # Logits, softmax and the weighted sum in fp32; only this part is upcast.
        q, v = q.float(), v.float()
    attn = torch.softmax(q @ q.transpose(-2, -1), dim=-1)
    out = attn @ v
    if low_precision:
        out = out.to(qv.dtype)

    # (B*head*nh*nw, wh*ww, c) -> (B, head*c, H, W)
    out = out.reshape(b, heads, nh, nw, wh, ww, c).permute(0, 1, 6, 2, 4, 3, 5)
    out = out.reshape(b, heads * c, hp, wp)
    if shift[0] or shift[1]:
        out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    return out[:, :, :h, :w]


class _WindowAttentionLayer(nn.Module):
    """Global-ish token mixer: (shifted) window self-attention with mixed window shapes."""

    def __init__(self, dim: int, num_heads: int, windows: tuple[_Pair, ...], shifts: tuple[_Pair, ...] | None) -> None:
        super().__init__()
        if (2 * dim) % (2 * len(windows) * num_heads):
            raise ValueError(f"dim {dim} does not split into {len(windows)} window groups x {num_heads} heads")
        self.num_heads = num_heads
        self.windows = windows
        self.shifts = shifts if shifts is not None else ((0, 0),) * len(windows)
        if len(self.shifts) != len(windows):
            raise ValueError("shift_list and window_list must have the same length")
        self.attn = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim))
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qv = self.attn(x)
        groups = torch.chunk(qv, len(self.windows), dim=1)
        mixed = [
            _attend_in_windows(g, self.num_heads, win, sh) for g, win, sh in zip(groups, self.windows, self.shifts, strict=False)
        ]
        return self.proj(torch.cat(mixed, dim=1))


class _ShiftMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = _ShiftPointwise(dim, hidden)
        self.fc2 = _ShiftPointwise(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = x * torch.sigmoid(x)  # Swish
        return self.fc2(x)


class _MixedBlock(nn.Module):
    """n_layers residual (mixer, MLP) pairs; the first n_gtls mixers are attention layers and
    every second attention layer uses shifted windows."""

    def __init__(
        self,
        dim: int,
        n_layers: int,
        num_heads: int,
        n_gtls: int,
        mlp_ratio: int,
        windows: tuple[_Pair, ...],
        shifts: tuple[_Pair, ...],
    ) -> None:
        super().__init__()
        mixers: list[nn.Module] = []
        for i in range(n_layers):
            if i < n_gtls:
                mixers.append(_WindowAttentionLayer(dim, num_heads, windows, shifts if i % 2 == 1 else None))
            else:
                mixers.append(_PixelMixLayer(dim))
        self.sa_list = nn.ModuleList(mixers)
        self.mlp_list = nn.ModuleList(_ShiftMlp(dim, dim * mlp_ratio) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for mixer, mlp in zip(self.sa_list, self.mlp_list, strict=False):
            x = x + mixer(x)
            x = x + mlp(x)
        return x


class EMT(nn.Module):
    """EMT with the lightweight ("lsr") tail: one 3x3 conv to 3*s^2 channels and a pixel shuffle.

    Takes and returns RGB in [0, 255]; any H, W >= ``min_input_size``.
    """

    def __init__(
        self,
        scale: int,
        dim: int = 60,
        n_blocks: int = 6,
        n_layers: int = 6,
        num_heads: int = 3,
        mlp_ratio: int = 2,
        n_GTLs: int = 2,
        window_list: Sequence[Sequence[int]] = ((32, 8), (8, 32)),
        shift_list: Sequence[Sequence[int]] = ((16, 4), (4, 16)),
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_channels != 3 or out_channels != 3:
            raise ValueError("EMT's mean shift is defined for RGB only")
        windows = _as_pairs(window_list)
        shifts = _as_pairs(shift_list)
        self.scale = int(scale)
        # Reflect padding to a window multiple requires pad < size on each side.
        self.min_input_size = max(max(w) // 2 + 1 for w in windows)

        self.sub_mean = _ColourOffset(sign=-1)
        self.add_mean = _ColourOffset(sign=+1)
        self.head = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.body = nn.Sequential(
            *(
                _MixedBlock(dim, n_layers, num_heads, n_GTLs, mlp_ratio, windows, shifts)
                for _ in range(n_blocks)
            )
        )
        self.tail = nn.Sequential(
            nn.Conv2d(dim, out_channels * self.scale**2, 3, padding=1),
            nn.PixelShuffle(self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise ValueError(
                f"EMT needs LR inputs of at least {self.min_input_size} px per side, got {h}x{w}; pad it first"
            )
        feat = self.head(self.sub_mean(x))
        feat = self.body(feat) + feat
        return self.add_mean(self.tail(feat))


# --------------------------------------------------------------------------------------------
# Spec: building, checkpoint handling, detection
# --------------------------------------------------------------------------------------------

_DEFAULTS: dict[str, Any] = {
    "dim": 60,
    "n_blocks": 6,
    "n_layers": 6,
    "num_heads": 3,
    "mlp_ratio": 2,
    "n_GTLs": 2,
    "window_list": ((32, 8), (8, 32)),
    "shift_list": ((16, 4), (4, 16)),
}


def build(scale: int, **hyperparameters: Any) -> EMT:
    """The registry's entry point: EMT's own keyword arguments (and their defaults) apply."""
    return EMT(scale=scale, **hyperparameters)


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    """Recognise an EMT (lsr) state dict and read its hyperparameters from key names and shapes.

    num_heads, window_list and shift_list leave no trace in the weights (attention has no per-head
    parameters); the official values are returned for them.
    """
    keys = list(state_dict.keys())
    required = (
        "sub_mean.weight",
        "add_mean.bias",
        "head.weight",
        "tail.0.weight",
        "body.0.mlp_list.0.fc1.weight",
        "body.0.mlp_list.0.fc1.mask",
    )
    if not all(k in state_dict for k in required):
        return None
    head = state_dict["head.weight"]
    tail = state_dict["tail.0.weight"]
    if head.ndim != 4 or tail.ndim != 4 or tuple(state_dict["sub_mean.weight"].shape) != (3, 3, 1, 1):
        return None
    if any(k.startswith("tail.") and not k.startswith("tail.0.") for k in keys):
        return None  # a classical ("csr") multi-stage tail: not the lsr variant
    dim = int(head.shape[0])
    scale = pixel_shuffle_scale(int(tail.shape[0]))
    if scale is None or int(tail.shape[1]) != dim:
        return None

    blocks = block_indices(keys, "body.")
    layers = block_indices(keys, "body.0.sa_list.")
    if not is_numbered_from(blocks) or not is_numbered_from(layers):
        return None
    attn_layers = [i for i in layers if f"body.0.sa_list.{i}.attn.0.weight" in state_dict]
    n_gtls = len(attn_layers)
    if attn_layers != list(range(n_gtls)):
        return None
    hidden = int(state_dict["body.0.mlp_list.0.fc1.weight"].shape[0])
    if hidden % dim:
        return None
    return {
        "scale": scale,
        "dim": dim,
        "n_blocks": len(blocks),
        "n_layers": len(layers),
        "num_heads": _DEFAULTS["num_heads"],
        "mlp_ratio": hidden // dim,
        "n_GTLs": n_gtls,
        "window_list": _DEFAULTS["window_list"],
        "shift_list": _DEFAULTS["shift_list"],
    }


# Traits, as measured (CPU, official x2/x4 weights, Set14):
# * min_size 17: reflect padding to a 32-px window needs pad < size (16 px fails, 17 works).
# * size_multiple 1: every attention layer pads itself; any size >= 17 runs.
# * tile_multiple 32 and tile_overlap 32: 32-multiple patches fill whole 32x8/8x32 windows (no
#   reflect-padded rows inside a patch), and tile starts that are 32-multiples share the whole
#   image's window grid. 64-px tiles of a 128x192 LR image vs the whole-image run, away from the image
#   border: overlap 16 -> up to 4.5/255 at the seams (54.7 dB vs whole), 32 -> <= 1.5/255
#   (58.2 dB), 64 -> <= 0.3/255 (65.8 dB). Near the image border tiles differ by up to ~4-6/255 at
#   any overlap because the pixel mixer wraps around the (whole image vs tile) border. Through
#   engine.Upscaler (160x224 LR, x2): overlap 16 -> 54.7 dB PSNR-Y vs whole, 32 -> 55.3-55.6 dB.
#   Where a tile starts matters more than its overlap: a crop of Set14 x4 img_002 starting 32 rows
#   down reproduces the whole-image output to 0.035/255 mean (2.6 max) 16-48 px inside it, one
#   starting 8, 16 or 24 rows down only to ~0.24/255 mean (~8 max), because its windows (and the
#   unshifted/shifted layer roles) no longer coincide with the whole image's.
# * activation_bytes_per_pixel: peak RSS growth of a CPU forward is ~9.2 KB per LR pixel in fp32 and
#   ~7.5 KB in fp16 (the window logits and softmax, 2 x 3 KB/px, stay fp32 in either). The engine
#   scales this figure by itemsize/4, so it is set to cover the fp16 case.
# * fp16_safe: with the fp32 attention core, fp16 stays finite everywhere tried (incl. dithered and
#   noise inputs whose logits pass 65504, where a plain .half() gives all-NaN) and is within ~1/255
#   of fp32 on natural images (58-62 dB vs fp32; Set14 PSNR-Y vs HR unchanged within 5e-4 dB).
#   On 1-px dithers and very strong noise the official fp32 network is itself unstable (logits
#   ~1e5, outputs far outside [0,255]); there every precision gives a different, equally bad image.
# * bf16_safe False: finite, but 8 mantissa bits leave max errors of 3-15/255 on clean Set14 crops
#   (47-54 dB vs fp32) and ~130/255 on a noisy one; fp16 is the reduced precision to use.
SPEC = ArchSpec(
    name="EMT",
    build=build,
    input_range=255.0,
    min_size=17,
    size_multiple=1,
    tile_overlap=32,
    tile_multiple=32,
    fp16_safe=True,
    bf16_safe=False,
    detect=detect,
    paper=facts.EMT.paper,
    # Measured (benchmarks/memory_estimates.py): 7.9 KB fp32, 6.5 KB bf16 per LR pixel; the attention
    # core stays fp32 in half precision, hence an explicit half estimate.
    activation_bytes_per_pixel=20480,
    half_activation_bytes_per_pixel=10240,
    # Attention logits: 3 heads x 256 tokens per (32x8) window, per pixel.
    widest_activation=768,
    # Its token mixers reinterpret memory layouts: channels_last weights give wrong outputs.
    channels_last=False,
)
