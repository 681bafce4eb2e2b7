"""`lightsr compare`: one image through bicubic and several models, timed, scored, cropped to one region.

Each model upscales the whole image (exactly what `lightsr upscale` would write, so the crop shows
real output, borders and tiling included); its forward passes are timed after one warm-up run on
the same image and reported per output megapixel. With a reference (the HR image), PSNR-Y/SSIM-Y
are measured on the whole image as `lightsr eval` does (8-bit RGB, BT.601 Y, border = scale).
Every model compared must have the same scale. The crop is chosen on the input (explicitly, or
the window of highest gradient energy) and mapped to output pixels by the scale.
Drawing the grid and the HTML page is compare_output.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, LightsrError, UsageError, WeightsError
from ..media import images
from ..metrics import crop_to_match, psnr_y, ssim_y
from ..progress import NullReporter, Reporter
from ..registry import CARDS, PRESET_MODELS, PRESETS, ModelCard, get_card
from .evaluation import as_rgb
from .limits import PixelLimits, check_input, check_output
from .loading import EngineSettings, load_engine
from .pixels import upscale_image

CELL_OUTPUT_SIDE = 256
"""An automatic crop is a square of about this many output pixels a side (64 input pixels at x4)."""


@dataclass(frozen=True)
class CropBox:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    def scaled(self, scale: int) -> CropBox:
        return CropBox(self.x * scale, self.y * scale, self.width * scale, self.height * scale)

    def of(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[self.y:self.y + self.height, self.x:self.x + self.width]

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


@dataclass(frozen=True)
class CompareSettings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    skip_unavailable: bool = False
    """Leave out (with a note) models whose weights cannot be had, instead of failing: for "every model of a scale"."""
    limits: PixelLimits = field(default_factory=PixelLimits)


@dataclass(frozen=True)
class Result:
    """One column of the comparison: bicubic or a model."""

    name: str
    crop: np.ndarray
    """The crop of the whole upscaled image, H x W x 3 uint8."""
    ms_per_megapixel: float | None = None
    """Forward passes' time per output megapixel (None for bicubic)."""
    precision: str | None = None
    psnr_y: float | None = None
    ssim_y: float | None = None


@dataclass(frozen=True)
class Comparison:
    source: Path
    scale: int
    input_size: tuple[int, int]
    """(width, height) of the input."""
    crop: CropBox
    """In input pixels; ``crop.scaled(scale)`` in output pixels."""
    crop_was_auto: bool
    device: str
    bicubic: Result
    models: tuple[Result, ...]
    reference: Path | None = None
    skipped: tuple[str, ...] = ()
    """Models left out, each with why."""


# -- which models -------------------------------------------------------------------------------

def select_cards(models: str | None, preset_all: bool, scale: int | None) -> tuple[list[ModelCard], bool]:
    """The cards to compare, and whether unavailable ones may be skipped (only for "every model of a scale").

    ``--models a,b`` takes those (all of one scale, and of ``scale`` when given); ``--preset-all``
    the fast, balanced and quality models of ``scale`` (default 4); ``--scale`` alone every model
    of that scale; nothing at all, the presets at x4.
    """
    if scale is not None and scale not in PRESET_MODELS:
        raise UsageError(f"{{--scale}} must be {', '.join(map(str, sorted(PRESET_MODELS)))}, not {scale}")
    if models is not None and preset_all:
        raise UsageError("{--models} and {--preset-all} cannot be used together", hint="pick one")
    if models is not None:
        ids = [part.strip() for part in models.split(",") if part.strip()]
        if not ids:
            raise UsageError("{--models} names no model", hint="give model ids separated by commas, e.g. "
                             "bsrn-x4,emt-x4 (see `lightsr models`)")
        cards = _unique([get_card(model_id) for model_id in ids])
        _check_one_scale(cards, scale)
        return cards, False
    if preset_all or scale is None:
        wanted = scale or 4
        return _unique([get_card(PRESET_MODELS[wanted][preset]) for preset in PRESETS]), False
    return [card for card in CARDS if card.scale == scale], True


def _unique(cards: list[ModelCard]) -> list[ModelCard]:
    return list({card.id: card for card in cards}.values())


