"""Everything the CLI shows: rich progress bars (stderr), error lines, summaries, JSON (stdout)."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from ..errors import LightsrError

stderr = Console(stderr=True, highlight=False)


def print_error(message: str, hint: str | None = None) -> None:
    """uv-style: 'error: ...' then 'hint: ...', plain lines on stderr (coloured on a terminal)."""
    _print_labelled("error", "bold red", message)
    if hint:
        _print_labelled("hint", "bold cyan", hint)


def _print_labelled(label: str, style: str, text: str) -> None:
    if stderr.is_terminal:
        stderr.print(Text.assemble((label, style), ": ", text), soft_wrap=True)
    else:
        print(f"{label}: {text}", file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_to_stderr(data: Any) -> None:
    """The --json summary when stdout carries data (an image or a stream): it must not mix in."""
    sys.stderr.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stderr.flush()


class _RichTask:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def close(self) -> None:
        self._progress.remove_task(self._task_id)


class RateColumn(ProgressColumn):
    """'12.3 frame/s' from the task's measured speed and its unit."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "")
        if task.speed is None or not unit:
            return Text("")
        return Text(f"{task.speed:.1f} {unit}/s", style="progress.data.speed")


def about(subject: str, message: str) -> str:
    """A failure message shown after its subject, without repeating the subject's path.

    "cannot decode in/x.png: truncated" after "in/x.png: " reads "cannot decode: truncated".
    """
    if not subject or subject not in message:
        return message
    shorter = message.replace(f" {subject}:", ":").replace(f" {subject}", "").replace(subject, "it")
    return shorter.strip().rstrip(":") or message


class RichReporter:
    """The CLI's Reporter: one live rich display on stderr with a bar per open task."""

    def __init__(self, quiet: bool = False, debug: bool = False) -> None:
        self.quiet = quiet
        self.debug = debug
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=stderr, transient=True, disable=quiet)
        self._bytes = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                               DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                               console=stderr, transient=True, disable=quiet)

    def __enter__(self) -> "RichReporter":
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()
        self._bytes.stop()

    def task(self, description: str, total: float | None, unit: str = "") -> _RichTask:
        progress = self._bytes if unit == "B" else self._progress
        progress.start()
        return _RichTask(progress, progress.add_task(description, total=total, unit=unit))

    def note(self, message: str) -> None:
        if not self.quiet or message.startswith(("error", "hint", "warning")):
            self._progress.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def failed(self, subject: str, error: LightsrError) -> None:
        message, hint = error.for_cli()
        if self.debug and error.__cause__ is not None:  # an unexpected exception caught at a per-file boundary
            self._progress.console.print("".join(traceback.format_exception(error.__cause__)), markup=False,
                                         highlight=False, soft_wrap=True)
        self.note(f"error: {subject}: {about(subject, message)}")
        if hint:
            self.note(f"hint: {hint}")


def stdout_table(title: str, columns: list[str], rows: list[dict]) -> None:
    """A table of data on stdout (data goes to stdout; everything else to stderr)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*["" if row.get(c) is None else _cell(row.get(c)) for c in columns])
    Console(highlight=False, width=200 if not sys.stdout.isatty() else None).print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
