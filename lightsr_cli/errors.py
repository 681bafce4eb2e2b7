"""Errors a user can act on: one message, an optional hint, an exit code.

The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with ``exit_code``; no traceback
unless --debug. Library callers catch LightsrError (or a subclass) like any exception.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130


class LightsrError(Exception):
    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(LightsrError):
    """Options that do not make sense together, or an unknown choice: exit 2."""

    exit_code = ExitCode.USAGE


class InputError(LightsrError):
    """A missing, unreadable, corrupt or unsupported input file."""


class OutputError(LightsrError):
    """An output that exists already or cannot be written."""


class ModelError(LightsrError):
    """An unknown model, a scale a model lacks, or a checkpoint that matches no architecture."""


class WeightsError(LightsrError):
    """A checkpoint that cannot be found, downloaded, verified or safely loaded."""


class DeviceError(LightsrError):
    """A device that is not available (e.g. --device cuda without CUDA)."""


class VideoError(InputError):
    """A video that cannot be probed, decoded or encoded."""