def _check_one_scale(cards: list[ModelCard], scale: int | None) -> None:
    if scale is not None:
        wrong = [card for card in cards if card.scale != scale]
        if wrong:
            raise UsageError(f"{', '.join(c.id for c in wrong)} upscale{'s' if len(wrong) == 1 else ''} "
                             f"x{wrong[0].scale}, not x{scale}",
                             hint=f"compare models of one scale; {{--scale {scale}}} alone picks every x{scale} model")
    scales = sorted({card.scale for card in cards})
    if len(scales) > 1:
        listed = ", ".join(f"{card.id} (x{card.scale})" for card in cards)
        raise UsageError(f"models of different scales cannot be compared pixel for pixel: {listed}",
                         hint="pick models of one scale, e.g. {--scale 4} for every x4 model")


# -- which region -------------------------------------------------------------------------------

def parse_crop(text: str | None) -> CropBox | None:
    """'auto' (or nothing) -> None; 'X,Y,W,H' -> a CropBox in input pixels."""
    if text is None or text.strip().lower() == "auto":
        return None
    parts = text.replace(" ", "").split(",")
    try:
        x, y, width, height = (int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{{--crop}} '{text}' is not auto or X,Y,W,H",
                         hint="four whole numbers in input pixels, e.g. {--crop 40,32,64,64}") from None
    if x < 0 or y < 0 or width < 1 or height < 1:
        raise UsageError(f"{{--crop}} {text}: X and Y must be 0 or more, W and H at least 1")
    return CropBox(x, y, width, height)


def check_crop(crop: CropBox, width: int, height: int, name: str) -> None:
    if crop.x + crop.width > width or crop.y + crop.height > height:
        raise InputError(f"crop {crop} (X,Y,W,H) reaches {crop.x + crop.width},{crop.y + crop.height}, outside "
                         f"{name}, which is {width}x{height}",
                         hint="the crop is given in input pixels; keep X+W <= width and Y+H <= height")


def auto_crop(rgb: np.ndarray, side: int) -> CropBox:
    """The side x side window (clipped to the image) with the most gradient energy: where detail is.

    Energy = squared Sobel gradients of the luma, summed over the window (an integral image makes
    every window cost the same); the first maximum in reading order wins, so it is deterministic.
    """
    import cv2

    height, width = rgb.shape[:2]
    window_h, window_w = min(side, height), min(side, width)
    luma = rgb[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    energy = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3) ** 2
    total = cv2.integral(energy.astype(np.float64))
    sums = (total[window_h:, window_w:] - total[:-window_h, window_w:]
            - total[window_h:, :-window_w] + total[:-window_h, :-window_w])
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return CropBox(int(left), int(top), window_w, window_h)


# -- running ------------------------------------------------------------------------------------

def bicubic_upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Pillow's bicubic (a = -0.5, as MATLAB's imresize), the baseline the SR papers compare against."""
    from PIL import Image

    height, width = rgb.shape[:2]
    upscaled = Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize((width * scale, height * scale),
                                                                          Image.Resampling.BICUBIC)
    return np.asarray(upscaled)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any image lightsr reads -> 8-bit RGB (gray repeated, alpha dropped, 16-bit rounded down to 8)."""
    rgb = as_rgb(pixels)
    if rgb.dtype == np.uint16:
        rgb = np.round(rgb.astype(np.float32) / 257.0).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def read_reference(path: Path, width: int, height: int, scale: int) -> np.ndarray:
    """The HR image, 8-bit RGB, cropped top-left to the output size as `lightsr eval` does."""
    hr = images.read_image(path)
    if hr.dtype != np.uint8:
        raise InputError(f"reference {path} is not 8-bit", hint="PSNR/SSIM-Y are measured on 8-bit images")
    hr = as_rgb(hr)
    hr_height, hr_width = hr.shape[:2]
    if not (width * scale <= hr_width < (width + 1) * scale and height * scale <= hr_height < (height + 1) * scale):
        raise InputError(f"reference {path.name} is {hr_width}x{hr_height}, but x{scale} of the {width}x{height} "
                         f"input is {width * scale}x{height * scale}",
                         hint="the reference is the high-resolution original of the input (same picture, "
                              f"{scale} times its size)")
    return hr


