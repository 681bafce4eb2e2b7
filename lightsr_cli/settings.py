"""The one place that reads LIGHTSR_* environment variables, when asked, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    """Where downloaded checkpoints live (LIGHTSR_CACHE_DIR, else the platformdirs user cache)."""
    weights_mirror: str | None
    """LIGHTSR_WEIGHTS_MIRROR: a directory or base URL laid out as <ARCH>/<file>."""
    offline: bool
    """LIGHTSR_OFFLINE=1: never touch the network."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def read_settings() -> Settings:
    cache_env = os.environ.get("LIGHTSR_CACHE_DIR")
    if cache_env:
        cache_dir = Path(cache_env).expanduser()
    else:
        from platformdirs import user_cache_dir

        cache_dir = Path(user_cache_dir("lightsr", appauthor=False)) / "weights"
    mirror = os.environ.get("LIGHTSR_WEIGHTS_MIRROR") or None
    return Settings(cache_dir=cache_dir, weights_mirror=mirror, offline=_truthy(os.environ.get("LIGHTSR_OFFLINE")))
