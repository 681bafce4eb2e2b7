"""The one place that reads LIGHTSR_* environment variables, when asked, never at import."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

DEFAULT_MAX_INPUT_MEGAPIXELS = 100.0
"""About 12000 x 8300: every camera photo and most panoramas; decoded as 16-bit RGBA it takes 800 MB."""
DEFAULT_MAX_OUTPUT_MEGAPIXELS = 400.0
"""A 24 MP photo at x4 (384 MP) fits; the result alone then takes 1.2 GB (8-bit RGB), 2.4 GB at 16 bits."""


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    """Where downloaded checkpoints live (LIGHTSR_CACHE_DIR, else the platformdirs user cache)."""
    weights_mirror: str | None
    """LIGHTSR_WEIGHTS_MIRROR: a directory or base URL laid out as <ARCH>/<file>."""
    offline: bool
    """LIGHTSR_OFFLINE=1: never touch the network."""
    max_input_megapixels: float = DEFAULT_MAX_INPUT_MEGAPIXELS
    """LIGHTSR_MAX_INPUT_MEGAPIXELS: larger inputs are refused before they are decoded."""
    max_output_megapixels: float = DEFAULT_MAX_OUTPUT_MEGAPIXELS
    """LIGHTSR_MAX_OUTPUT_MEGAPIXELS: larger results are refused before any work starts."""
    tune_allocator: bool = True
    """LIGHTSR_TUNE_ALLOCATOR=0: leave glibc's malloc as it is on CPU runs (see engine/allocator.py)."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _unless_off(value: str | None) -> bool:
    return (value or "").strip().lower() not in {"0", "false", "no", "off"}


def _megapixels(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"{name}={text} is not a positive number of megapixels", hint=f"e.g. {name}={default:g}")
    return value


def ffmpeg_override() -> str | None:
    """LIGHTSR_FFMPEG: the ffmpeg binary to use instead of the one imageio-ffmpeg ships (a path or a name on PATH)."""
    return os.environ.get("LIGHTSR_FFMPEG", "").strip() or None


FFMPEG_ENV = "LIGHTSR_FFMPEG"


@contextlib.contextmanager
def ffmpeg_for_this_run(path: str | None) -> Iterator[None]:
    """LIGHTSR_FFMPEG set to ``path`` (``--ffmpeg``) while the block runs, so that every ffmpeg call of the run
    finds it; the previous value is restored after. None: nothing changes."""
    if not path:
        yield
        return
    previous = os.environ.get(FFMPEG_ENV)
    os.environ[FFMPEG_ENV] = path
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FFMPEG_ENV, None)
        else:
            os.environ[FFMPEG_ENV] = previous


def read_settings() -> Settings:
    cache_env = os.environ.get("LIGHTSR_CACHE_DIR")
    if cache_env:
        cache_dir = Path(cache_env).expanduser()
    else:
        from platformdirs import user_cache_dir

        cache_dir = Path(user_cache_dir("lightsr", appauthor=False)) / "weights"
    mirror = os.environ.get("LIGHTSR_WEIGHTS_MIRROR") or None
    return Settings(cache_dir=cache_dir, weights_mirror=mirror, offline=_truthy(os.environ.get("LIGHTSR_OFFLINE")),
                    max_input_megapixels=_megapixels("LIGHTSR_MAX_INPUT_MEGAPIXELS", DEFAULT_MAX_INPUT_MEGAPIXELS),
                    max_output_megapixels=_megapixels("LIGHTSR_MAX_OUTPUT_MEGAPIXELS", DEFAULT_MAX_OUTPUT_MEGAPIXELS),
                    tune_allocator=_unless_off(os.environ.get("LIGHTSR_TUNE_ALLOCATOR")))
