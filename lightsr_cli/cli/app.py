"""The `lightsr` Typer application, global options and uniform error handling."""

from __future__ import annotations

import functools
import traceback
from typing import Callable

import typer

from .. import __version__
from ..errors import ExitCode, LightsrError
from .render import print_error

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


def handles_errors(command: Callable) -> Callable:
    """Turn LightsrError into 'error:'/'hint:' lines and an exit code; Ctrl-C into exit 130.

    Commands take ``ctx: typer.Context`` first, so the global --debug flag can be read here.
    """

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, *args, **kwargs):
        debug = bool((ctx.find_root().obj or {}).get("debug"))
        try:
            return command(ctx, *args, **kwargs)
        except LightsrError as error:
            if debug:
                traceback.print_exc()
            print_error(*error.for_cli())
            raise typer.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt:
            print_error("interrupted", "nothing was left half-written; finished outputs are kept")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - last resort: one line, not a traceback
            if debug:
                raise
            print_error(f"unexpected failure: {type(error).__name__}: {error}",
                        "run again with --debug for the traceback, and please report it")
            raise typer.Exit(int(ExitCode.FAILURE)) from None

    return wrapper


# Commands register themselves on `app` when imported.
from . import upscale as _upscale  # noqa: E402,F401
from . import evaluate as _evaluate  # noqa: E402,F401
from . import models as _models  # noqa: E402,F401
from . import bench as _bench  # noqa: E402,F401


def main() -> None:
    app()
