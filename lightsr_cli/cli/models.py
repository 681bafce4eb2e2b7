"""`lightsr models ...`: what models exist, where their weights are, and managing the cache."""

from __future__ import annotations

import typer

from ..registry import CARDS, PRESET_MODELS
from . import options
from .app import app, handles_errors
from .render import print_json, stdout_table

models_app = typer.Typer(help="List, inspect, download and verify models.", no_args_is_help=False)
app.add_typer(models_app, name="models")


def _presets_by_model() -> dict[str, list[str]]:
    picks: dict[str, list[str]] = {}
    for scale, presets in PRESET_MODELS.items():
        for preset, model_id in presets.items():
            picks.setdefault(model_id, []).append(f"{preset}@x{scale}")
    return picks


def model_rows() -> list[dict]:
    from ..weights import cached_status

    presets = _presets_by_model()
    return [{
        "id": card.id, "arch": card.arch, "scale": card.scale, "params": card.params,
        "set5_psnr": card.reference_psnr.get("Set5"), "set14_psnr": card.reference_psnr.get("Set14"),
        "license": card.license.split(" ")[0], "weights": cached_status(card),
        "presets": ",".join(presets.get(card.id, [])),
    } for card in CARDS]


@models_app.callback(invoke_without_command=True)
def models_default(ctx: typer.Context, as_json: bool = options.JSON) -> None:
    """With no subcommand: the model list."""
    if ctx.invoked_subcommand is None:
        list_models(ctx, as_json)


@models_app.command("list")
@handles_errors
def list_models(ctx: typer.Context, as_json: bool = options.JSON) -> None:
    """Every model: id, architecture, scale, parameters, Set5/Set14 PSNR-Y, license, weights status."""
    rows = model_rows()
    if as_json:
        print_json(rows)
        return
    stdout_table("lightsr models (PSNR-Y in dB, official code; weights: embedded / cached / download)",
                 ["id", "arch", "scale", "params", "set5_psnr", "set14_psnr", "license", "weights", "presets"], rows)
