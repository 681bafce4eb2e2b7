"""BSRN and BSRN-S: Blueprint Separable Residual Network (NTIRE 2022 efficient SR winner).

Li et al., "Blueprint Separable Residual Network for Efficient Image Super-Resolution", CVPRW 2022.
Official code: https://github.com/xiaom233/BSRN (MIT). This is an independent re-implementation
written for lightsr; only the parameter names and shapes follow the official checkpoints, so that
``net_g_BSRN_x{2,3,4}.pth`` and ``net_g_BSRN-S.pth`` load with ``strict=True``.

Shape of the network (both variants)::

    RGB [0,1] --repeat x4 on channels--> fea_conv (BSConv) --> B1 .. Bn (residual blocks)
      concat(B1..Bn) --> c1 (1x1) --> GELU --> c2 (BSConv) --> + fea_conv output
      --> 3x3 conv to 3*s*s channels --> pixel shuffle --> RGB [0,1]

Each block distils features in three steps (a 1x1 "distilled" branch and a BSConv "refined"
branch each step), fuses them with a 1x1 conv, then gates the result with an enhanced spatial
attention (ESA: a stride-2 conv, a 7x7/3 max pool, three BSConvs, bilinear upsampling back).

The two variants differ in the block tail and in how pointwise convolutions are stored:

* ``bsrn`` (class ``BSRN`` upstream): pointwise convs are 1x1 ``Conv2d`` (the BSConv pointwise
  has no bias); blocks end with contrast-aware channel attention (CCA: per-channel std + mean
  over the whole map, a squeeze-excite MLP, sigmoid). 64 features, 8 blocks, x2/x3/x4.
* ``bsrn-s`` (class ``RFDNFINALB5`` upstream): pointwise convs are ``nn.Linear`` layers applied
  over channels (all with bias); no CCA, blocks end with a learnt per-channel scale ``cw`` and a
  pointwise ``conv_out``; the ESA's stride-2 conv is a plain 3x3 conv. 48 features, 5 blocks, x4.

Precision: CCA's statistics reduce over H*W. Upstream computes them as plain sums, which exceed
the fp16 range (65504) on large maps (a 640x360 map of values around 1 already sums to 230400;
upstream BSRN x2 in fp16 gives inf on 640x360 inputs). Here those statistics are always
computed as fp32 means and cast back (:func:`contrast_stats`); for fp32 inputs they equal
upstream's to float rounding, and everything else in the network stays in the caller's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import facts
from .detection import block_indices, is_numbered_from, matches_network, pixel_shuffle_scale
from .spec import ArchSpec, StateDict

VARIANTS = ("bsrn", "bsrn-s")


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class LinearPointwise(nn.Linear):
    """A 1x1 convolution whose weight is stored as an ``nn.Linear`` ((out, in) weight + bias).

    BSRN-S checkpoints keep their pointwise layers as ``nn.Linear`` and apply them on a
    channels-last permutation. Applying the same weight as a 1x1 convolution on the NCHW map is
    mathematically identical and avoids two permutes per layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: N, C_in, H, W
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def pointwise(in_ch: int, out_ch: int, linear: bool, bias: bool = True) -> nn.Module:
    """A 1x1 conv, stored as Conv2d (BSRN) or as Linear (BSRN-S)."""
    if linear:
        return LinearPointwise(in_ch, out_ch, bias=bias)
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=bias)


class BSConvU(nn.Module):
    """Blueprint separable conv ("unconstrained" form): a pointwise conv then a depthwise conv.

    The pointwise part mixes channels; the depthwise part applies one spatial kernel per output
    channel (it carries the bias, and the stride/padding). In BSRN the pointwise conv is a 1x1
    Conv2d without bias; in BSRN-S it is a Linear layer with bias.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        linear_pw: bool = False,
    ) -> None:
        super().__init__()
        self.pw = pointwise(in_ch, out_ch, linear=linear_pw, bias=linear_pw)
        self.dw = nn.Conv2d(out_ch, out_ch, kernel_size, stride, padding, groups=out_ch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


def contrast_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-channel ``std + mean`` over the spatial dims (N, C, 1, 1), computed in fp32.

    This is CCA's descriptor (population std, i.e. divided by H*W, plus the average). Upstream
    forms it from plain sums over H*W, which overflow fp16 on large maps; accumulating in fp32
    keeps half-precision inference finite at any size. The result is cast back to ``x.dtype`` so
    the small MLP that follows runs in the network's own precision.
    """
    x32 = x.float()
    mean = x32.mean(dim=(2, 3), keepdim=True)
    var = (x32 - mean).square().mean(dim=(2, 3), keepdim=True)
    return (var.sqrt() + mean).to(x.dtype)


