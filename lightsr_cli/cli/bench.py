"""`lightsr bench`: how fast each model runs here."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..checkpoints import resolve_card
from ..errors import UsageError
from ..registry import CARDS, get_card
from . import options
from .handling import handles_errors
from .render import RichReporter, print_json, stdout_table


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 1280x720, not '{text}'") from None
    if width < 16 or height < 16:
        raise UsageError("--size must be at least 16x16")
    return width, height


@handles_errors
def bench(
    ctx: typer.Context,
    models: List[str] = typer.Option([], "--model", "-m", help="Model id (repeat for several)."),
    every: bool = typer.Option(False, "--all", help="Every model with this scale (or every model)."),
    preset: Optional[options.Preset] = options.PRESET,
    size: str = typer.Option("1280x720", "--size", help="Output frame size WIDTHxHEIGHT."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Only models of this scale."),
    tile: Optional[int] = options.TILE,
    batch: int = options.BATCH,
    device: str = options.DEVICE,
    precision: options.Precision = options.PRECISION,
    compile_network: bool = options.COMPILE,
    backend: options.Backend = options.BACKEND,
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs per model (the median is reported)."),
    as_json: bool = options.JSON,
) -> None:
    """Time inference per model: the network alone (model_ms) and end to end, MP/s, peak memory."""
    width, height = _parse_size(size)
    if every:
        cards = [card for card in CARDS if scale is None or card.scale == scale]
    elif models:
        cards = [get_card(model_id) for model_id in models]
    else:
        cards = [resolve_card(None, preset.value if preset else None, None, scale)]
    from ..errors import LightsrError
    from ..pipeline.bench import benchmark
    from ..pipeline.loading import EngineSettings, load_engine
    from .render import print_error

    rows = []
    engine_settings = EngineSettings(device=device, precision=precision.value, tile=tile, batch=batch, compile=compile_network,
                                     backend=backend.value)
    with RichReporter() as reporter:
        progress = reporter.task("bench", total=len(cards), unit="model")
        for card in cards:
            try:
                engine = load_engine(card, engine_settings, reporter)
                result = benchmark(engine, width, height, repeats=repeats)
            except UsageError:
                raise  # a wrong option, not a model that failed: stop at once
            except LightsrError as error:
                message, hint = error.for_cli()
                print_error(f"{card.id}: {message}", hint)
                progress.advance()
                continue
            rows.append({
                "model": card.id, "scale": card.scale, "output": f"{result.output_size[0]}x{result.output_size[1]}",
                "device": result.device, "backend": engine.backend, "precision": result.precision, "batch": result.batch, "tile": result.tile,
                "model_ms": round(result.model_ms_per_frame, 2), "end_to_end_ms": round(result.end_to_end_ms_per_frame, 2),
                "model_mp_s": round(result.model_megapixels_per_second, 3),
                "end_to_end_mp_s": round(result.output_megapixels_per_second, 3),
                "peak_memory_mb": round(result.peak_memory_mb, 1),
                "compiled_graphs": result.compiled_graphs, "graph_breaks": result.graph_breaks,
                "set14_psnr": card.reference_psnr.get("Set14"),
            })
            progress.advance()
        progress.close()
    if as_json:
        print_json(rows)
    else:
        stdout_table(f"lightsr bench ({size} output)", ["model", "device", "backend", "precision", "batch", "tile", "model_ms",
                                                         "end_to_end_ms", "end_to_end_mp_s", "peak_memory_mb",
                                                         "set14_psnr"], rows)
    if not rows:
        raise typer.Exit(1)
