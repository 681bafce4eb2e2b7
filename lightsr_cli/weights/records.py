"""The cache's verified-records: a ``<file>.verified`` sidecar that vouches for a cached checkpoint.

The sidecar records size, mtime_ns and the hashes that matched. A warm start costs one stat and
one small read; any write, truncation or replacement changes size or mtime and triggers a full
rehash. Records are a cache of work done, never a source of trust on their own: a missing or
unreadable record just means the file is hashed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .. import fs
from ..errors import OutputError
from .hashing import FileDigest

VERIFIED_SUFFIX = ".verified"
PART_SUFFIX = ".part"
"""Suffix of the temp files downloads stream into (``<file>.<random>.part``)."""


def sidecar_path(target: Path) -> Path:
    return target.with_name(target.name + VERIFIED_SUFFIX)


def remember_verified(target: Path, digest: FileDigest) -> None:
    """Record that `target`, as it is now, has `digest` (best effort: a read-only cache is fine)."""
    stat = target.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.sha256,
              "git_blob_sha1": digest.git_blob_sha1}
    # Best effort: a read-only cache still works; it is just rehashed at each start.
    with contextlib.suppress(OutputError, OSError):
        fs.write_bytes(sidecar_path(target), json.dumps(record).encode(), overwrite=True, hidden=False)


def read_record(target: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(sidecar_path(target).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recorded_digest(target: Path, stat: os.stat_result) -> FileDigest | None:
    """The digest the sidecar vouches for, if it still describes this exact file."""
    record = read_record(target)
    if record is None or record.get("size") != stat.st_size or record.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return FileDigest(stat.st_size, str(record.get("sha256")), record.get("git_blob_sha1"))


def earlier_digest(target: Path) -> str | None:
    """The sha256 recorded for this path at download time, whatever the file's current stat."""
    record = read_record(target)
    return record.get("sha256") if record is not None else None


def forget(target: Path) -> None:
    """Delete a cached file and its record."""
    for path in (target, sidecar_path(target)):
        path.unlink(missing_ok=True)


def forget_record(target: Path) -> None:
    sidecar_path(target).unlink(missing_ok=True)


def remove_partial_downloads(target: Path) -> None:
    """Temp files of downloads that died (killed process): safe to delete while we hold the lock."""
    for leftover in target.parent.glob(f"{_glob_escape(target.name)}.*{PART_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
