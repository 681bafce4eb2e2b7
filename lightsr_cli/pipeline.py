"""The one module that knows both media and the engine: jobs in, files out.

Loads a model card's network into an engine, converts pixels (8/16-bit, gray, alpha) to the
engine's tensors and back, runs image jobs one by one (a bad file is recorded, the rest go on),
and scores benchmark folders. Progress goes to a Reporter.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from . import archs, checkpoints, pixels, weights
from .device_pool import UpscalerPool, parse_devices
from .engine import Upscaler
from .errors import LightsrError, UsageError
from .jobs import Job, MediaKind
from .media import images
from .progress import NullReporter, Reporter
from .registry import ModelCard
from .video_pipeline import VideoResult, VideoSettings, run_video_job


@dataclass(frozen=True)
class EngineChoice:
    """How the user wants inference run (validated by the engine)."""

    device: str = "auto"
    """One device, or for `upscale` several GPUs: "cuda:0,cuda:1" or "cuda:all"."""
    precision: str = "auto"
    tile: int | None = None
    batch: int = 1
    tta: bool = False
    compile: bool = False


def _load_network(card: ModelCard, reporter: Reporter, weights_path: Path | None) -> nn.Module:
    """Resolve the card's checkpoint (embedded, cache, mirror or download) and build the net from it."""
    path = weights_path or weights.ensure_weights(card, reporter).path
    state_dict = checkpoints.load_state_dict(path)
    try:
        return archs.build_network(card.arch, card.scale, card.hyperparameters, state_dict)
    except RuntimeError as error:  # strict load: wrong keys or shapes
        raise checkpoints.damaged_checkpoint_error(card, path, error) from None


def _engine(network: nn.Module, card: ModelCard, choice: EngineChoice, device: str) -> Upscaler:
    return Upscaler(network, archs.get_spec(card.arch), card.scale, device=device, precision=choice.precision,
                    tile=choice.tile, batch=choice.batch, tta=choice.tta, compile=choice.compile)


def load_upscaler(card: ModelCard, choice: EngineChoice, reporter: Reporter | None = None,
                  weights_path: Path | None = None) -> Upscaler:
    """One engine on one device (bench, eval and the Python API measure or run one device)."""
    devices = parse_devices(choice.device)
    if len(devices) > 1:
        raise UsageError(f"--device {choice.device}: this command runs on one device",
                         hint="several GPUs share the work of `lightsr upscale`; pick one here, e.g. cuda:0")
    return _engine(_load_network(card, reporter or NullReporter(), weights_path), card, choice, devices[0])


def load_pool(card: ModelCard, choice: EngineChoice, reporter: Reporter | None = None,
              weights_path: Path | None = None) -> UpscalerPool:
    """One engine per device of ``choice.device`` (each with its own copy of the network)."""
    devices = parse_devices(choice.device)
    network = _load_network(card, reporter or NullReporter(), weights_path)
    networks = [network] + [copy.deepcopy(network) for _ in devices[1:]]
    return UpscalerPool(_engine(net, card, choice, device) for net, device in zip(networks, devices))


# -- pixels <-> tensors ---------------------------------------------------------------------------

def _upscale_rgb(upscaler: Upscaler, rgb: np.ndarray, reporter: Reporter | None) -> np.ndarray:
    return pixels.upscale_rgb(upscaler, rgb[None], reporter)[0]


def upscale_pixels(upscaler: Upscaler, pixels: np.ndarray, reporter: Reporter | None = None) -> np.ndarray:
    """Upscale a gray, RGB or RGBA uint8/uint16 image; same channels and depth out.

    Gray goes through the network as three equal channels; alpha goes through it as its own gray
    image (so edges of cut-outs stay sharp) unless it is constant, when it is simply extended.
    """
    if pixels.ndim == 2:
        result = _upscale_rgb(upscaler, np.repeat(pixels[:, :, None], 3, axis=2), reporter)
        return np.round(result.astype(np.float32).mean(axis=2)).astype(pixels.dtype)
    if pixels.shape[2] == 4:
        color = upscale_pixels(upscaler, np.ascontiguousarray(pixels[:, :, :3]), reporter)
        alpha = pixels[:, :, 3]
        if alpha.min() == alpha.max():
            upscaled_alpha = np.full(color.shape[:2], alpha.flat[0], dtype=pixels.dtype)
        else:
            upscaled_alpha = upscale_pixels(upscaler, alpha, reporter)
        return np.dstack([color, upscaled_alpha])
    return _upscale_rgb(upscaler, pixels, reporter)


# -- image jobs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputSettings:
    image_format: str | None = None
    quality: int | None = None
    outscale: float | None = None
    """Final size factor relative to the input; None keeps the network's scale."""
    overwrite: bool = False


@dataclass
class RunSummary:
    done: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, LightsrError]] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    megapixels_in: float = 0.0
    megapixels_out: float = 0.0
    seconds: float = 0.0
    videos: list[VideoResult] = field(default_factory=list)


