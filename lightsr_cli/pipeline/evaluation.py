"""Score an engine on benchmark folders: PSNR-Y/SSIM-Y of 8-bit outputs, as the papers measure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Engine
from ..errors import InputError
from ..media import images
from ..metrics import crop_to_match, psnr_y, ssim_y
from ..progress import NullReporter, Reporter
from .pixels import upscale_image


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float


@dataclass(frozen=True)
class DatasetScore:
    dataset: str
    scale: int
    images: list[ImageScore]
    seconds: float

    @property
    def psnr_y(self) -> float:
        return float(np.mean([s.psnr_y for s in self.images]))

    @property
    def ssim_y(self) -> float:
        return float(np.mean([s.ssim_y for s in self.images]))


def benchmark_pairs(dataset: Path, scale: int) -> list[tuple[Path, Path]]:
    """(LR, HR) pairs from DATASET/x<scale>/{LR,HR} (or DATASET/{LR,HR} for a folder of one scale)."""
    root = dataset / f"x{scale}" if (dataset / f"x{scale}").is_dir() else dataset
    lr_dir, hr_dir = root / "LR", root / "HR"
    if not lr_dir.is_dir() or not hr_dir.is_dir():
        raise InputError(f"{dataset} has no x{scale}/LR and x{scale}/HR folders",
                           hint="lay benchmark pairs out as DATASET/x<scale>/{LR,HR}/<same names>")
    pairs = [(lr, hr_dir / lr.name) for lr in sorted(lr_dir.iterdir()) if images.is_image_path(lr)]
    missing = [hr for _, hr in pairs if not hr.is_file()]
    if missing or not pairs:
        raise InputError(f"{hr_dir} lacks {missing[0].name}" if missing else f"no images in {lr_dir}")
    return pairs


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Benchmark convention: gray images become three equal channels; alpha is dropped."""
    if pixels.ndim == 3 and pixels.shape[2] == 2:  # gray + alpha
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def evaluate(engine: Engine, dataset: Path, reporter: Reporter | None = None) -> DatasetScore:
    """PSNR-Y/SSIM-Y (border = scale) of 8-bit outputs against HR, the papers' protocol."""
    reporter = reporter or NullReporter()
    pairs = benchmark_pairs(dataset, engine.scale)
    scores = []
    started = time.perf_counter()
    progress = reporter.task(f"{dataset.name} x{engine.scale}", total=len(pairs), unit="image")
    try:
        for lr_path, hr_path in pairs:
            lr = as_rgb(images.read_image(lr_path))
            hr = as_rgb(images.read_image(hr_path))
            if lr.dtype != np.uint8:
                raise InputError(f"{lr_path} is not 8-bit", hint="benchmarks are scored on 8-bit images")
            sr = upscale_image(engine, lr)
            hr = crop_to_match(hr, sr)
            border = engine.scale
            scores.append(ImageScore(lr_path.name, psnr_y(sr, hr, border), ssim_y(sr, hr, border)))
            progress.advance()
    finally:
        progress.close()
    return DatasetScore(dataset.name, engine.scale, scores, time.perf_counter() - started)
