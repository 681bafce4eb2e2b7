"""`lightsr compare IMAGE`: the same crop from bicubic and from each model, labelled, in one picture."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options
from .handling import handles_errors
from .render import RichReporter, print_json, stderr


@handles_errors
def compare(
    ctx: typer.Context,
    image: Path = typer.Argument(..., metavar="IMAGE", help="The image to upscale with every model."),
    models: Optional[str] = typer.Option(None, "--models", "-m", help="Model ids, comma-separated (one scale).",
                                         rich_help_panel="Models"),
    preset_all: bool = typer.Option(False, "--preset-all", help="The fast, balanced and quality models of the scale "
                                    "(the default when no models are named).", rich_help_panel="Models"),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Scale 2, 3 or 4; alone: every model of it "
                                        "(those whose weights cannot be had are left out).", rich_help_panel="Models"),
    crop: str = typer.Option("auto", "--crop", help="auto (the most detailed region) or X,Y,W,H in input pixels."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="The high-resolution original: adds "
                                             "PSNR-Y/SSIM-Y of the whole image (as `lightsr eval`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The grid picture (default IMAGE_compare.png "
                                          "beside the input), or a folder for it."),
    html: bool = typer.Option(False, "--html", help="Also write a self-contained HTML page with a before/after "
                              "slider per model (same name, .html)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    device: str = options.DEVICE,
    precision: options.Precision = options.PRECISION,
    as_json: bool = options.JSON,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary (errors still print)."),
) -> None:
    """Compare models on one image: a labelled grid of the same crop (bicubic first), speed and scores."""
    from ..pipeline.compare import CompareSettings, parse_crop, read_input, select_cards
    from ..pipeline.compare import compare as run_compare
    from ..pipeline.compare_output import plan_targets, summary, write_outputs
    from ..pipeline.loading import EngineSettings

    cards, skip_unavailable = select_cards(models, preset_all, scale)
    box = parse_crop(crop)
    targets = plan_targets(image, output, html, overwrite)
    given = read_input(image, cards[0].scale, box, reference, _pixel_limits())
    settings = CompareSettings(EngineSettings(device=device, precision=precision.value), skip_unavailable)
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    with RichReporter(quiet=quiet, debug=debug) as reporter:
        comparison = run_compare(cards, given, settings, reporter)
        layout = write_outputs(comparison, targets, overwrite)
    report = summary(comparison, targets, layout)
    if as_json:
        print_json(report)
    elif not quiet:
        _print_summary(report)


def _pixel_limits():
    """The environment's limits (LIGHTSR_MAX_*_MEGAPIXELS), else the defaults: as `lightsr upscale` without options."""
    from ..pipeline.limits import PixelLimits
    from ..settings import read_settings

    settings = read_settings()
    return PixelLimits(settings.max_input_megapixels, settings.max_output_megapixels)


def _print_summary(report: dict) -> None:
    crop = report["crop"]["input"]
    stderr.print(f"[bold green]done[/]: {report['grid']}" + (f" and {report['page']}" if report["page"] else ""))
    stderr.print(f"  crop {crop['x']},{crop['y']},{crop['width']},{crop['height']} of the input (X,Y,W,H)"
                 + (", chosen automatically" if report["crop"]["auto"] else "") + f"; {report['device']}")
    for cell in report["cells"]:
        line = "  ".join([cell["title"], *cell["lines"]])
        stderr.print(f"  {line}", markup=False, highlight=False)
