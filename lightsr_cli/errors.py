"""Errors a user can act on: one message, an optional hint, an exit code; the one hierarchy.

The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with ``exit_code``; no traceback
unless --debug. Library callers catch LightsrError (or a subclass) like any exception.

The library does not speak command-line flags: where a message names a setting, it writes it as
``{--name}`` or ``{--name value}``. The CLI shows that as ``--name value``
(:meth:`LightsrError.for_cli`); everyone else sees the Python spelling ``name=value``.

Hierarchy::

    LightsrError
      UsageError                  options that do not make sense (exit 2)
      InputError                  a missing, unreadable, corrupt or unsupported input
        VideoError                  a video that cannot be probed, decoded or encoded
          VideoNotFoundError, NoVideoStreamError, CorruptVideoError, EmptyVideoError
          VideoEncodeError            ffmpeg could not encode or join
            StreamCopyError             an audio/subtitle stream the container cannot hold
      OutputError                 an output that exists already or cannot be written
        OutputExistsError           the output exists (perhaps written by another run a moment ago)
        TargetBusyError             another run is writing the same output right now
        OutputClosedError           the reader of our output pipe (stdout) went away
      LimitError                  an input or output larger than the pixel limits allow
      ModelError                  unknown model, missing scale, unrecognised checkpoint
      WeightsError                a checkpoint that cannot be found, fetched, verified or loaded
      DeviceError                 a device that is not available
"""

from __future__ import annotations

import re
from enum import IntEnum

_SETTING = re.compile(r"\{(-{1,2}[a-z][a-z0-9-]*)(?: ([^{}]+))?\}")


def spell_settings(text: str, *, cli: bool) -> str:
    """``{--name value}`` -> ``--name value`` (cli) or ``name=value`` (Python callers)."""

    def spell(match: re.Match[str]) -> str:
        flag, value = match.group(1), match.group(2)
        if cli:
            return flag if value is None else f"{flag} {value}"
        name = flag.lstrip("-").replace("-", "_")
        if value is None:
            return name
        return f"{name}={value}" if _is_number(value) else f"{name}={value!r}"

    return _SETTING.sub(spell, text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERNAL = 70
    """A bug: an unexpected exception reached the CLI's last-resort handler (EX_SOFTWARE)."""
    INTERRUPTED = 130


class LightsrError(Exception):
    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.template = message
        self.hint_template = hint

    @property
    def message(self) -> str:
        return spell_settings(self.template, cli=False)

    @property
    def hint(self) -> str | None:
        return spell_settings(self.hint_template, cli=False) if self.hint_template else None

    def for_cli(self) -> tuple[str, str | None]:
        """(message, hint) with settings spelled as command-line flags."""
        hint = spell_settings(self.hint_template, cli=True) if self.hint_template else None
        return spell_settings(self.template, cli=True), hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(LightsrError):
    """Options that do not make sense together, or an unknown choice: exit 2."""

    exit_code = ExitCode.USAGE


class InputError(LightsrError):
    """A missing, unreadable, corrupt or unsupported input file."""


class OutputError(LightsrError):
    """An output that exists already or cannot be written."""


class OutputExistsError(OutputError):
    """The output exists and may not be replaced (perhaps another run finished it a moment ago)."""


class TargetBusyError(OutputError):
    """Another process (or another job of this run) holds the lock on the same output."""


class OutputClosedError(OutputError):
    """The reader of our output pipe (stdout) went away before everything was written."""


class LimitError(LightsrError):
    """An input or output with more pixels than the configured limits allow (checked before decoding)."""


class ModelError(LightsrError):
    """An unknown model, a scale a model lacks, or a checkpoint that matches no architecture."""


class WeightsError(LightsrError):
    """A checkpoint that cannot be found, downloaded, verified or safely loaded."""


class DeviceError(LightsrError):
    """A device that is not available (e.g. --device cuda without CUDA)."""


class VideoError(InputError):
    """A video that cannot be probed, decoded or encoded."""


class VideoNotFoundError(VideoError):
    """The path does not exist or is not a file."""


class NoVideoStreamError(VideoError):
    """A media file without a (usable) video stream, e.g. audio only."""


class CorruptVideoError(VideoError):
    """A file ffmpeg cannot open, or truncated data, found while probing or mid-stream while decoding."""


class EmptyVideoError(VideoError):
    """A video stream with zero frames."""


class VideoEncodeError(VideoError):
    """ffmpeg failed while encoding or muxing an output."""


class StreamCopyError(VideoEncodeError):
    """The output container cannot hold a stream copied from the source (e.g. PGS subtitles in mp4)."""


def unexpected_failure(error: Exception) -> LightsrError:
    """A failure no layer anticipated, as a LightsrError that names the exception's type (the per-file
    boundary of a run: one bad file never stops the others)."""
    detail = str(error).strip().splitlines()
    failure = LightsrError(f"unexpected {type(error).__name__}" + (f": {detail[-1]}" if detail else ""),
                           hint="run again with {--debug} for the traceback, and please report it")
    failure.__cause__ = error
    return failure
