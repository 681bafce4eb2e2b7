"""What `lightsr compare` writes: the labelled grid picture and, with --html, the slider page beside it.

Names follow `lightsr upscale`'s rules: ``IMAGE_compare.png`` beside the input by default, ``-o``
a file or a folder; the targets are checked before any model runs (an existing file is refused
without overwrite, an output never replaces its input), and each file is written whole or not at
all (fs.write_bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import fs
from ..errors import OutputError, UsageError
from ..media import images
from ..media.grid import GridLayout, Panel, render_grid
from ..media.slider_page import Comparand, render_slider_page
from .compare import Comparison, Result

SUFFIX = "_compare"


@dataclass(frozen=True)
class CompareTargets:
    grid: Path
    page: Path | None
    """The HTML page (--html): the grid's name with .html."""


def plan_targets(source: Path, output: Path | None, html: bool, overwrite: bool) -> CompareTargets:
    """Where the grid (and page) go; refuses existing files (without ``overwrite``) and the input itself."""
    default_name = f"{source.stem}{SUFFIX}.png"
    if output is None:
        grid = source.with_name(default_name)
    elif output.is_dir() or str(output).endswith(("/", "\\")):
        grid = output / default_name
    else:
        grid = output
        if not images.is_image_path(grid):
            raise UsageError(f"output {output}: the grid is a picture; give it an image extension such as .png",
                             hint="{--html} writes the page beside it, with the same name and .html")
    targets = CompareTargets(grid, grid.with_suffix(".html") if html else None)
    for target in (targets.grid, targets.page):
        if target is None:
            continue
        if target.resolve() == source.resolve():
            raise OutputError(f"the output would replace its input: {source}", hint="use {-o} to write elsewhere")
        if target.exists() and not overwrite:
            raise fs.output_exists_error(target)
    return targets


def _ms_line(result: Result) -> str:
    if result.ms_per_megapixel is None:
        return "baseline (Pillow bicubic)"
    ms = result.ms_per_megapixel
    return f"{ms:.0f} ms/MP, {result.precision}" if ms >= 100 else f"{ms:.1f} ms/MP, {result.precision}"


def _score_line(result: Result) -> str | None:
    if result.psnr_y is None:
        return None
    return f"PSNR-Y {result.psnr_y:.2f} dB  SSIM-Y {result.ssim_y:.4f}"


def label_lines(result: Result) -> tuple[str, ...]:
    """The lines under a cell's title: speed (or 'baseline'), then the scores when measured."""
    score = _score_line(result)
    return (_ms_line(result),) + ((score,) if score else ())


def title(comparison: Comparison) -> str:
    return f"lightsr compare: {comparison.source.name} x{comparison.scale}"


def legend(comparison: Comparison) -> list[str]:
    """The legend: what the picture shows and what each number means."""
    width, height = comparison.input_size
    scale = comparison.scale
    crop, out = comparison.crop, comparison.crop.scaled(scale)
    how = "the most detailed region (highest gradient energy)" if comparison.crop_was_auto else "the region asked for"
    lines = [
        f"{comparison.source.name}: {width}x{height} upscaled x{scale} to {width * scale}x{height * scale}. "
        f"Crop {out.width}x{out.height} at {out.x},{out.y} of the outputs (input {crop}, X,Y,W,H), {how}, "
        f"shown 1:1.",
        f"ms/MP: milliseconds of the model's forward passes per output megapixel on {comparison.device}, "
        f"whole image, after one warm-up run (lower is faster).",
    ]
    if comparison.reference is not None:
        lines.append(f"PSNR-Y / SSIM-Y: whole image against {comparison.reference.name} (BT.601 Y, {scale}-pixel "
                     f"border shaved, 8-bit), as `lightsr eval` measures.")
    if comparison.skipped:
        lines.append("Left out (weights not available): " + "; ".join(comparison.skipped))
    return lines


def _results(comparison: Comparison) -> list[Result]:
    return [comparison.bicubic, *comparison.models]


def grid_picture(comparison: Comparison) -> tuple:
    """(H x W x 3 uint8 grid, its GridLayout): bicubic first, then the models in the order given."""
    panels = [Panel(result.crop, result.name, label_lines(result)) for result in _results(comparison)]
    return render_grid(panels, legend(comparison))


def slider_page(comparison: Comparison) -> str:
    before = comparison.bicubic
    return render_slider_page(title(comparison), legend(comparison),
                              Comparand(before.crop, before.name, label_lines(before)),
                              [Comparand(r.crop, r.name, label_lines(r)) for r in comparison.models])


def write_outputs(comparison: Comparison, targets: CompareTargets, overwrite: bool) -> GridLayout:
    """Write the grid (and the page); returns the grid's layout."""
    pixels, layout = grid_picture(comparison)
    encoding = images.ImageEncodeSettings(images.image_format(targets.grid))
    fs.write_bytes(targets.grid, images.encode_image(pixels, encoding), overwrite=overwrite)
    if targets.page is not None:
        fs.write_bytes(targets.page, slider_page(comparison).encode("utf-8"), overwrite=overwrite)
    return layout


def summary(comparison: Comparison, targets: CompareTargets, layout: GridLayout) -> dict:
    """Everything the run found, as plain data (the CLI's --json)."""
    out = comparison.crop.scaled(comparison.scale)
    return {
        "image": str(comparison.source), "scale": comparison.scale,
        "input_size": list(comparison.input_size), "device": comparison.device,
        "crop": {"input": _box(comparison.crop), "output": _box(out), "auto": comparison.crop_was_auto},
        "reference": str(comparison.reference) if comparison.reference else None,
        "grid": str(targets.grid), "page": str(targets.page) if targets.page else None,
        "grid_size": [layout.width, layout.height], "legend": list(layout.legend),
        "cells": [{
            "name": result.name, "ms_per_megapixel": _rounded(result.ms_per_megapixel, 3),
            "precision": result.precision, "psnr_y": _rounded(result.psnr_y, 4), "ssim_y": _rounded(result.ssim_y, 4),
            "title": cell.title, "lines": list(cell.lines), "image": cell.image.as_dict(), "label": cell.label.as_dict(),
        } for result, cell in zip(_results(comparison), layout.cells, strict=True)],
        "skipped": list(comparison.skipped),
    }


def _box(crop) -> dict[str, int]:
    return {"x": crop.x, "y": crop.y, "width": crop.width, "height": crop.height}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
