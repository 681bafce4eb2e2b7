"""Where a card's checkpoint comes from: embedded, cached, mirrored or downloaded, always verified.

A model card's checkpoint is resolved, first hit wins, from

1. the package's own ``weights/`` folder (``<card.id>.safetensors``, shipped with lightsr),
2. the user cache (``<cache_dir>/<ARCH>/<file>``), trusted only while it matches the card's hash,
3. ``LIGHTSR_WEIGHTS_MIRROR`` (a folder, a ``file://`` URL or an ``http(s)://`` base URL laid out
   as ``<ARCH>/<file>``), copied into the cache,
4. the official URL, downloaded into the cache.

Fetching happens under :func:`~lightsr_cli.weights.lock.file_lock`, through
:func:`~lightsr_cli.weights.download.download_file` (verified before the rename).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import WeightsError
from ..progress import NullReporter, Reporter
from ..registry import ModelCard
from ..settings import Settings, read_settings
from .download import DEFAULT_POLICY, DownloadPolicy, download_file
from .hashing import checkpoint_mismatch, file_digest, pin_name
from .lock import file_lock
from .records import earlier_digest, forget, forget_record, recorded_digest, remember_verified, remove_partial_downloads

Source = Literal["embedded", "cache", "mirror", "download", "file"]
CacheStatus = Literal["embedded", "cached", "missing", "corrupt"]
VerifyResult = Literal["ok", "mismatch", "missing", "unpinned"]


@dataclass(frozen=True)
class ResolvedWeights:
    """A local checkpoint file ready to load, where it came from, and whether a hash vouches for it.

    It is also a path-like object, so ``load_state_dict(ensure_weights(card))`` works.
    """

    path: Path
    source: Source
    pinned: bool
    """False when no sha256 or git blob id is known (GRL): only a strict load checks the file."""

    def __fspath__(self) -> str:
        return os.fspath(self.path)



def cache_path(card: ModelCard, settings: Settings | None = None) -> Path:
    """The exact place in the user cache where `card`'s checkpoint lives (or would live)."""
    settings = settings or read_settings()
    return settings.cache_dir / card.mirror_path


def embedded_dir() -> Path | None:
    """The folder of checkpoints shipped with lightsr: ``lightsr_cli/_weights`` once installed,
    the repository's top-level ``weights/`` in a source checkout."""
    from importlib.resources import files

    packaged = files("lightsr_cli") / "_weights"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    beside = Path(__file__).resolve().parents[2] / "weights"
    return beside if beside.is_dir() else None


def embedded_path(card: ModelCard) -> Path | None:
    """The shipped checkpoint of `card` when there is one (never for non-redistributable models)."""
    folder = embedded_dir()
    if folder is None or not card.redistributable:
        return None
    candidate = folder / f"{card.id}.safetensors"
    return candidate if candidate.is_file() else None


# -- resolution -------------------------------------------------------------------------------------

def ensure_weights(card: ModelCard, reporter: Reporter | None = None, settings: Settings | None = None,
                   *, policy: DownloadPolicy = DEFAULT_POLICY) -> ResolvedWeights:
    """A verified local checkpoint for `card`: embedded, cached, copied from the mirror, or downloaded.

    ``.path`` is the file to load; ``.source`` says where it came from ("file" for a card_for_file
    card); ``.pinned`` is False for cards without a published hash. Raises WeightsError (message +
    hint) when no source works; with LIGHTSR_OFFLINE only the package, the cache and a folder mirror
    are looked at.
    """
    reporter = reporter or NullReporter()
    settings = settings or read_settings()
    if card.is_custom:
        return _user_file(card)
    shipped = _usable_embedded(card, reporter)
    if shipped is not None:
        return ResolvedWeights(shipped, "embedded", True)
    target = cache_path(card, settings)
    state = _cache_state(card, target)
    if state == "trusted":
        return ResolvedWeights(target, "cache", card.checkpoint.pinned)
    sources, unusable = _remote_sources(card, settings)
    if not sources:
        raise _unavailable_error(card, target, settings.offline, unusable, corrupt=state == "corrupt")
    with file_lock(target, timeout=policy.lock_timeout, reporter=reporter):
        # Another process may have finished this very download while we waited for the lock.
        state = _cache_state(card, target)
        if state == "trusted":
            return ResolvedWeights(target, "cache", card.checkpoint.pinned)
        if state == "corrupt":
            reporter.note(f"{target} does not match its {pin_name(card.checkpoint)}: fetching it again")
            forget(target)
        remove_partial_downloads(target)
        return _fetch_from_sources(card, target, sources, unusable, reporter, policy)