def _scores(sr: np.ndarray, hr: np.ndarray | None, scale: int) -> tuple[float | None, float | None]:
    if hr is None:
        return None, None
    hr = crop_to_match(hr, sr)
    return psnr_y(sr, hr, scale), ssim_y(sr, hr, scale)


def run_model(card: ModelCard, rgb: np.ndarray, crop: CropBox, reference: np.ndarray | None,
              settings: EngineSettings, reporter: Reporter) -> tuple[Result, str]:
    """One model's Result (crop, ms/MP, scores) and its device's description."""
    engine = load_engine(card, settings, reporter)
    upscale_image(engine, rgb)  # warm-up: first-call allocations, kernel choices and caches
    outputs: list[np.ndarray] = []
    seconds = engine.network_seconds(lambda: outputs.append(upscale_image(engine, rgb)))
    sr = outputs[0]
    megapixels = sr.shape[0] * sr.shape[1] / 1e6
    psnr, ssim = _scores(sr, reference, card.scale)
    crop_pixels = np.ascontiguousarray(crop.scaled(card.scale).of(sr))
    return Result(card.id, crop_pixels, seconds * 1000 / megapixels, engine.precision, psnr, ssim), \
        engine.device_description


@dataclass(frozen=True)
class CompareInput:
    """The image, the region and the reference, read and checked before any model is loaded."""

    source: Path
    rgb: np.ndarray
    """8-bit RGB."""
    scale: int
    crop: CropBox
    crop_was_auto: bool
    reference_path: Path | None = None
    reference: np.ndarray | None = None


def read_input(source: Path, scale: int, crop: CropBox | None, reference_path: Path | None,
               limits: PixelLimits | None = None) -> CompareInput:
    """Read and check everything the user named (sizes, crop, reference): cheap, so errors come first."""
    limits = limits or PixelLimits()
    data = images.read_image_bytes(source)
    size = images.claimed_size(data, source)
    if size is not None:
        check_input(source.name, *size, limits)
        check_output(source.name, *size, scale, None, limits)
    rgb = to_rgb8(images.decode_picture(data, source).frames[0])
    height, width = rgb.shape[:2]
    check_input(source.name, width, height, limits)
    check_output(source.name, width, height, scale, None, limits)
    if crop is not None:
        check_crop(crop, width, height, source.name)
    region = crop or auto_crop(rgb, max(1, CELL_OUTPUT_SIDE // scale))
    reference = read_reference(reference_path, width, height, scale) if reference_path else None
    return CompareInput(source, rgb, scale, region, crop is None, reference_path, reference)


def compare(cards: list[ModelCard], given: CompareInput, settings: CompareSettings,
            reporter: Reporter | None = None) -> Comparison:
    """Bicubic and every card on the input; cards of its one scale (see :func:`select_cards`)."""
    reporter = reporter or NullReporter()
    scale, crop, reference, rgb = given.scale, given.crop, given.reference, given.rgb
    if any(card.scale != scale for card in cards):
        raise UsageError(f"the input was prepared for x{scale}; every model compared must upscale x{scale}")
    bicubic = bicubic_upscale(rgb, scale)
    bicubic_result = Result("bicubic", np.ascontiguousarray(crop.scaled(scale).of(bicubic)),
                            None, None, *_scores(bicubic, reference, scale))
    results, skipped, device = [], [], ""
    task = reporter.task(f"comparing {len(cards)} models on {given.source.name}", total=len(cards), unit="model")
    try:
        for card in cards:
            try:
                result, device = run_model(card, rgb, crop, reference, settings.engine, reporter)
            except WeightsError as error:
                if not settings.skip_unavailable:
                    raise
                skipped.append(f"{card.id}: {error.message}")
                reporter.note(f"note: left out {card.id}: its weights are not available ({error.message})")
            else:
                results.append(result)
            task.advance()
    finally:
        task.close()
    if not results:
        raise LightsrError(f"none of the {len(cards)} models could be loaded", hint=skipped[0] if skipped else None)
    height, width = rgb.shape[:2]
    return Comparison(given.source, scale, (width, height), crop, given.crop_was_auto, device, bicubic_result,
                      tuple(results), given.reference_path, tuple(skipped))