class ContrastChannelAttention(nn.Module):
    """CCA: squeeze-excite channel gating driven by per-channel contrast (std) plus mean."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # Indices 0 and 2 hold the weights; the names match the official checkpoints.
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(contrast_stats(x))


class ESA(nn.Module):
    """Enhanced spatial attention: a coarse, large-receptive-field mask that gates the features.

    Reduce channels to C/4, downsample (3x3 stride-2 conv without padding, then 7x7 max pool with
    stride 3), refine with three 3x3 BSConvs, upsample bilinearly to the input size, add a 1x1
    skip of the reduced features, expand back to C channels and squash with a sigmoid.

    The unpadded stride-2 conv and the 7x7 pool are why the network needs inputs of at least
    15 pixels per side: (15 - 3) // 2 + 1 = 7 is the smallest map the pool accepts.
    """

    def __init__(self, channels: int, linear_pw: bool) -> None:
        super().__init__()
        reduced = channels // 4
        self.conv1 = pointwise(channels, reduced, linear=linear_pw)
        self.conv_f = pointwise(reduced, reduced, linear=linear_pw)
        if linear_pw:  # BSRN-S downsamples with a dense 3x3 conv
            self.conv2 = nn.Conv2d(reduced, reduced, 3, stride=2, padding=0)
        else:
            self.conv2 = BSConvU(reduced, reduced, 3, stride=2, padding=0)
        self.conv_max = BSConvU(reduced, reduced, linear_pw=linear_pw)
        self.conv3 = BSConvU(reduced, reduced, linear_pw=linear_pw)
        self.conv3_ = BSConvU(reduced, reduced, linear_pw=linear_pw)
        self.conv4 = pointwise(reduced, channels, linear=linear_pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        coarse = F.max_pool2d(self.conv2(reduced), kernel_size=7, stride=3)
        coarse = F.gelu(self.conv_max(coarse))
        coarse = F.gelu(self.conv3(coarse))
        coarse = self.conv3_(coarse)
        coarse = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        mask = torch.sigmoid(self.conv4(coarse + self.conv_f(reduced)))
        return x * mask


class DistillationBlock(nn.Module):
    """One residual block: three distil/refine steps, 1x1 fusion, ESA, then the variant's tail.

    Step k takes the running feature ``r``: a 1x1 conv "distils" C/2 channels that are kept
    aside, and a BSConv "refines" ``r`` with a residual connection. After three steps a last
    BSConv contributes C/2 more channels; the four C/2 pieces are fused back to C by ``c5``.
    Tail: ``bsrn`` applies CCA; ``bsrn-s`` scales channels by ``cw`` and mixes them with
    ``conv_out``. The block's input is added back at the end.
    """

    def __init__(self, channels: int, variant: str) -> None:
        super().__init__()
        linear = variant == "bsrn-s"
        half = channels // 2
        self.c1_d = pointwise(channels, half, linear=linear)
        self.c1_r = BSConvU(channels, channels, linear_pw=linear)
        self.c2_d = pointwise(channels, half, linear=linear)
        self.c2_r = BSConvU(channels, channels, linear_pw=linear)
        self.c3_d = pointwise(channels, half, linear=linear)
        self.c3_r = BSConvU(channels, channels, linear_pw=linear)
        self.c4 = BSConvU(channels, half, linear_pw=linear)
        self.c5 = pointwise(4 * half, channels, linear=linear)
        self.esa = ESA(channels, linear_pw=linear)
        if linear:
            # Upstream initialises this randomly; the value always comes from the checkpoint.
            self.cw = nn.Parameter(torch.ones(1, channels))
            self.conv_out = pointwise(channels, channels, linear=True)
        else:
            self.cca = ContrastChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = []
        r = x
        for distil, refine in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            kept.append(F.gelu(distil(r)))
            r = F.gelu(refine(r) + r)
        kept.append(F.gelu(self.c4(r)))
        out = self.esa(self.c5(torch.cat(kept, dim=1)))
        if hasattr(self, "cca"):
            out = self.cca(out)
        else:
            out = self.conv_out(out * self.cw.view(1, -1, 1, 1))
        return out + x


class PixelShuffleUpsampler(nn.Module):
    """One 3x3 conv to ``out_ch * scale**2`` channels followed by a pixel shuffle."""

    def __init__(self, scale: int, num_feat: int, out_ch: int) -> None:
        super().__init__()
        # Attribute name and Sequential layout follow the checkpoints ("upsampleOneStep.0").
        self.upsampleOneStep = nn.Sequential(
            nn.Conv2d(num_feat, out_ch * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


class BSRN(nn.Module):
    """BSRN / BSRN-S. Input: RGB in [0,1], N x 3 x H x W with H, W >= 15. Output: N x 3 x sH x sW."""

    def __init__(
        self,
        scale: int = 4,
        variant: str = "bsrn",
        num_feat: int = 64,
        num_block: int = 8,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
    ) -> None:
        super().__init__()
        variant = variant.lower()
        if variant not in VARIANTS:
            raise ValueError(f"unknown BSRN variant {variant!r}; expected one of {VARIANTS}")
        if num_block < 1:
            raise ValueError("num_block must be >= 1")
        self.scale = scale
        self.variant = variant
        linear = variant == "bsrn-s"
        # The RGB input is repeated four times on channels before the first conv (upstream design).
        self.input_repeats = 4
        self.fea_conv = BSConvU(num_in_ch * self.input_repeats, num_feat, linear_pw=linear)
        self.block_names = [f"B{i}" for i in range(1, num_block + 1)]
        for name in self.block_names:
            self.add_module(name, DistillationBlock(num_feat, variant))
        self.c1 = pointwise(num_feat * num_block, num_feat, linear=linear)
        self.c2 = BSConvU(num_feat, num_feat, linear_pw=linear)
        self.upsampler = PixelShuffleUpsampler(scale, num_feat, num_out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.fea_conv(x.repeat(1, self.input_repeats, 1, 1))
        outputs = []
        feat = shallow
        for name in self.block_names:
            feat = getattr(self, name)(feat)
            outputs.append(feat)
        trunk = F.gelu(self.c1(torch.cat(outputs, dim=1)))
        return self.upsampler(self.c2(trunk) + shallow)


# --------------------------------------------------------------------------------------------
# CPU inference form: oneDNN's fused convolutions, no concatenations
# --------------------------------------------------------------------------------------------


def _pointwise_weight(layer: nn.Module) -> torch.Tensor:
    """A pointwise layer's weight as a 4D 1x1 conv weight (Linear layers store it as 2D)."""
    weight = layer.weight
    return weight if weight.ndim == 4 else weight[:, :, None, None]


