"""What the engine needs to know about an architecture, stated once per architecture.

The engine never tests an architecture's name: everything that differs between networks
(input range, size constraints, precision safety, tiling context, checkpoint quirks) lives
in one ArchSpec that each architecture module exports as ``SPEC``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


def keep_as_is(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Default checkpoint preparation: nothing to do once lightsr_cli.checkpoints has unwrapped it."""
    return dict(state_dict)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    """Family name as used in model cards and the weights mirror layout ("BSRN")."""
    build: Callable[..., nn.Module]
    """build(scale=..., **hyperparameters) -> an un-initialised module in eval-ready form."""
    input_range: float
    """1.0 when the network takes RGB in [0,1]; 255.0 when it takes [0,255]."""
    min_size: int
    """Smallest LR side (pixels) the network accepts; the engine pads smaller inputs and crops back."""
    size_multiple: int
    """The engine pads LR inputs to a multiple of this (1 when the network handles any size itself)."""
    tile_overlap: int
    """LR pixels of context to add on each side of a tile so tiles blend without seams."""
    tile_multiple: int
    """Tile sizes are rounded to a multiple of this (window size for windowed attention)."""
    fp16_safe: bool
    """True when a plain .half() forward stays finite and accurate on real images."""
    bf16_safe: bool
    prepare_state_dict: Callable[[StateDict], dict[str, torch.Tensor]] = keep_as_is
    """Unwrapped state dict (see lightsr_cli.checkpoints) -> one that loads strictly (e.g. drop size-dependent
    buffers). Containers and key prefixes are never this function's business."""
    detect: Callable[[StateDict], "dict[str, Any] | None"] | None = None
    """State dict (after prepare_state_dict) -> {"scale": s, **hyperparameters}, or None if not this arch."""
    paper: str = ""
    channels_last: bool = True
    """Whether the network computes correctly (and faster) in the channels_last memory format."""
    min_tile: int = 0
    """Smallest useful tile (LR px) for networks with whole-input statistics; smaller requests are raised."""
    activation_bytes_per_pixel: int = 16384
    """Peak fp32 activation memory per LR input pixel (with headroom); sizes automatic tiles (halved on OOM).
    Calibrated with benchmarks/memory_estimates.py (results-memory-estimates.json)."""
    half_activation_bytes_per_pixel: int | None = None
    """The same in fp16/bf16; None: half the fp32 figure. Set where parts stay fp32 in half
    precision (attention logits and softmax, statistics), which then dominate."""
    widest_activation: int = 256
    """Elements per LR input pixel of the largest single tensor of a forward pass: a pass whose
    tensor would reach 2^31 elements (beyond 32-bit indexing in many CUDA kernels) is tiled."""
    onnx_fixed_size: str = ""
    """Why a traced ONNX graph of this network holds for one input size only (empty: any size).
    Such a network exports with a static size only, and does not run on the onnxruntime backend."""
    cpu_inference_form: Callable[[nn.Module], nn.Module] | None = None
    """network -> a faster module computing the same function (to float rounding) for inference on
    the CPU in the network's dtype, sharing the network's parameters; it returns the network itself
    where that form is not available or disagrees in that dtype. The torch engine applies it to a CPU
    network it does not compile; exports, training and other devices use the network as built."""

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        """Peak activation bytes per LR input pixel when computing in ``dtype``."""
        if dtype == torch.float32:
            return self.activation_bytes_per_pixel
        if self.half_activation_bytes_per_pixel is not None:
            return self.half_activation_bytes_per_pixel
        return self.activation_bytes_per_pixel / 2
