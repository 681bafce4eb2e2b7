"""Hashing: a file's (or a stream's) size, sha256 and git blob id, and how it differs from a pin."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..registry import Checkpoint


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    git_blob_sha1: str | None = None
    """Only computed when asked for (cards pinned by git blob id)."""


class StreamHasher:
    """sha256 of a stream, plus git's blob sha1 (sha1 of b"blob <size>\\0" + bytes) when the size is
    known before the first byte; otherwise the blob id is computed afterwards from the file."""

    def __init__(self, total: int | None, git_blob: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.git_total = total if git_blob else None
        self.git = hashlib.sha1(b"blob %d\0" % total) if git_blob and total is not None else None  # noqa: S324
        self.git_wanted = git_blob

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        if self.git is not None:
            self.git.update(chunk)

    def finish(self, rehash_from: Path | None = None) -> FileDigest:
        """The digest; `rehash_from` is the file to read again when the blob id could not be streamed."""
        git = None
        if self.git is not None and self.git_total == self.size:
            git = self.git.hexdigest()
        elif self.git_wanted and rehash_from is not None:
            git = file_digest(rehash_from, git_blob=True).git_blob_sha1
        return FileDigest(self.size, self.sha256.hexdigest(), git)


def file_digest(path: Path, *, git_blob: bool = False) -> FileDigest:
    """Size, sha256 and (optionally) git blob id of a file, in one pass."""
    hasher = StreamHasher(path.stat().st_size, git_blob)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.finish()


def pin_name(checkpoint: Checkpoint) -> str:
    """What vouches for a checkpoint, in words ("sha256", "git blob id", "recorded checksum")."""
    if checkpoint.sha256:
        return "sha256"
    return "git blob id" if checkpoint.git_blob_sha1 else "recorded checksum"


def checkpoint_mismatch(digest: FileDigest, checkpoint: Checkpoint) -> str | None:
    """How a file differs from a card's checkpoint, in words, or None when everything pinned matches."""
    return digest_mismatch(digest, checkpoint.sha256, checkpoint.size, checkpoint.git_blob_sha1)


def digest_mismatch(digest: FileDigest, sha256: str | None, size: int | None, git_blob_sha1: str | None) -> str | None:
    """What differs from the expected file, in words, or None when everything that is pinned matches."""
    if size is not None and digest.size != size:
        return f"{digest.size} bytes instead of {size}"
    if sha256 is not None and digest.sha256 != sha256.lower():
        return f"sha256 {digest.sha256[:12]}… instead of {sha256[:12]}…"
    if git_blob_sha1 is not None and digest.git_blob_sha1 != git_blob_sha1.lower():
        return f"git blob id {str(digest.git_blob_sha1)[:12]}… instead of {git_blob_sha1[:12]}…"
    return None
