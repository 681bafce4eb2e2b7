"""The small public Python API: ``from lightsr_cli import Upscaler``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoints import resolve_card
from .pipeline.loading import EngineSettings, load_engine
from .pipeline.pixels import upscale_pixels
from .progress import Reporter


class Upscaler:
    """Load a model by id (or preset/scale, or a checkpoint file) and upscale numpy images.

    >>> up = Upscaler("bsrn-x4", device="cpu")
    >>> big = up.upscale(pixels)   # H x W, H x W x 3 or H x W x 4; uint8 or uint16 -> same kind, 4x larger

    ``backend``: "torch", "onnxruntime" (needs ``lightsr[onnx]``) or "auto" (the faster one measured
    for this model and device; see ``lightsr_cli.engine.backends``).
    """

    def __init__(self, model: str | None = None, *, weights: str | Path | None = None, preset: str | None = None,
                 scale: int | None = None, device: str = "auto", precision: str = "auto", tile: int | None = None,
                 batch: int = 1, tta: bool = False, compile: bool = False, backend: str = "auto", reporter: Reporter | None = None) -> None:
        self.card = resolve_card(model, preset, Path(weights) if weights is not None else None, scale)
        settings = EngineSettings(device=device, precision=precision, tile=tile, batch=batch, tta=tta, compile=compile,
                                  backend=backend)
        self.engine = load_engine(self.card, settings, reporter, Path(weights) if weights is not None else None)

    @property
    def scale(self) -> int:
        return self.card.scale

    def upscale(self, pixels: np.ndarray) -> np.ndarray:
        """Gray, RGB or RGBA (channel order RGB), uint8 or uint16 -> the same, ``scale`` times larger."""
        if not isinstance(pixels, np.ndarray) or pixels.dtype not in (np.uint8, np.uint16):
            raise TypeError("upscale() takes a uint8 or uint16 numpy array")
        return upscale_pixels(self.engine, pixels)