def _input_slices(layer: nn.Module, parts: int) -> list[torch.Tensor]:
    """The weight of a pointwise conv over ``parts`` concatenated inputs, cut per input.

    ``layer(cat([a, b, ...]))`` equals ``conv(a, W_a) + conv(b, W_b) + ... + bias``: summing the
    parts as they are produced never materialises the concatenation (BSRN's trunk concatenates
    eight 64-channel maps, 118 MB at 320x180, and each block four 32-channel ones).
    """
    weight = _pointwise_weight(layer).detach()
    width = weight.shape[1] // parts
    return [weight[:, i * width:(i + 1) * width].contiguous(memory_format=torch.channels_last)
            for i in range(parts)]


def _onednn_ops_available() -> bool:
    """Whether this torch build has oneDNN's fused convolution ops (x86 and most ARM CPU builds)."""
    mkldnn_ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and mkldnn_ops is not None
            and hasattr(mkldnn_ops, "_convolution_pointwise") and hasattr(mkldnn_ops, "_convolution_pointwise_"))


def _conv(x: torch.Tensor, layer: nn.Module, then: str = "none", weight: torch.Tensor | None = None,
          bias: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)`` through oneDNN with an optional fused activation (``then``: "gelu", the exact
    erf form F.gelu computes, or "sigmoid"); ``weight``/``bias`` replace the layer's own."""
    if weight is None:
        weight, bias = _pointwise_weight(layer), layer.bias
    if isinstance(layer, nn.Conv2d):
        padding, stride, groups = list(layer.padding), list(layer.stride), layer.groups
    else:  # a Linear-stored pointwise layer
        padding, stride, groups = [0, 0], [1, 1], 1
    algorithm = "none" if then == "gelu" else None
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, [1, 1], groups,
                                                   then, [], algorithm)