@dataclass(frozen=True)
class _RemoteSource:
    kind: Literal["mirror", "download"]
    url: str


def _remote_sources(card: ModelCard, settings: Settings) -> tuple[list[_RemoteSource], list[str]]:
    """Places to fetch from, in order, and why others were skipped (for notes and errors)."""
    sources: list[_RemoteSource] = []
    unusable: list[str] = []
    mirror = settings.weights_mirror
    if mirror:
        if _is_http(mirror):
            if settings.offline:
                unusable.append(f"LIGHTSR_WEIGHTS_MIRROR={mirror} is a URL, which offline mode does not use")
            else:
                sources.append(_RemoteSource("mirror", _join_url(mirror, card.mirror_path)))
        else:
            local = _mirror_folder(mirror) / card.mirror_path
            if local.is_file():
                sources.append(_RemoteSource("mirror", local.resolve().as_uri()))
            else:
                unusable.append(f"{card.mirror_path} is not on the mirror {mirror}")
    if not settings.offline and card.checkpoint.url:
        sources.append(_RemoteSource("download", card.checkpoint.url))
    return sources, unusable


def _is_http(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


def _join_url(base: str, relative: str) -> str:
    import urllib.parse

    return base.rstrip("/") + "/" + urllib.parse.quote(relative)


def _mirror_folder(mirror: str) -> Path:
    """The folder a non-HTTP LIGHTSR_WEIGHTS_MIRROR names; a clear error when it is no folder."""
    import urllib.parse
    import urllib.request

    if mirror.lower().startswith("file:"):
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path))
    elif "://" in mirror:
        raise WeightsError(f"LIGHTSR_WEIGHTS_MIRROR={mirror} uses a scheme lightsr cannot read",
                           hint="use a folder, a file:// URL or an http(s):// URL laid out as <ARCH>/<file>")
    else:
        folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"LIGHTSR_WEIGHTS_MIRROR={mirror} is not a folder",
                           hint="point it at a folder (or URL) laid out as <ARCH>/<file>, "
                                "e.g. BSRN/net_g_BSRN_x4.pth, or unset it")
    return folder


def _fetch_from_sources(card: ModelCard, target: Path, sources: list[_RemoteSource], unusable: list[str],
                        reporter: Reporter, policy: DownloadPolicy) -> ResolvedWeights:
    """Try each source in order; a failing mirror falls back to the official URL with a note."""
    if sources[0].kind == "download":
        for reason in unusable:  # e.g. the mirror lacks this file: say why we go to the official URL
            reporter.note(reason)
    checkpoint = card.checkpoint
    mirror_failure: str | None = None
    for source in sources:
        try:
            digest = download_file(source.url, target, sha256=checkpoint.sha256, size=checkpoint.size,
                                   git_blob_sha1=checkpoint.git_blob_sha1, reporter=reporter, policy=policy)
        except WeightsError as error:
            if source is not sources[-1]:
                mirror_failure = error.message
                reporter.note(f"{error.message}; trying the official URL")
                continue
            if mirror_failure is not None:
                raise WeightsError(f"{error.template}; the mirror failed first: {mirror_failure}",
                                   hint=error.hint_template) from None
            raise
        remember_verified(target, digest)
        if not checkpoint.pinned:
            reporter.note(f"{checkpoint.filename} has no published checksum: it was downloaded unverified "
                          "(a strict load still checks its structure)")
        return ResolvedWeights(target, source.kind, checkpoint.pinned)
    raise AssertionError("no sources")  # callers pass at least one source


def _unavailable_error(card: ModelCard, target: Path, offline: bool, unusable: list[str],
                       corrupt: bool) -> WeightsError:
    state = "the cached copy does not match its checksum" if corrupt else "it is not in the cache"
    why = "LIGHTSR_OFFLINE is set" if offline else "the card has no download URL"
    details = f" ({'; '.join(unusable)})" if unusable else ""
    return WeightsError(
        f"{card.id} needs {card.checkpoint.filename}: {state} and {why}{details}",
        hint=f"copy the file to {target}, point LIGHTSR_WEIGHTS_MIRROR at a folder that holds "
             f"{card.mirror_path}, or run `lightsr models download {card.id}` while online")


