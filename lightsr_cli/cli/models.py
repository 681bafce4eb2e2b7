"""`lightsr models ...`: what models exist, where their weights are, and managing the cache."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..errors import UsageError
from ..registry import CARDS, PAPERS, PRESET_MODELS, PRESETS_MEASURED_ON, get_card
from . import options
from .handling import handles_errors
from .render import print_json, stdout_table

models_app = typer.Typer(help="List, inspect, download and verify models.", no_args_is_help=False)


def _presets_by_model() -> dict[str, list[str]]:
    picks: dict[str, list[str]] = {}
    for scale, presets in PRESET_MODELS.items():
        for preset, model_id in presets.items():
            picks.setdefault(model_id, []).append(f"{preset}@x{scale}")
    return picks


def model_rows() -> list[dict]:
    from ..weights import cached_status

    presets = _presets_by_model()
    shown = {"missing": "download", "corrupt": "corrupt (re-download)"}
    return [{
        "id": card.id, "arch": card.arch, "scale": card.scale, "params": card.params, "paper": PAPERS[card.arch],
        "set5_psnr": card.measured_psnr.get("Set5"), "set14_psnr": card.measured_psnr.get("Set14"),
        "official_set14_psnr": card.reference_psnr.get("Set14"),
        "license": card.license.split(" ")[0], "weights": shown.get(status, status),
        "presets": ",".join(presets.get(card.id, [])),
    } for card in CARDS for status in [cached_status(card)]]


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
    stdout_table("lightsr models (PSNR-Y in dB measured with `lightsr eval`; weights: embedded / cached / download; "
                 f"presets picked from speed measured on {PRESETS_MEASURED_ON})",
                 ["id", "scale", "params", "paper", "set5_psnr", "set14_psnr", "license", "weights", "presets"], rows)


def _cards(ids: List[str], every: bool):
    if every and ids:
        raise UsageError("give model ids or --all, not both")
    if not every and not ids:
        raise UsageError("name at least one model id, or pass --all", hint="see `lightsr models list`")
    return list(CARDS) if every else [get_card(model_id) for model_id in ids]


@models_app.command("info")
@handles_errors
def info(ctx: typer.Context, model_id: str = typer.Argument(..., metavar="ID"), as_json: bool = options.JSON) -> None:
    """Everything lightsr knows about one model."""
    from ..weights import cache_path, cached_status

    card = get_card(model_id)
    data = {
        "id": card.id, "arch": card.arch, "scale": card.scale, "params": card.params,
        "hyperparameters": dict(card.hyperparameters), "license": card.license,
        "redistributable": card.redistributable, "file": card.checkpoint.filename, "url": card.checkpoint.url,
        "sha256": card.checkpoint.sha256, "git_blob_sha1": card.checkpoint.git_blob_sha1, "size": card.checkpoint.size,
        "pinned": card.checkpoint.pinned, "reference_psnr_y": dict(card.reference_psnr),
        "reference_ssim_y": dict(card.reference_ssim), "weights": cached_status(card),
        "cache_path": str(cache_path(card)), "presets": _presets_by_model().get(card.id, []), "note": card.note,
    }
    if as_json:
        print_json(data)
        return
    width = max(map(len, data))
    for key, value in data.items():
        if value not in (None, "", [], {}):
            typer.echo(f"{key:<{width}}  {value}")


@models_app.command("download")
@handles_errors
def download(ctx: typer.Context, model_ids: List[str] = typer.Argument(None, metavar="ID..."),
             every: bool = typer.Option(False, "--all", help="Every model."),
             as_json: bool = options.JSON) -> None:
    """Fetch checkpoints into the cache now (verified), e.g. before going offline."""
    from ..errors import LightsrError
    from ..weights import ensure_weights
    from .render import RichReporter, print_error

    results, failed = [], 0
    with RichReporter() as reporter:
        for card in _cards(model_ids, every):
            try:
                resolved = ensure_weights(card, reporter)
                results.append({"id": card.id, "source": resolved.source, "path": str(resolved.path),
                                "pinned": resolved.pinned})
            except LightsrError as error:
                failed += 1
                message, hint = error.for_cli()
                print_error(f"{card.id}: {message}", hint)
                results.append({"id": card.id, "error": error.message})
    if as_json:
        print_json(results)
    else:
        for row in results:
            if "path" in row:
                typer.echo(f"{row['id']}: {row['source']} {row['path']}" + ("" if row["pinned"] else " (unpinned)"))
    if failed:
        raise typer.Exit(1)


@models_app.command("verify")
@handles_errors
def verify(ctx: typer.Context, model_ids: List[str] = typer.Argument(None, metavar="[ID...]"),
           as_json: bool = options.JSON) -> None:
    """Re-hash cached checkpoints against their cards (all cached ones when no id is given)."""
    from ..weights import cache_path, verify_cached

    cards = [get_card(model_id) for model_id in model_ids] if model_ids else \
        [card for card in CARDS if cache_path(card).is_file()]
    rows = [{"id": card.id, "result": verify_cached(card), "path": str(cache_path(card))} for card in cards]
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            typer.echo(f"{row['id']}: {row['result']}")
        if not rows:
            typer.echo("no cached checkpoints")
    if any(row["result"] == "mismatch" for row in rows):
        raise typer.Exit(1)


@models_app.command("rm")
@handles_errors
def remove(ctx: typer.Context, model_ids: List[str] = typer.Argument(None, metavar="ID..."),
           every: bool = typer.Option(False, "--all", help="Every cached model.")) -> None:
    """Delete cached checkpoints (embedded ones stay)."""
    from ..weights import remove_cached

    for card in _cards(model_ids, every):
        if remove_cached(card):
            typer.echo(f"removed {card.id}")
        elif not every:
            typer.echo(f"{card.id}: not cached")


models_app.command("remove", hidden=True)(remove)


@models_app.command("path")
@handles_errors
def path(ctx: typer.Context, model_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Where the model's checkpoint is (embedded or cached), or where it will be cached."""
    from ..weights import cache_path, embedded_path

    card = get_card(model_id)
    typer.echo(str(embedded_path(card) or cache_path(card)))


