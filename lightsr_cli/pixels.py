"""Pixels <-> engine tensors: the one place media arrays (numpy) meet the engine's tensors.

8-bit pixels travel as uint8 both ways (the engine scales them on the device and rounds its
output there: a quarter of the bytes to move, no float passes on the host); 16-bit pixels travel
as float32 in [0,1].
"""

from __future__ import annotations

import numpy as np
import torch

from .engine import Upscaler
from .progress import Reporter


def upscale_rgb(upscaler: Upscaler, frames: np.ndarray, reporter: Reporter | None = None) -> np.ndarray:
    """N x H x W x 3 uint8 or uint16 RGB -> N x sH x sW x 3 of the same dtype, rounded and clipped."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype == np.uint8:
        result = upscaler.upscale(torch.from_numpy(frames).permute(0, 3, 1, 2), reporter, to_uint8=True)
        return np.ascontiguousarray(result.permute(0, 2, 3, 1).numpy())
    scaled = torch.from_numpy(frames.astype(np.float32) / 65535.0).permute(0, 3, 1, 2)
    result = upscaler.upscale(scaled, reporter).clamp(0, 1).mul(65535.0).round()
    return result.permute(0, 2, 3, 1).numpy().astype(np.uint16)
