"""Uniform error handling for every command: one `error:`/`hint:` pair and an exit code, no traceback."""

from __future__ import annotations

import functools
import traceback
from typing import Callable

import typer

from ..errors import ExitCode, LightsrError
from .render import print_error


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
            # Its own exit code: a crash must never pass for a user error (tests of errors check exit 1 or 2).
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

    return wrapper
