"""Pixels <-> engine tensors: the one place numpy images meet the engine's tensors.

8-bit pixels travel as uint8 both ways (the engine scales them on the device and rounds its
output there: a quarter of the bytes to move, no float passes on the host); 16-bit pixels travel
as float32 in [0,1]. Gray goes through the network as three equal channels; alpha as its own gray
image.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine import Engine
from ..progress import Reporter


def upscale_rgb(engine: Engine, frames: np.ndarray, reporter: Reporter | None = None) -> np.ndarray:
    """N x H x W x 3 uint8 or uint16 RGB -> N x sH x sW x 3 of the same dtype, rounded and clipped."""
    # torch.from_numpy warns (on stderr) for read-only arrays, e.g. frames straight from a byte buffer.
    frames = np.require(frames, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    if frames.dtype == np.uint8:
        result = engine.upscale(torch.from_numpy(frames).permute(0, 3, 1, 2), reporter, to_uint8=True)
        return np.ascontiguousarray(result.permute(0, 2, 3, 1).numpy())
    scaled = torch.from_numpy(frames.astype(np.float32) / 65535.0).permute(0, 3, 1, 2)
    result = engine.upscale(scaled, reporter).clamp(0, 1).mul(65535.0).round()
    return result.permute(0, 2, 3, 1).numpy().astype(np.uint16)


def upscale_image(engine: Engine, rgb: np.ndarray, reporter: Reporter | None = None) -> np.ndarray:
    """One H x W x 3 RGB image (uint8/uint16) -> the same, upscaled."""
    return upscale_rgb(engine, rgb[None], reporter)[0]


def upscale_pixels(engine: Engine, pixels: np.ndarray, reporter: Reporter | None = None) -> np.ndarray:
    """Upscale a gray, gray+alpha, RGB or RGBA uint8/uint16 image; same channels and depth out.

    Gray goes through the network as three equal channels; alpha goes through it as its own gray
    image (so edges of cut-outs stay sharp) unless it is constant, when it is simply extended.
    """
    if pixels.ndim == 2:
        result = upscale_image(engine, np.repeat(pixels[:, :, None], 3, axis=2), reporter)
        return np.round(result.astype(np.float32).mean(axis=2)).astype(pixels.dtype)
    if pixels.shape[2] in (2, 4):  # colour (or gray) + alpha
        color = upscale_pixels(engine, np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 2
                                                            else pixels[:, :, :3]), reporter)
        alpha = pixels[:, :, -1]
        if alpha.min() == alpha.max():
            upscaled_alpha = np.full(color.shape[:2], alpha.flat[0], dtype=pixels.dtype)
        else:
            upscaled_alpha = upscale_pixels(engine, alpha, reporter)
        return np.dstack([color, upscaled_alpha])
    return upscale_image(engine, pixels, reporter)


def upscale_frames(engine: Engine, frames: tuple[np.ndarray, ...],
                   reporter: Reporter | None = None) -> list[np.ndarray]:
    """Upscale the frames of an animation or the pages of a TIFF; same channels and depth out.

    Frames of one size and kind (an animation's always are) go through the engine in batches of
    ``engine.batch``, like video frames, colour and alpha each as a batch; a frames bar counts them.
    """
    if len(frames) == 1:
        return [upscale_pixels(engine, frames[0], reporter)]
    task = reporter.task("frames", total=len(frames), unit="frame") if reporter else None
    results: list[np.ndarray] = []
    try:
        first = frames[0]
        uniform = len({(f.shape, f.dtype) for f in frames}) == 1 and first.ndim == 3 and first.shape[2] in (3, 4)
        step = max(1, engine.batch) if uniform else 1
        for start in range(0, len(frames), step):
            chunk = frames[start:start + step]
            results.extend(_upscale_batch(engine, np.stack(chunk), reporter) if uniform
                           else [upscale_pixels(engine, chunk[0], reporter)])
            if task:
                task.advance(len(chunk))
    finally:
        if task:
            task.close()
    return results


def _upscale_batch(engine: Engine, stack: np.ndarray, reporter: Reporter | None) -> list[np.ndarray]:
    """N x H x W x 3|4 -> N upscaled frames; alpha goes through the network as gray, unless all opaque."""
    colour = upscale_rgb(engine, np.ascontiguousarray(stack[..., :3]), reporter)
    if stack.shape[3] == 3:
        return list(colour)
    alpha = stack[..., 3]
    if alpha.min() == alpha.max():
        upscaled_alpha = np.full(colour.shape[:3], alpha.flat[0], dtype=stack.dtype)
    else:
        gray = upscale_rgb(engine, np.repeat(alpha[..., None], 3, axis=3), reporter)
        upscaled_alpha = np.round(gray.astype(np.float32).mean(axis=3)).astype(stack.dtype)
    return [np.dstack([c, a]) for c, a in zip(colour, upscaled_alpha, strict=True)]