@models_app.command("convert")
@handles_errors
def convert(ctx: typer.Context, source: Path = typer.Argument(..., metavar="IN"),
            destination: Path = typer.Argument(..., metavar="OUT.safetensors"),
            scale: int = typer.Option(None, "--scale", "-s", help="Scale, when the weights cannot tell (A2N)."),
            overwrite: bool = typer.Option(False, "--overwrite")) -> None:
    """Convert a .pth/.pt/.ckpt checkpoint to safetensors safely (no pickled code runs)."""
    from ..checkpoints import card_for_file, convert_to_safetensors
    from ..errors import OutputError

    if destination.suffix != ".safetensors":
        raise UsageError(f"{destination} must end in .safetensors")
    if destination.exists() and not overwrite:
        raise OutputError(f"output exists: {destination}", hint="pass --overwrite to replace it")
    card = card_for_file(source, scale)
    metadata = convert_to_safetensors(source, destination, card=card)
    typer.echo(f"{destination}: {metadata.get('arch')} x{metadata.get('scale')}")


@models_app.command("export")
@handles_errors
def export(ctx: typer.Context, model_id: str = typer.Argument(None, metavar="ID"),
           weights_file: Path = options.WEIGHTS,
           onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the one format for now)."),
           output: Path = typer.Option(None, "--output", "-o", help="The .onnx file (default: ID.onnx here)."),
           opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
           fp16: bool = typer.Option(False, "--fp16", help="fp16 weights and input/output."),
           static: str = typer.Option(None, "--static", metavar="WxH",
                                      help="A fixed input size (default: dynamic batch, height and width)."),
           scale: int = typer.Option(None, "--scale", "-s", help="Scale, when the weights cannot tell (A2N)."),
           overwrite: bool = typer.Option(False, "--overwrite"),
           as_json: bool = options.JSON) -> None:
    """Export a model to ONNX, verified against the torch network (max abs diff reported)."""
    from dataclasses import asdict

    from ..checkpoints import resolve_card
    from ..engine.onnx_export import DEFAULT_OPSET, ExportSettings, parse_static
    from ..pipeline.onnx_models import export_model
    from .render import RichReporter

    if not onnx:
        raise UsageError("name the format: {--onnx}")
    if (model_id is None) == (weights_file is None):
        raise UsageError("give a model id or {--weights FILE} (one of them)", hint="see `lightsr models list`")
    card = resolve_card(model_id, None, weights_file, scale)
    settings = ExportSettings(opset=opset or DEFAULT_OPSET, fp16=fp16, static=parse_static(static))
    target = output or Path(f"{card.id}{'-fp16' if fp16 else ''}.onnx")
    with RichReporter() as reporter:
        result = export_model(card, target, settings, weights_path=weights_file, overwrite=overwrite,
                              reporter=reporter)
    if as_json:
        print_json({"path": str(result.path), "metadata": result.metadata,
                    "checks": [asdict(check) for check in result.checks]})
        return
    typer.echo(f"{result.path}: {card.arch} x{card.scale}, opset {settings.opset}, "
               f"{'fp16' if fp16 else 'fp32'}, {'static ' + static if settings.static else 'dynamic size'}")
    for check in result.checks:
        typer.echo(f"  {check.name} {'x'.join(map(str, check.shape))}: max abs diff {check.max_abs_diff:.3g}"
                   + (f" ({check.note})" if check.note else ""))
