"""How the library reports progress upward without knowing who listens.

Library layers (weights, engine, pipeline) take a Reporter; the CLI implements it with rich,
library callers get NullReporter. Tasks are opened, advanced and closed; notes and failures are
said once each.
"""

from __future__ import annotations

from typing import Protocol

from .errors import LightsrError


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: float | None, unit: str = "") -> ProgressTask:
        """Open a progress task (a bar); `unit` is e.g. "B" for bytes, "frame", "tile", "file"."""
        ...

    def note(self, message: str) -> None:
        """A one-line remark for the user (stderr in the CLI)."""
        ...

    def failed(self, subject: str, error: LightsrError) -> None:
        """One item (a file of a folder run) failed; the run goes on."""
        ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """Reports nothing: the default for library use."""

    def task(self, description: str, total: float | None, unit: str = "") -> ProgressTask:
        return _NullTask()

    def note(self, message: str) -> None:
        pass

    def failed(self, subject: str, error: LightsrError) -> None:
        pass