def run_image_job(upscaler: Upscaler, job: Job, output: OutputSettings, reporter: Reporter) -> tuple[float, float]:
    """Read, upscale, (resize,) write one image; returns (megapixels in, megapixels out)."""
    pixels = images.read_image(job.source)
    result = upscale_pixels(upscaler, pixels, reporter)
    if output.outscale and output.outscale != upscaler.scale:
        height, width = pixels.shape[:2]
        result = images.resize(result, max(1, round(width * output.outscale)), max(1, round(height * output.outscale)))
    image_format = images.image_format(job.target)
    images.write_image(job.target, result, images.EncodeOptions(image_format, output.quality), output.overwrite)
    return pixels.shape[0] * pixels.shape[1] / 1e6, result.shape[0] * result.shape[1] / 1e6


def run_jobs(pool: UpscalerPool, jobs: list[Job], output: OutputSettings, reporter: Reporter | None = None,
             video_settings: VideoSettings | None = None, model_id: str = "") -> RunSummary:
    """Run every job; a job that fails is recorded and the others still run.

    Images are spread over the pool's devices (one file per device at a time); videos run one
    after another, each spreading its frames over the devices.
    """
    reporter = reporter or NullReporter()
    summary = RunSummary()
    started = time.perf_counter()
    files = reporter.task("files", total=len(jobs), unit="file") if len(jobs) > 1 else None

    def run_image(upscaler: Upscaler, job: Job) -> tuple[float, float] | LightsrError:
        try:
            return run_image_job(upscaler, job, output, reporter)
        except LightsrError as error:
            return error

    def run_video(job: Job) -> tuple[float, float] | LightsrError:
        try:
            result = run_video_job(pool, job, output.outscale, video_settings or VideoSettings(),
                                   output.overwrite, model_id, reporter)
        except LightsrError as error:
            return error
        summary.videos.append(result)
        return result.megapixels_in, result.megapixels_out

    image_jobs = [job for job in jobs if job.kind is not MediaKind.VIDEO]
    video_jobs = [job for job in jobs if job.kind is MediaKind.VIDEO]
    outcomes = itertools.chain(zip(image_jobs, pool.map_ordered(run_image, image_jobs)),
                               ((job, run_video(job)) for job in video_jobs))
    try:
        for job, outcome in outcomes:
            if isinstance(outcome, LightsrError):
                summary.failed.append((job, outcome))
                reporter.note(f"error: {job.source}: {outcome.message}")
                if outcome.hint:
                    reporter.note(f"hint: {outcome.hint}")
            else:
                summary.megapixels_in += outcome[0]
                summary.megapixels_out += outcome[1]
                summary.done.append(job)
            if files:
                files.advance()
    finally:
        if files:
            files.close()
        summary.seconds = time.perf_counter() - started
    return summary


# -- benchmarks ------------------------------------------------------------------------------------

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
        raise LightsrError(f"{dataset} has no x{scale}/LR and x{scale}/HR folders",
                           hint="lay benchmark pairs out as DATASET/x<scale>/{LR,HR}/<same names>")
    pairs = [(lr, hr_dir / lr.name) for lr in sorted(lr_dir.iterdir()) if images.is_image_path(lr)]
    missing = [hr for _, hr in pairs if not hr.is_file()]
    if missing or not pairs:
        raise LightsrError(f"{hr_dir} lacks {missing[0].name}" if missing else f"no images in {lr_dir}")
    return pairs


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Benchmark convention: gray images become three equal channels; alpha is dropped."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def evaluate(upscaler: Upscaler, dataset: Path, reporter: Reporter | None = None) -> DatasetScore:
    """PSNR-Y/SSIM-Y (border = scale) of 8-bit outputs against HR, the papers' protocol."""
    from .metrics import crop_to_match, psnr_y, ssim_y

    reporter = reporter or NullReporter()
    pairs = benchmark_pairs(dataset, upscaler.scale)
    scores = []
    started = time.perf_counter()
    progress = reporter.task(f"{dataset.name} x{upscaler.scale}", total=len(pairs), unit="image")
    try:
        for lr_path, hr_path in pairs:
            lr = _as_rgb(images.read_image(lr_path))
            hr = _as_rgb(images.read_image(hr_path))
            if lr.dtype != np.uint8:
                raise LightsrError(f"{lr_path} is not 8-bit", hint="benchmarks are scored on 8-bit images")
            sr = _upscale_rgb(upscaler, lr, None)
            hr = crop_to_match(hr, sr)
            border = upscaler.scale
            scores.append(ImageScore(lr_path.name, psnr_y(sr, hr, border), ssim_y(sr, hr, border)))
            progress.advance()
    finally:
        progress.close()
    return DatasetScore(dataset.name, upscaler.scale, scores, time.perf_counter() - started)
