"""Shared test fixtures: the ../shared data folder, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find_shared() -> Path | None:
    candidates = [os.environ.get("LIGHTSR_SHARED_DIR"), REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "weights" / "official").is_dir():
            return Path(candidate)
    return None


SHARED_DIR = _find_shared()
needs_shared = pytest.mark.skipif(
    SHARED_DIR is None,
    reason="../shared (official weights, benchmarks, reference outputs) is not beside this checkout",
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if SHARED_DIR is None:
        pytest.skip("../shared (official weights, benchmarks, reference outputs) is not beside this checkout")
    return SHARED_DIR


@pytest.fixture(scope="session")
def official_weights(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "official"


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "parity"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let a test touch the user's real cache or the network by accident."""
    cache = tmp_path_factory.mktemp("lightsr-cache")
    monkeypatch.setenv("LIGHTSR_CACHE_DIR", str(cache))
    monkeypatch.delenv("LIGHTSR_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("LIGHTSR_OFFLINE", raising=False)