def _user_file(card: ModelCard) -> ResolvedWeights:
    """A card made by card_for_file: the file is the user's own; only check it is still there."""
    path = Path(card.checkpoint.filename)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} no longer exists", hint="check the path given to {--weights}")
    return ResolvedWeights(path, "file", True)


# -- embedded checkpoints ---------------------------------------------------------------------------

def _usable_embedded(card: ModelCard, reporter: Reporter) -> Path | None:
    """The shipped file when its header is sound and describes this card; a damaged install is noted
    and skipped (the cache or a download takes over) rather than loaded."""
    path = embedded_path(card)
    if path is None:
        return None
    problem = embedded_problem(path, card)
    if problem is None:
        return path
    reporter.note(f"the checkpoint shipped with lightsr ({path}) is unusable: {problem}; reinstall lightsr")
    return None


def embedded_problem(path: Path, card: ModelCard) -> str | None:
    """Why a shipped safetensors file cannot serve `card`, or None. Reads the header only (no torch):
    trusted because it ships with the package, but a truncated install or a swapped file is caught."""
    try:
        header, data_size = read_safetensors_header(path)
    except (OSError, ValueError) as error:
        return str(error)
    metadata = header.get("__metadata__") or {}
    if metadata.get("arch") != card.arch or metadata.get("scale") != str(card.scale):
        return f"it holds {metadata.get('arch')} x{metadata.get('scale')}, not {card.arch} x{card.scale}"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if not ends or max(ends) != data_size:
        return "its tensor data is incomplete"
    return None


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the size of the data after it (stdlib only)."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("file too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        total = os.fstat(handle.fileno()).st_size
        if length > min(total - 8, 100 << 20):
            raise ValueError("safetensors header length is out of range")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header, total - 8 - length



# -- the cache: trusted while it matches the card (records spare the rehash) -----------------------

def _cache_state(card: ModelCard, target: Path) -> Literal["trusted", "missing", "corrupt"]:
    """Whether the cached file can be used as is. For an unpinned card the hash recorded at download
    time stands in for a pin, so a file that changed afterwards is still caught."""
    try:
        stat = target.stat()
    except FileNotFoundError:
        return "missing"
    checkpoint = card.checkpoint
    recorded = recorded_digest(target, stat)
    if recorded is not None and checkpoint_mismatch(recorded, checkpoint) is None:
        return "trusted"
    digest = file_digest(target, git_blob=checkpoint.git_blob_sha1 is not None)
    if checkpoint_mismatch(digest, checkpoint) is not None:
        return "corrupt"
    if not checkpoint.pinned and earlier_digest(target) not in (None, digest.sha256):
        return "corrupt"
    remember_verified(target, digest)
    return "trusted"


def cached_status(card: ModelCard, settings: Settings | None = None) -> CacheStatus:
    """For `lightsr models`: "embedded", "cached" (verified), "missing" or "corrupt"."""
    if card.is_custom:
        return "cached" if Path(card.checkpoint.filename).is_file() else "missing"
    shipped = embedded_path(card)
    if shipped is not None and embedded_problem(shipped, card) is None:
        return "embedded"
    state = _cache_state(card, cache_path(card, settings))
    return "cached" if state == "trusted" else state


def verify_cached(card: ModelCard, settings: Settings | None = None) -> VerifyResult:
    """Rehash the cached file (ignoring the remembered result): "ok", "mismatch", "missing", or
    "unpinned" when the card has no hash to check against (and the file did not change since download)."""
    target = cache_path(card, settings)
    if not target.is_file():
        return "missing"
    checkpoint = card.checkpoint
    digest = file_digest(target, git_blob=checkpoint.git_blob_sha1 is not None)
    if not checkpoint.pinned:
        return "unpinned" if earlier_digest(target) in (None, digest.sha256) else "mismatch"
    if checkpoint_mismatch(digest, checkpoint) is not None:
        forget_record(target)
        return "mismatch"
    remember_verified(target, digest)
    return "ok"


def remove_cached(card: ModelCard, settings: Settings | None = None) -> bool:
    """Delete the cached checkpoint and its bookkeeping; True when there was a file to delete."""
    target = cache_path(card, settings)
    if not target.parent.is_dir():
        return False
    with file_lock(target):
        existed = target.exists()
        forget(target)
        remove_partial_downloads(target)
    return existed
