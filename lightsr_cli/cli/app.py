"""The `lightsr` Typer application: global options, and every command registered here, explicitly."""

from __future__ import annotations

import typer

from .. import __version__
from . import bench, compare, evaluate, models, upscale, watch

app = typer.Typer(
    name="lightsr", no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    help="Upscale images and videos with lightweight super-resolution networks (BSRN, A2N, EMT, PlainUSR, GRL).",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lightsr {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"debug": debug}


app.command(no_args_is_help=True)(upscale.upscale)
app.command(no_args_is_help=True)(watch.watch)
app.command("eval", no_args_is_help=True)(evaluate.evaluate)
app.command("bench")(bench.bench)
app.command("compare", no_args_is_help=True)(compare.compare)
app.add_typer(models.models_app, name="models")


def main() -> None:
    app()
