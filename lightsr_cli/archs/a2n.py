"""A2N: Attention in Attention Network for image super-resolution.

Chen, Gu, Zhang, "Attention in Attention Network for Image Super-Resolution" (arXiv 2021);
official code and checkpoints: https://github.com/haoyuc/A2N (class ``AAN``). This is an
independent re-implementation; only the parameter names and shapes follow the official
checkpoints so that they load with ``strict=True``.

Network outline (LR features ``nf`` = 40, upsampling features ``unf`` = 24, ``nb`` = 16 blocks):

* a 3x3 stem, then ``nb`` attention-in-attention blocks (AAB) and a 3x3 trunk conv, with a long
  skip around the trunk;
* each AAB has two parallel branches on the same features: a plain 3x3 conv and a gated
  ("attention") branch. A tiny MLP on the globally averaged features (the "attention dropout
  module") produces two softmax weights, with temperature 30, that mix the branches. The average is
  over the whole input, so results depend (slightly) on how an image is tiled;
* upsampling by nearest-neighbour interpolation and conv + pixel-attention gate + conv, once for
  x2/x3 and twice (2x2) for x4, then a 3x3 conv to RGB added to a bilinear upscale of the input.

Range and precision
-------------------
The official network takes and returns RGB on a 0-255 scale (EDSR convention, no mean shift).
Measured on Set14 (x2 and x3, whole images), its features peak at ~1.5e3. The pre-activation of the
pixel-attention gate after the first upsampling conv (``att1``) peaks at ~3.3e4, half the fp16
limit of 65504. Every operation in the network is positively homogeneous except the sigmoids
(pixel gates) and the branch softmax. So this module runs all features scaled by ``feature_gain``
(1/255 by default) and reproduces the official function exactly in real arithmetic:

* the input is multiplied by the gain before the stem, and every conv bias after it is
  multiplied by the gain;
* the weights of the convs that feed a sigmoid are divided by the gain, so the
  sigmoid sees the official pre-activation;
* the branch-mixing logits are computed in fp32 and divided by the gain before the softmax;
* the final RGB conv output is divided by the gain before the (unscaled) bilinear skip is added.

With the gain, features peak at ~6 instead of ~1.5e3, which leaves a wide fp16 margin. The gate
pre-activations keep their official values: they only feed a sigmoid. If one overflows to +-inf,
the sigmoid gives exactly 1 or 0, which is what fp32 gives when it saturates.
``feature_gain = 1.0`` runs the same operations in the same order as the official code.
The default differs from it in fp32 only by rounding (~2e-7 on the 0-1 scale for the parity
fixtures).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from . import facts
from .detection import block_indices, is_numbered_from
from .spec import ArchSpec, StateDict, keep_as_is

__all__ = ["A2N", "SPEC", "build", "detect", "forward_chop", "prepare_state_dict"]

DEFAULT_FEATURE_GAIN = 1.0 / 255.0
_LRELU_SLOPE = 0.2


def _conv(x: torch.Tensor, conv: nn.Conv2d, gain: float) -> torch.Tensor:
    """``conv`` on features that are ``gain`` times official; the output is too (bias times gain)."""
    bias = conv.bias
    if bias is not None and gain != 1.0:
        bias = bias * gain
    return F.conv2d(x, conv.weight, bias, conv.stride, conv.padding)


def _gate_logits(x: torch.Tensor, conv: nn.Conv2d, gain: float) -> torch.Tensor:
    """``conv`` on features that are ``gain`` times official, returning the official pre-sigmoid values.

    The weight is divided by the gain and the bias is left as it is.
    """
    weight = conv.weight if gain == 1.0 else conv.weight * (1.0 / gain)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding)


class PixelGate(nn.Module):
    """Pixel attention: x * sigmoid(conv1x1(x)) (official ``PA``; parameters ``conv.*``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        return x * torch.sigmoid(_gate_logits(x, self.conv, gain))


class GatedBranch(nn.Module):
    """The attention branch of an AAB (official ``AttentionBranch``).

    A 3x3 conv + LeakyReLU + 1x1 conv + sigmoid make a per-pixel, per-channel gate. The gate scales
    a second 3x3 conv of the input, and a third 3x3 conv follows. Only k2 (the 1x1) has a bias.
    """

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.k1 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.k3 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        gate = F.leaky_relu(self.k1(x), _LRELU_SLOPE)
        gate = torch.sigmoid(_gate_logits(gate, self.k2, gain))
        return self.k4(self.k3(x) * gate)


class AttentionInAttentionBlock(nn.Module):
    """One AAB: 1x1 in, softmax-weighted mix of a gated branch and a plain 3x3 branch, 1x1 out, residual.

    ``ADM`` (the attention dropout module) maps the spatial mean of the input features to
    ``branches`` logits; softmax(logits / temperature) gives the branch weights per image.
    """

    def __init__(self, nf: int, reduction: int = 4, branches: int = 2, temperature: float = 30.0) -> None:
        super().__init__()
        if branches != 2:
            raise ValueError("A2N blocks mix exactly two branches")
        self.temperature = float(temperature)
        self.conv_first = nn.Conv2d(nf, nf, 1, bias=False)
        self.ADM = nn.Sequential(
            nn.Linear(nf, nf // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(nf // reduction, branches, bias=False),
        )
        self.attention = GatedBranch(nf)
        self.non_attention = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.conv_last = nn.Conv2d(nf, nf, 1, bias=False)

    def branch_weights(self, feat: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """(N, 2) softmax weights, always computed in fp32 (a few hundred flops per image)."""
        pooled = torch.mean(feat, dim=(2, 3), dtype=torch.float32)
        hidden = F.relu(F.linear(pooled, self.ADM[0].weight.float()))
        logits = F.linear(hidden, self.ADM[2].weight.float())
        # The MLP has no biases and ReLU is homogeneous: logits are `gain` times official.
        return torch.softmax(logits / (self.temperature * gain), dim=1)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_first(x), _LRELU_SLOPE)
        weights = self.branch_weights(feat, gain).to(feat.dtype)
        w_att = weights[:, 0].view(-1, 1, 1, 1)
        w_plain = weights[:, 1].view(-1, 1, 1, 1)
        mixed = self.attention(feat, gain) * w_att + self.non_attention(feat) * w_plain
        return self.conv_last(F.leaky_relu(mixed, _LRELU_SLOPE)) + x


class A2N(nn.Module):
    """A2N super-resolution network (official ``AAN``). Input and output: RGB on a 0-255 scale."""

    def __init__(self, scale: int, nf: int = 40, unf: int = 24, nb: int = 16, in_nc: int = 3, out_nc: int = 3) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"A2N supports scales 2, 3 and 4, not {scale!r}")
        self.scale = scale
        self.feature_gain = DEFAULT_FEATURE_GAIN
        """Internal feature scaling (see the module docstring); 1.0 = official arithmetic."""

        self.conv_first = nn.Conv2d(in_nc, nf, 3, padding=1)
        self.AAB_trunk = nn.Sequential(*(AttentionInAttentionBlock(nf) for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)

        # x2/x3: one nearest-neighbour step by `scale`; x4: two steps by 2.
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = PixelGate(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
            self.att2 = PixelGate(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, out_nc, 3, padding=1)

    @staticmethod
    def _up_stage(
        fea: torch.Tensor, factor: int, up: nn.Conv2d, gate: PixelGate, conv: nn.Conv2d, gain: float
    ) -> torch.Tensor:
        fea = F.interpolate(fea, scale_factor=factor, mode="nearest")
        fea = F.leaky_relu(gate(_conv(fea, up, gain), gain), _LRELU_SLOPE)
        return F.leaky_relu(_conv(fea, conv, gain), _LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = float(self.feature_gain)
        lr = x * gain if gain != 1.0 else x
        fea = _conv(lr, self.conv_first, gain)
        fea = fea + _conv(self._trunk(fea, gain), self.trunk_conv, gain)

        if self.scale == 4:
            fea = self._up_stage(fea, 2, self.upconv1, self.att1, self.HRconv1, gain)
            fea = self._up_stage(fea, 2, self.upconv2, self.att2, self.HRconv2, gain)
        else:
            fea = self._up_stage(fea, self.scale, self.upconv1, self.att1, self.HRconv1, gain)

        out = _conv(fea, self.conv_last, gain)
        if gain != 1.0:
            out = out / gain
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + skip

    def _trunk(self, fea: torch.Tensor, gain: float) -> torch.Tensor:
        for block in self.AAB_trunk:
            fea = block(fea, gain)
        return fea


def build(scale: int | None = None, nf: int = 40, unf: int = 24, nb: int = 16) -> A2N:
    if scale is None:
        raise ModelError(
            "the A2N checkpoint does not say its scale: x2 and x3 files have identical shapes",
            hint="give the scale explicitly (the official files are named aan_x2.pt / aan_x3.pt)",
        )
    if scale not in (2, 3, 4):
        raise ModelError(f"A2N has no x{scale} variant", hint="A2N supports x2, x3 and x4")
    return A2N(scale=scale, nf=nf, unf=unf, nb=nb).eval()


# Official files are plain state dicts: nothing to prepare once lightsr_cli.checkpoints unwrapped them.
prepare_state_dict = keep_as_is


_BLOCK_PARTS = {
    "conv_first.weight": 4,
    "ADM.0.weight": 2,
    "ADM.2.weight": 2,
    "attention.k1.weight": 4,
    "attention.k2.weight": 4,
    "attention.k2.bias": 1,
    "attention.k3.weight": 4,
    "attention.k4.weight": 4,
    "non_attention.weight": 4,
    "conv_last.weight": 4,
}


def detect(state_dict: StateDict) -> dict[str, Any] | None:
    """Recognise an A2N state dict from its keys and shapes.

    Returns ``{"scale", "nf", "unf", "nb"}`` or None. The scale is 4 when the second upsampling
    stage (``upconv2``) is present. A one-stage upsampler is x2 or x3, and those files have
    identical keys and shapes (the stage is nearest-neighbour interpolation followed by
    convs, so no weight shape depends on the factor). For them the scale is returned as None,
    and the caller must supply it (``build(scale=None)`` raises a ModelError that says so).
    """
    try:
        stem = state_dict["conv_first.weight"]
        up1 = state_dict["upconv1.weight"]
        last = state_dict["conv_last.weight"]
        trunk = state_dict["trunk_conv.weight"]
        gate1 = state_dict["att1.conv.weight"]
    except (KeyError, TypeError):
        return None
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (stem, up1, last, trunk, gate1)):
        return None
    nf, unf = int(stem.shape[0]), int(up1.shape[0])
    if tuple(stem.shape) != (nf, 3, 3, 3) or tuple(up1.shape) != (unf, nf, 3, 3):
        return None
    if tuple(trunk.shape) != (nf, nf, 3, 3) or tuple(gate1.shape) != (unf, unf, 1, 1):
        return None
    if tuple(last.shape) != (3, unf, 3, 3):
        return None

    block_ids = block_indices(state_dict, "AAB_trunk.")
    nb = len(block_ids)
    if not is_numbered_from(block_ids):
        return None
    for i in range(nb):
        for part, ndim in _BLOCK_PARTS.items():
            t = state_dict.get(f"AAB_trunk.{i}.{part}")
            if not isinstance(t, torch.Tensor) or t.dim() != ndim:
                return None
        if state_dict[f"AAB_trunk.{i}.ADM.0.weight"].shape[1] != nf:
            return None

    scale = 4 if "upconv2.weight" in state_dict else None
    return {"scale": scale, "nf": nf, "unf": unf, "nb": nb}


def forward_chop(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, shave: int = 10, min_size: int = 160000
) -> torch.Tensor:
    """Quadrant inference as in the EDSR test code that produced A2N's published scores.

    The input is cut into four corner patches of (half + ``shave``) pixels per side. A patch
    with at least ``min_size`` pixels is cut again the same way. Each patch is run on its own
    (as the official single-GPU test does), and each output quadrant is taken from the patch
    whose corner it is. Because A2N's branch weights come from a per-patch global mean,
    this is not the same function as a full-image forward. Patch sizes are clamped to the image,
    so inputs smaller than 2 * ``shave`` do not break.
    """
    _, _, h, w = x.shape
    h_half, w_half = h // 2, w // 2
    h_size, w_size = min(h_half + shave, h), min(w_half + shave, w)
    rows = ((0, h_size), (h - h_size, h))
    cols = ((0, w_size), (w - w_size, w))

    outputs = []
    for r0, r1 in rows:
        for c0, c1 in cols:
            patch = x[:, :, r0:r1, c0:c1]
            if h_size * w_size < min_size:
                outputs.append(model(patch))
            else:
                outputs.append(forward_chop(model, patch, scale, shave=shave, min_size=min_size))

    H, W = scale * h, scale * w
    Hh, Wh = scale * h_half, scale * w_half
    Hs, Ws = scale * h_size, scale * w_size
    top_left, top_right, bottom_left, bottom_right = outputs
    out = top_left.new_empty(top_left.shape[0], top_left.shape[1], H, W)
    # Each quadrant of the output comes from the patch that owns that corner; the patches that
    # start at the far edge have their first (H - Hs) / (W - Ws) output rows/columns offset.
    out[:, :, :Hh, :Wh] = top_left[:, :, :Hh, :Wh]
    out[:, :, :Hh, Wh:] = top_right[:, :, :Hh, Ws - (W - Wh):]
    out[:, :, Hh:, :Wh] = bottom_left[:, :, Hs - (H - Hh):, :Wh]
    out[:, :, Hh:, Wh:] = bottom_right[:, :, Hs - (H - Hh):, Ws - (W - Wh):]
    return out


SPEC = ArchSpec(
    name="A2N",
    build=build,
    input_range=255.0,
    min_size=1,
    size_multiple=1,
    tile_overlap=16,
    tile_multiple=1,
    fp16_safe=True,
    bf16_safe=True,
    prepare_state_dict=prepare_state_dict,
    detect=detect,
    paper=facts.A2N.paper,
    # Each attention-dropout module averages over its whole input, so every tile picks its own
    # branch weights: 64 px tiles cost 0.06 dB on Set14 x3, 128 px tiles cost nothing measurable.
    min_tile=128,
    # x4: the nearest-neighbour upsampling of 24 features to HR, 24 * 16 elements per LR pixel.
    widest_activation=384,
)