def _add_pointwise(total: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``total += conv(x, weight)`` (1x1, no bias) in one oneDNN pass that accumulates in place."""
    return torch.ops.mkldnn._convolution_pointwise_(total, x, weight, None, [0, 0], [1, 1], [1, 1], 1,
                                                    "add", 1.0, None, [], None)


class OneDnnBSRN(nn.Module):
    """A built BSRN / BSRN-S run for CPU inference: the same function, about 10-15% faster in fp32
    (4-9% in fp16, where oneDNN's AMX-FP16 kernels do the convolutions; 12-19% in bf16 on a Zen 5
    EPYC's AVX512-BF16).

    Measured on a 2-vCPU Xeon (bsrn-x4, 320x180 input, channels_last): 400 ms -> 355 ms per frame,
    max abs difference 1e-6 from :class:`BSRN`. Where the time went: the trunk's and the blocks'
    concatenations (a channel interleave in channels_last), and GELUs and sigmoids run as separate
    passes over the maps. Here the concatenated 1x1 convs become sums of per-part convs that
    oneDNN accumulates in place, and the activations after convs run inside the conv kernels.

    It shares the network's parameters (only the cut 1x1 weights are copies, made once), so it
    is built after the network has its weights and its device; it has no state dict of its own.
    """

    def __init__(self, network: BSRN) -> None:
        super().__init__()
        self.network = network
        self.blocks = [getattr(network, name) for name in network.block_names]
        self._trunk_weights = _input_slices(network.c1, len(self.blocks))
        self._fusion_weights = [_input_slices(block.c5, 4) for block in self.blocks]

    def _block(self, block: DistillationBlock, fusion_weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        kept = []
        r = x
        for distil, refine in ((block.c1_d, block.c1_r), (block.c2_d, block.c2_r), (block.c3_d, block.c3_r)):
            kept.append(_conv(r, distil, then="gelu"))
            # gelu_ is F.gelu in place (exact erf form); the sum is a fresh tensor, r stays intact.
            r = torch._C._nn.gelu_(_conv(_conv(r, refine.pw), refine.dw).add_(r))
        kept.append(_conv(_conv(r, block.c4.pw), block.c4.dw, then="gelu"))
        fused = _conv(kept[0], block.c5, weight=fusion_weights[0], bias=block.c5.bias)
        for part, weight in zip(kept[1:], fusion_weights[1:], strict=True):
            fused = _add_pointwise(fused, part, weight)
        out = self._esa(block.esa, fused)
        if hasattr(block, "cca"):
            return torch.addcmul(x, out, block.cca.conv_du(contrast_stats(out)))
        return block.conv_out(out * block.cw.view(1, -1, 1, 1)).add_(x)

    @staticmethod
    def _esa(esa: ESA, x: torch.Tensor) -> torch.Tensor:
        reduced = _conv(x, esa.conv1)
        coarse = F.max_pool2d(esa.conv2(reduced), kernel_size=7, stride=3)
        coarse = F.gelu(esa.conv_max(coarse))
        coarse = F.gelu(esa.conv3(coarse))
        coarse = F.interpolate(esa.conv3_(coarse), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * _conv(_conv(reduced, esa.conv_f).add_(coarse), esa.conv4, then="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        network = self.network
        shallow = network.fea_conv(x.repeat(1, network.input_repeats, 1, 1))
        feat = shallow
        trunk = None
        for block, fusion_weights, weight in zip(self.blocks, self._fusion_weights, self._trunk_weights, strict=True):
            feat = self._block(block, fusion_weights, feat)
            trunk = (_conv(feat, network.c1, weight=weight, bias=network.c1.bias) if trunk is None
                     else _add_pointwise(trunk, feat, weight))
        trunk = torch._C._nn.gelu_(trunk)
        return network.upsampler(network.c2(trunk).add_(shallow))


def _smooth_probe(height: int, width: int) -> torch.Tensor:
    """A small picture-like input (smooth colour waves in [0.1, 0.9]), 1x3xHxW channels_last.

    Not noise: on uniform noise BSRN x2's activations reach thousands and float rounding alone
    moves its output by whole units, so a comparison there says nothing about correctness.
    """
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    waves = torch.stack([0.5 + 0.4 * torch.sin(6 * x + 3 * y + phase) for phase in range(3)])
    return waves[None].contiguous(memory_format=torch.channels_last)


FORM_TOLERANCE = {torch.float32: 1e-4, torch.float16: 0.5 / 255, torch.bfloat16: 2 / 255}
"""How far :class:`OneDnnBSRN` may be from the network on the probe, per dtype. The two sum in other
orders, so they round apart: by float rounding in fp32, by a fraction of an 8-bit level in fp16, and by
one bf16 step of the output in bf16 (8 mantissa bits: 1/256 just below 1.0, measured 0.996 levels for
x2, x4 and BSRN-S). A broken op or layout misses by far more."""


def cpu_inference_form(network: nn.Module) -> nn.Module:
    """:class:`OneDnnBSRN` around ``network`` where this torch build runs it and it agrees with
    the network on a small input (to :data:`FORM_TOLERANCE` in the network's dtype); the network
    itself otherwise (no oneDNN, other CPUs)."""
    if not isinstance(network, BSRN) or not _onednn_ops_available():
        return network
    try:
        fast = OneDnnBSRN(network)
        parameter = next(network.parameters())
        probe = _smooth_probe(24, 20).to(parameter.device, parameter.dtype)
        tolerance = FORM_TOLERANCE.get(parameter.dtype)
        if tolerance is None:
            return network
        with torch.inference_mode():
            agrees = bool((fast(probe).float() - network(probe).float()).abs().max() <= tolerance)
    except RuntimeError:  # an op or a layout this build's oneDNN does not support
        return network
    return fast if agrees else network


# --------------------------------------------------------------------------------------------
# Spec: build, checkpoint preparation, detection
# --------------------------------------------------------------------------------------------


def build(scale: int, **hyperparameters: Any) -> BSRN:
    """Official settings: ``bsrn`` 64 features / 8 blocks (x2, x3, x4); ``bsrn-s`` 48 / 5 (x4)."""
    return BSRN(scale=scale, **hyperparameters).eval()


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    """Recognise a BSRN / BSRN-S state dict from keys and shapes alone.

    Hyperparameters are read off a few tensors (the 4D vs 2D first pointwise weight tells the
    variant apart, its rows give ``num_feat``, the number of ``B<i>`` blocks gives ``num_block``,
    the upsampler's 3*s*s output channels give the scale), then the whole key/shape set is
    compared with a model built with them (on the meta device, so nothing is allocated).
    Anything that does not match exactly is not ours: return None.
    """
    try:
        head = state_dict["fea_conv.pw.weight"]
        up = state_dict["upsampler.upsampleOneStep.0.weight"]
    except KeyError:
        return None
    if head.ndim == 4:
        variant = "bsrn"
    elif head.ndim == 2:
        variant = "bsrn-s"
    else:
        return None
    num_feat = int(head.shape[0])
    if int(head.shape[1]) != 12 or up.ndim != 4:  # RGB in, RGB out
        return None
    scale = pixel_shuffle_scale(int(up.shape[0]))
    if scale is None:
        return None
    blocks = block_indices(state_dict, "B")
    num_block = len(blocks)
    if not is_numbered_from(blocks, 1) or num_feat < 4:
        return None

    hyper = {"variant": variant, "num_feat": num_feat, "num_block": num_block}
    if not matches_network(state_dict, lambda: BSRN(scale=scale, **hyper)):
        return None
    return {"scale": scale, **hyper}


SPEC = ArchSpec(
    name="BSRN",
    build=build,
    input_range=1.0,
    # ESA: unpadded 3x3 stride-2 conv then a 7x7 max pool -> (H - 3) // 2 + 1 >= 7 -> H >= 15.
    min_size=15,
    size_multiple=1,
    # Nothing windowed, but nothing purely local either: CCA statistics are global and ESA's
    # pool grid and bilinear mask depend on the tile's size. Measured (Set14 x4, 64 px tiles,
    # PSNR-Y of tiled vs whole output): BSRN x4 46.1 / 50.0 / 51.4 / 51.3 / 52.5 dB and BSRN-S
    # 45.7 / 50.0 / 53.1 / 49.5 / 52.8 dB for 0 / 8 / 16 / 24 / 32 px of context; PSNR-Y vs HR
    # moved by < 0.05 dB either way. Past 16 px the remaining gap comes from those tile-dependent
    # terms, not from seams, and more context does not remove it.
    tile_overlap=16,
    tile_multiple=1,
    # fp16: the only whole-map reduction (CCA statistics) runs in fp32 (contrast_stats); the
    # largest activation on Set14 images (x2, x4, BSRN-S, fp32) is ~115, far below 65504, and
    # it does not grow with image size. Measured on CPU vs fp32: fp16 ~70 dB, bf16 ~52 dB PSNR.
    fp16_safe=True,
    bf16_safe=True,
    detect=detect,
    paper=facts.BSRN.paper,
    # Peak RSS growth of one fp32 CPU forward, per LR pixel: BSRN x4 ~9.2 KB (the concatenated
    # trunk of 8 x 64 channels dominates), BSRN-S ~4.5-5 KB; this leaves ~30% headroom.
    activation_bytes_per_pixel=12288,
    # The 8 x 64-channel concatenated trunk (counted with a dispatch mode over a 128x128 forward).
    widest_activation=512,
    cpu_inference_form=cpu_inference_form,
)
