"""`lightsr eval DATASET --model ID`: PSNR/SSIM-Y on benchmark pairs, as the papers measure them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from . import options
from .handling import handles_errors
from .render import RichReporter, print_json, stdout_table


def _scoring_precision(requested: str, device: str) -> str:
    """The papers score fp32 outputs, so on the CPU ``auto`` scores in fp32 rather than in the half precision
    some CPUs get for speed (bf16 moves PSNR-Y by up to 0.043 dB for the models it is adopted for); GPUs keep
    their ``auto`` choice, and an explicit precision is kept."""
    from ..engine.backends import device_kind

    return "fp32" if requested == "auto" and device_kind(device) == "cpu" else requested


@handles_errors
def evaluate(
    ctx: typer.Context,
    datasets: List[Path] = typer.Argument(..., metavar="DATASET...", help="Folders laid out as DATASET/x<scale>/{LR,HR}."),
    model: Optional[str] = options.MODEL,
    preset: Optional[options.Preset] = options.PRESET,
    weights_file: Optional[Path] = options.WEIGHTS,
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Scale, when choosing by preset."),
    tile: Optional[int] = options.TILE,
    batch: int = options.BATCH,
    device: str = options.DEVICE,
    precision: options.Precision = options.PRECISION,
    tta: bool = options.TTA,
    per_image: bool = typer.Option(False, "--per-image", help="Also list every image's scores."),
    as_json: bool = options.JSON,
) -> None:
    """Score a model: PSNR-Y and SSIM-Y (BT.601, border = scale) of 8-bit outputs against HR."""
    for dataset in datasets:
        if not dataset.is_dir():
            raise InputError(f"no such dataset folder: {dataset}")
    from ..checkpoints import resolve_card

    card = resolve_card(model, preset.value if preset else None, weights_file, scale)
    from ..pipeline.evaluation import evaluate as evaluate_dataset
    from ..pipeline.loading import EngineSettings, load_engine

    engine_settings = EngineSettings(device=device, precision=_scoring_precision(precision.value, device), tile=tile,
                                     batch=batch, tta=tta)
    with RichReporter() as reporter:
        engine = load_engine(card, engine_settings, reporter, weights_path=weights_file)
        scores = [evaluate_dataset(engine, dataset, reporter) for dataset in datasets]
    rows = [{
        "dataset": s.dataset, "model": card.id, "scale": s.scale, "images": len(s.images),
        "psnr_y": round(s.psnr_y, 4), "ssim_y": round(s.ssim_y, 4),
        "reference_psnr_y": card.reference_psnr.get(s.dataset), "seconds": round(s.seconds, 2),
        "device": str(engine.device), "precision": engine.precision, "tile": engine.stats.tile,
        "tta": tta,
        **({"per_image": {i.name: {"psnr_y": round(i.psnr_y, 4), "ssim_y": round(i.ssim_y, 4)} for i in s.images}}
           if per_image or as_json else {}),
    } for s in scores]
    if as_json:
        print_json(rows)
        return
    columns = ["dataset", "model", "scale", "images", "psnr_y", "ssim_y", "reference_psnr_y", "seconds"]
    stdout_table(f"{card.id} on {engine.device} ({engine.precision})", columns, rows)
    if per_image:
        for row in rows:
            stdout_table(row["dataset"], ["image", "psnr_y", "ssim_y"],
                         [{"image": k, **v} for k, v in row["per_image"].items()])
