"""Verified bytes: give me the checkpoint file of a model card, and nothing else.

``ensure_weights(card)`` returns a local file that matches the card: shipped with lightsr,
cached, copied from ``LIGHTSR_WEIGHTS_MIRROR`` or downloaded (resumable, retried, hashed on the
way, renamed into place only once verified, under a file lock so that two processes never fetch
the same file twice). What the file *is* (loading, detection, conversion) is
:mod:`lightsr_cli.checkpoints`' job; this package never imports torch, the architectures or the
checkpoints module.

Modules: :mod:`.store` (resolution and the cache), :mod:`.records` (the cache's verified-records),
:mod:`.download` (the resumable downloader), :mod:`.lock` (the file lock), :mod:`.hashing`.
"""

from __future__ import annotations

from .download import DEFAULT_POLICY, DownloadPolicy, download_file
from .hashing import FileDigest, StreamHasher, checkpoint_mismatch, digest_mismatch, file_digest
from .lock import file_lock
from .store import (
                    CacheStatus,
                    ResolvedWeights,
                    Source,
                    VerifyResult,
                    cache_path,
                    cached_status,
                    embedded_dir,
                    embedded_path,
                    embedded_problem,
                    ensure_weights,
                    read_safetensors_header,
                    remove_cached,
                    verify_cached,
)

__all__ = [
    "DEFAULT_POLICY", "CacheStatus", "DownloadPolicy", "FileDigest", "ResolvedWeights", "Source", "StreamHasher",
    "VerifyResult", "cache_path", "cached_status", "checkpoint_mismatch", "digest_mismatch", "download_file",
    "embedded_dir", "embedded_path", "embedded_problem", "ensure_weights", "file_digest", "file_lock",
    "read_safetensors_header", "remove_cached", "verify_cached",
]
