"""Small pieces of the engine's batch handling: which tile jobs share a batch, what a launched
batch carries until its result is on the host, and the float -> uint8 conversion."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def split_by_shape(chunk, row_spans, col_spans) -> list[list]:
    """Split a run of (sorted) tile jobs where the crop shape changes: a batch must be one shape."""
    parts: list[list] = []
    for job in chunk:
        shape = (row_spans[job[1]].length, col_spans[job[2]].length)
        if parts and shape == (row_spans[parts[-1][0][1]].length, col_spans[parts[-1][0][2]].length):
            parts[-1].append(job)
        else:
            parts.append([job])
    return parts


@dataclass
class Launched:
    """A batch of crops sent through the network; on CUDA its result may still be on its way to the host."""

    crops: torch.Tensor
    """The host crops, kept for an fp32 recomputation."""
    result: torch.Tensor
    """Host tensor (pinned on CUDA): float32, or uint8 when quantized on the device."""
    finite: torch.Tensor
    """0-dim host bool: whether the network's output was free of NaN/Inf."""
    copied: "torch.cuda.Event | None"
    """Set when the device-to-host copy has finished (None: the result is already complete)."""
    quantized: bool
    dtype: torch.dtype
    """The precision it was computed in."""


def quantize_uint8(result: torch.Tensor) -> torch.Tensor:
    """Float in [0,1] (unclamped) -> uint8, rounded half to even like numpy. Overwrites ``result``."""
    return result.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
