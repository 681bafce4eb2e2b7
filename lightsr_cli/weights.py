"""Checkpoints: where they come from, how they are verified, and how they are loaded safely.

A model card's checkpoint is resolved, first hit wins, from

1. the package's own ``weights/`` folder (``<card.id>.safetensors``, shipped with lightsr),
2. the user cache (``<cache_dir>/<ARCH>/<file>``), trusted only while it matches the card's hash,
3. ``LIGHTSR_WEIGHTS_MIRROR`` (a folder, a ``file://`` URL or an ``http(s)://`` base URL laid out
   as ``<ARCH>/<file>``), copied into the cache,
4. the official URL, downloaded into the cache.

Downloads stream into a temp file beside the target, are hashed on the way, checked against the
card, and only then renamed into place (``os.replace``), so the final name never holds a partial or
unverified file. A file lock beside the target makes a second process wait for the first one's
download instead of fetching the same file again.

Loading never runs pickled code: ``.safetensors`` through safetensors, anything else through
``torch.load(weights_only=True)``. Importing this module touches neither torch nor the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Literal, Mapping

from .errors import ModelError, WeightsError
from .progress import NullReporter, ProgressTask, Reporter
from .registry import CARDS, Checkpoint, ModelCard
from .settings import Settings, read_settings

if TYPE_CHECKING:
    import torch

Source = Literal["embedded", "cache", "mirror", "download", "file"]
CacheStatus = Literal["embedded", "cached", "missing", "corrupt"]
VerifyResult = Literal["ok", "mismatch", "missing", "unpinned"]

CUSTOM_PREFIX = "custom:"
"""Id prefix of the ad-hoc cards made by card_for_file (a checkpoint the user points at)."""

_USER_AGENT = "lightsr (weights downloader; python urllib)"
_CHUNK = 1 << 16
_VERIFIED_SUFFIX = ".verified"
_LOCK_SUFFIX = ".lock"
_PART_SUFFIX = ".part"
_NETWORK_HINT = ("check the network connection and try again; or get the file another way and set "
                 "LIGHTSR_WEIGHTS_MIRROR to a folder or URL laid out as <ARCH>/<file>, or copy it to {dest}; "
                 "LIGHTSR_OFFLINE=1 keeps lightsr off the network")
_WRONG_FILE_HINT = ("the server sent different bytes (a damaged mirror, or a proxy error page?); try again later, "
                    "or if LIGHTSR_WEIGHTS_MIRROR is set, check its copy or unset it")


# -- public values ----------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class DownloadPolicy:
    """How patient a download is. Tests shrink these numbers; users never need to."""

    attempts: int = 5
    """Connections tried for one file, in all (a resumed attempt counts too)."""
    timeout: float = 30.0
    """Seconds of silence (connect, headers or body) after which an attempt fails."""
    backoff: float = 1.0
    """Wait before the second attempt; it doubles for each further one (1, 2, 4, 8 s)."""
    max_backoff: float = 8.0
    retry_budget: float = 120.0
    """No new attempt starts once this many seconds have passed without a new byte arriving."""
    lock_timeout: float = 900.0
    """How long to wait for another process that is downloading the same file."""


DEFAULT_POLICY = DownloadPolicy()


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    git_blob_sha1: str | None = None
    """Only computed when asked for (cards pinned by git blob id)."""


# -- where files live -------------------------------------------------------------------------------

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
    beside = Path(__file__).resolve().parent.parent / "weights"
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
    if card.id.startswith(CUSTOM_PREFIX):
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
            reporter.note(f"{target} does not match its {_pin_name(card.checkpoint)}: fetching it again")
            _forget(target)
        _remove_partial_downloads(target)
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
                raise WeightsError(f"{error.message}; the mirror failed first: {mirror_failure}",
                                   hint=error.hint_template) from None
            raise
        _remember_verified(target, digest)
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
        raise WeightsError(f"checkpoint {path} no longer exists", hint="check the path given to --weights")
    return ResolvedWeights(path, "file", True)


# -- embedded checkpoints ---------------------------------------------------------------------------

def _usable_embedded(card: ModelCard, reporter: Reporter) -> Path | None:
    """The shipped file when its header is sound and describes this card; a damaged install is noted
    and skipped (the cache or a download takes over) rather than loaded."""
    path = embedded_path(card)
    if path is None:
        return None
    problem = _embedded_problem(path, card)
    if problem is None:
        return path
    reporter.note(f"the checkpoint shipped with lightsr ({path}) is unusable: {problem}; reinstall lightsr")
    return None


def _embedded_problem(path: Path, card: ModelCard) -> str | None:
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


# -- the cache: trusted once verified, rehashed only when the file changed --------------------------
# A `<file>.verified` sidecar records size, mtime_ns and the hashes that matched. A warm start costs
# one stat and one small read; any write, truncation or replacement changes size or mtime and
# triggers a full rehash. `verify_cached` ignores the sidecar and always rehashes.

def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + _VERIFIED_SUFFIX)


def _remember_verified(target: Path, digest: FileDigest) -> None:
    stat = target.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.sha256,
              "git_blob_sha1": digest.git_blob_sha1}
    try:
        _write_atomically(_sidecar(target), json.dumps(record).encode())
    except OSError:
        pass  # a read-only cache still works; it is just rehashed at each start


def _read_record(target: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_sidecar(target).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _recorded_digest(target: Path, stat: os.stat_result) -> FileDigest | None:
    """The digest the sidecar vouches for, if it still describes this exact file."""
    record = _read_record(target)
    if record is None or record.get("size") != stat.st_size or record.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return FileDigest(stat.st_size, str(record.get("sha256")), record.get("git_blob_sha1"))


def _cache_state(card: ModelCard, target: Path) -> Literal["trusted", "missing", "corrupt"]:
    """Whether the cached file can be used as is. For an unpinned card the hash recorded at download
    time stands in for a pin, so a file that changed afterwards is still caught."""
    try:
        stat = target.stat()
    except FileNotFoundError:
        return "missing"
    checkpoint = card.checkpoint
    recorded = _recorded_digest(target, stat)
    if recorded is not None and _mismatch(recorded, checkpoint) is None:
        return "trusted"
    digest = file_digest(target, git_blob=checkpoint.git_blob_sha1 is not None)
    if _mismatch(digest, checkpoint) is not None:
        return "corrupt"
    if not checkpoint.pinned and _earlier_digest(target) not in (None, digest.sha256):
        return "corrupt"
    _remember_verified(target, digest)
    return "trusted"


def _earlier_digest(target: Path) -> str | None:
    """The sha256 recorded for this path at download time, whatever the file's current stat."""
    record = _read_record(target)
    return record.get("sha256") if record is not None else None


def _forget(target: Path) -> None:
    for path in (target, _sidecar(target)):
        path.unlink(missing_ok=True)


def _remove_partial_downloads(target: Path) -> None:
    """Temp files of downloads that died (killed process): safe to delete while we hold the lock."""
    for leftover in target.parent.glob(f"{_glob_escape(target.name)}.*{_PART_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def cached_status(card: ModelCard, settings: Settings | None = None) -> CacheStatus:
    """For `lightsr models`: "embedded", "cached" (verified), "missing" or "corrupt"."""
    if card.id.startswith(CUSTOM_PREFIX):
        return "cached" if Path(card.checkpoint.filename).is_file() else "missing"
    shipped = embedded_path(card)
    if shipped is not None and _embedded_problem(shipped, card) is None:
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
        return "unpinned" if _earlier_digest(target) in (None, digest.sha256) else "mismatch"
    if _mismatch(digest, checkpoint) is not None:
        _sidecar(target).unlink(missing_ok=True)
        return "mismatch"
    _remember_verified(target, digest)
    return "ok"


def remove_cached(card: ModelCard, settings: Settings | None = None) -> bool:
    """Delete the cached checkpoint and its bookkeeping; True when there was a file to delete."""
    target = cache_path(card, settings)
    if not target.parent.is_dir():
        return False
    with file_lock(target):
        existed = target.exists()
        _forget(target)
        _remove_partial_downloads(target)
    return existed


# -- the file lock ----------------------------------------------------------------------------------

@contextmanager
def file_lock(target: Path, *, timeout: float = DEFAULT_POLICY.lock_timeout, poll: float = 0.1,
              reporter: Reporter | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` (fcntl.flock, msvcrt on Windows).

    The kernel drops the lock when its holder dies, so a crash never leaves a stale lock. The lock
    file itself stays (deleting it would race with a waiter). Where the filesystem refuses locks
    (some network mounts) we go on unlocked: downloads use unique temp names and an atomic rename,
    so the worst case is a duplicate download, never a broken file.
    """
    lock_path = target.with_name(target.name + _LOCK_SUFFIX)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        locked = _acquire(handle, lock_path, timeout, poll, reporter)
        try:
            yield
        finally:
            if locked:
                _unlock(handle)


def _acquire(handle: IO[bytes], lock_path: Path, timeout: float, poll: float, reporter: Reporter | None) -> bool:
    """Wait for the lock; True once held, False when the filesystem cannot lock at all."""
    deadline = time.monotonic() + timeout
    told = False
    name = lock_path.name.removesuffix(_LOCK_SUFFIX)
    while True:
        try:
            if _try_lock(handle):
                return True
        except OSError:
            return False
        if time.monotonic() >= deadline:
            raise WeightsError(f"another lightsr process has been fetching {name} for over {timeout:g} s",
                               hint=f"wait for it to finish, or stop it; the lock is {lock_path}")
        if not told and reporter is not None:
            reporter.note(f"waiting for another lightsr process to finish fetching {name}")
            told = True
        time.sleep(poll)


def _try_lock(handle: IO[bytes]) -> bool:
    """True when locked, False when someone else holds it; OSError when locking is unsupported."""
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:  # EACCES / EDEADLOCK: another process holds the byte
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: IO[bytes]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- hashing ----------------------------------------------------------------------------------------

class _Hasher:
    """sha256 of a stream, plus git's blob sha1 (sha1 of b"blob <size>\\0" + bytes) when the size is
    known before the first byte; otherwise the blob id is computed afterwards from the file."""

    def __init__(self, total: int | None, git_blob: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.git_total = total if git_blob else None
        self.git = hashlib.sha1(b"blob %d\0" % total) if git_blob and total is not None else None
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
    hasher = _Hasher(path.stat().st_size, git_blob)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.finish()


def _pin_name(checkpoint: Checkpoint) -> str:
    if checkpoint.sha256:
        return "sha256"
    return "git blob id" if checkpoint.git_blob_sha1 else "recorded checksum"


def _mismatch(digest: FileDigest, checkpoint: Checkpoint) -> str | None:
    return _digest_mismatch(digest, checkpoint.sha256, checkpoint.size, checkpoint.git_blob_sha1)


def _digest_mismatch(digest: FileDigest, sha256: str | None, size: int | None, git_blob_sha1: str | None) -> str | None:
    """What differs from the expected file, in words, or None when everything that is pinned matches."""
    if size is not None and digest.size != size:
        return f"{digest.size} bytes instead of {size}"
    if sha256 is not None and digest.sha256 != sha256.lower():
        return f"sha256 {digest.sha256[:12]}… instead of {sha256[:12]}…"
    if git_blob_sha1 is not None and digest.git_blob_sha1 != git_blob_sha1.lower():
        return f"git blob id {str(digest.git_blob_sha1)[:12]}… instead of {git_blob_sha1[:12]}…"
    return None


# -- downloading ------------------------------------------------------------------------------------

def download_file(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
                  git_blob_sha1: str | None = None, reporter: Reporter | None = None,
                  policy: DownloadPolicy = DEFAULT_POLICY) -> FileDigest:
    """Fetch `url` (http, https or file) into `dest`, verified, atomically; returns what was written.

    Streams into a unique ``<dest>.<random>.part`` beside `dest`, hashing as it goes, resumes with a
    Range request after a dropped connection (restarting from zero if the server ignores it), retries
    connection errors, timeouts, 408/429 and 5xx with exponential backoff, checks size and hashes,
    then renames into place. On any failure the temp file is removed and `dest` is untouched.
    Callers that may race for the same `dest` hold :func:`file_lock` around this.
    """
    reporter = reporter or NullReporter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = _create_temp_beside(dest, _PART_SUFFIX)
    try:
        with os.fdopen(descriptor, "w+b") as out:
            transfer = _Transfer(url, out, temp, size=size, git_blob=git_blob_sha1 is not None,
                                 reporter=reporter, policy=policy, dest=dest)
            digest = transfer.run()
            problem = _digest_mismatch(digest, sha256, size, git_blob_sha1)
            if problem is not None and transfer.resumed:
                # A resumed file is spliced from two responses; fetch it whole once before blaming the server.
                digest = transfer.run_from_scratch()
                problem = _digest_mismatch(digest, sha256, size, git_blob_sha1)
            if problem is not None:
                raise WeightsError(f"{dest.name} from {url} is not the expected file ({problem}); nothing was saved",
                                   hint=_WRONG_FILE_HINT)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return digest


class _Retryable(Exception):
    """A failed attempt worth repeating (dropped connection, short body, bad resume)."""


class _Final(Exception):
    """A failure that repeating cannot fix (the server announces the wrong size, sends too much)."""


class _Transfer:
    """One file's download: the bytes so far, their hashes, and whether the server can resume."""

    def __init__(self, url: str, out: IO[bytes], temp: Path, *, size: int | None, git_blob: bool,
                 reporter: Reporter, policy: DownloadPolicy, dest: Path) -> None:
        self.url, self.out, self.temp, self.dest = url, out, temp, dest
        self.expected_size = size
        self.total = size
        self.git_blob = git_blob
        self.reporter, self.policy = reporter, policy
        self.received = 0
        self.hasher = _Hasher(size, git_blob)
        self.accepts_ranges = False
        self.validator: str | None = None
        self.resumed = False
        self.progress: ProgressTask | None = None
        self.shown = 0

    def run(self) -> FileDigest:
        try:
            self._attempts()
        finally:
            if self.progress is not None:
                self.progress.close()
                self.progress = None
        self.out.flush()  # the git blob id may be computed from the file itself
        return self.hasher.finish(self.temp)

    def run_from_scratch(self) -> FileDigest:
        self._restart()
        self.accepts_ranges = False
        self.resumed = False
        return self.run()

    def _attempts(self) -> None:
        last_progress = time.monotonic()
        for attempt in range(1, self.policy.attempts + 1):
            before = self.received
            try:
                self._attempt()
                return
            except _Final as error:
                raise self._error(str(error), attempt, final=True, wrong_file=True) from None
            except Exception as error:  # noqa: BLE001 - classified below; unknown kinds re-raise
                description, retryable, wait = _classify(error, self.policy, self.received, self.total)
                if description is None:
                    raise
                if not retryable:
                    raise self._error(description, attempt, final=True, http_code=_http_code(error)) from None
                if self.received > before:
                    last_progress = time.monotonic()
                delay = max(wait, min(self.policy.backoff * 2 ** (attempt - 1), self.policy.max_backoff))
                waited = time.monotonic() - last_progress
                if attempt == self.policy.attempts or waited + delay > self.policy.retry_budget:
                    raise self._error(description, attempt, final=False) from None
                time.sleep(delay)

    def _attempt(self) -> None:
        import urllib.error
        import urllib.request

        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if self.received and self.accepts_ranges:
            headers["Range"] = f"bytes={self.received}-"
            if self.validator:
                headers["If-Range"] = self.validator
        elif self.received:
            self._restart()
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.policy.timeout)  # noqa: S310 - http/file only
        except urllib.error.HTTPError as error:
            if error.code == 416 and self.received:  # our resume offset is past the server's file
                self._restart()
                self.accepts_ranges = False
                error.close()
                raise _Retryable("the server refused to resume the download") from None
            raise
        with response:
            self._read_capabilities(response.headers)
            status = getattr(response, "status", None) or 200  # file:// responses have no status
            end = self._start_body(status, response.headers)
            self._stream(response, end)

    def _read_capabilities(self, headers: Any) -> None:
        if (headers.get("Accept-Ranges") or "").strip().lower() == "bytes":
            self.accepts_ranges = True
        etag = headers.get("ETag")
        if etag and not etag.startswith("W/"):
            self.validator = etag  # resume only if the file did not change in between

    def _start_body(self, status: int, headers: Any) -> int | None:
        """Prepare for the body; return the offset where it should end (None when unknown)."""
        length = _int_header(headers, "Content-Length")
        if status == 206:
            start, total = _content_range(headers.get("Content-Range"))
            if start != self.received:
                self._restart()
                self.accepts_ranges = False
                raise _Retryable(f"the server resumed at byte {start}, not {self.received}")
            self.accepts_ranges = True
            self.resumed = True
            if self.total is None:
                self.total = total
            return self.received + length if length is not None else self.total
        if self.received:
            self._restart()  # the server ignored our Range header and sends the whole file again
        if length is not None and self.expected_size is not None and length != self.expected_size:
            raise _Final(f"the server announces {length} bytes but the model card expects {self.expected_size}")
        if self.expected_size is None and length is not None:  # learn (or correct) the size from this answer
            self.total = length
            self.hasher = _Hasher(length, self.git_blob)
        return length if length is not None else self.total

    def _stream(self, response: Any, end: int | None) -> None:
        self._open_progress()
        while chunk := response.read(_CHUNK):
            if self.expected_size is not None and self.received + len(chunk) > self.expected_size:
                raise _Final(f"the server sends more than the expected {self.expected_size} bytes")
            self.out.write(chunk)
            self.hasher.update(chunk)
            self.received += len(chunk)
            self._advance_progress()
        if end is not None and self.received < end:
            raise _Retryable(f"connection closed after {self.received} of {end} bytes")

    def _restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.received = 0
        self.hasher = _Hasher(self.total, self.git_blob)

    def _open_progress(self) -> None:
        if self.progress is None:
            self.progress = self.reporter.task(f"downloading {self.dest.name}", total=self.total, unit="B")
            self.shown = 0

    def _advance_progress(self) -> None:
        # After a restart from zero the bar does not go backwards; it waits until we pass it again.
        if self.received > self.shown and self.progress is not None:
            self.progress.advance(self.received - self.shown)
            self.shown = self.received

    def _error(self, description: str, attempt: int, *, final: bool, http_code: int | None = None,
               wrong_file: bool = False) -> WeightsError:
        if final:
            tries = f" (attempt {attempt})" if attempt > 1 else ""
        else:
            tries = f"; gave up after {attempt} attempt{'s' * (attempt > 1)}"
        message = f"could not download {self.dest.name} from {self.url}: {description}{tries}"
        if wrong_file:
            hint = _WRONG_FILE_HINT
        elif http_code == 404:
            hint = (f"there is no file at that address: if LIGHTSR_WEIGHTS_MIRROR is set, check that it is laid "
                    f"out as <ARCH>/<file>; or copy the file to {self.dest}")
        elif http_code is not None and 400 <= http_code < 500:
            hint = f"the server refused the request; get the file another way and copy it to {self.dest}"
        else:
            hint = _NETWORK_HINT.format(dest=self.dest)
        return WeightsError(message, hint=hint)


def _classify(error: Exception, policy: DownloadPolicy, received: int,
              total: int | None) -> tuple[str | None, bool, float]:
    """(what went wrong in words, worth retrying?, minimum wait) — description None for unknown kinds."""
    import http.client
    import socket
    import ssl
    import urllib.error

    if isinstance(error, _Retryable):
        return str(error), True, 0.0
    if isinstance(error, urllib.error.HTTPError):
        error.close()
        words = f"HTTP {error.code} {error.reason}"
        if error.code in (408, 429) or error.code >= 500:
            return words, True, _retry_after(error.headers, policy)
        return words, False, 0.0
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no data for {policy.timeout:g} s{_progress_words(received, total)}", True, 0.0
    if isinstance(reason, FileNotFoundError):
        return "no such file", False, 0.0
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed ({reason.verify_message})", False, 0.0
    if isinstance(reason, socket.gaierror):
        return "could not resolve the host name (no network, or DNS down?)", True, 0.0
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused", True, 0.0
    if isinstance(reason, (http.client.HTTPException, OSError)):
        return f"{_words(reason)}{_progress_words(received, total)}", True, 0.0
    if isinstance(error, urllib.error.URLError):  # a reason in words: "unknown url type" and the like
        return _words(reason), False, 0.0
    if isinstance(error, ValueError):  # urllib's verdict on a malformed URL
        return f"invalid URL ({error})", False, 0.0
    return None, False, 0.0


def _progress_words(received: int, total: int | None) -> str:
    return f" after {received} of {total or '?'} bytes" if received else ""


def _http_code(error: BaseException) -> int | None:
    import urllib.error

    return error.code if isinstance(error, urllib.error.HTTPError) else None


def _words(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    text = str(error) or type(error).__name__
    return text if type(error).__name__ in text else f"{type(error).__name__}: {text}"


def _retry_after(headers: Any, policy: DownloadPolicy) -> float:
    """Seconds a 429/503 asks us to wait (capped by the policy's longest backoff)."""
    import email.utils

    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time() if when is not None else 0.0
    return max(0.0, min(seconds, policy.max_backoff))


def _int_header(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int, int | None]:
    """``bytes 100-199/200`` -> (100, 200); a missing or odd header reads as "not a resume"."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if match is None:
        return -1, None
    total = match.group(2)
    return int(match.group(1)), (int(total) if total != "*" else None)


def _create_temp_beside(target: Path, suffix: str) -> tuple[int, Path]:
    """A new, uniquely named file ``<target>.<random><suffix>`` in target's folder, open for writing.

    Not tempfile.mkstemp: its 0600 mode would survive the rename, and a shared cache or an installed
    package wants the usual umask-governed permissions.
    """
    while True:
        temp = target.with_name(f"{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), temp
        except FileExistsError:
            continue


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temp = _create_temp_beside(path, ".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# -- safe loading -----------------------------------------------------------------------------------

_CONTAINER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net",
                   "generator")
"""Keys under which training frameworks nest the weights, most preferred first (EMA weights win)."""
_WRAPPER_PREFIXES = ("module.", "model.")
"""Prefixes that DataParallel and Lightning put on every key."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from the usual containers, on the CPU.

    Never runs pickled code: safetensors, or ``torch.load(weights_only=True)``. A file that needs
    arbitrary code to unpickle, or that is damaged, raises WeightsError with a hint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist", hint="check the path")
    if _looks_like_safetensors(path):
        loaded: Any = _load_safetensors(path)
    else:
        loaded = _load_pickled(path)
    return unwrap_state_dict(loaded, source=path.name)


def _looks_like_safetensors(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    with open(path, "rb") as handle:
        return handle.read(10)[8:] == b'{"'  # 8-byte header length, then the JSON header


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError, or OSError
        raise _damaged_error(path, error) from None


def _load_pickled(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses two kinds of file: ones that name a Python callable (GLOBAL: code we
        # would have to run) and ones that are not torch pickles at all (unsupported opcodes).
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise _pickled_code_error(path, found.group(1)) from None
        raise _damaged_error(path, _weights_only_reason(error)) from None
    except Exception as error:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, KeyError...
        raise _damaged_error(path, error) from None


def _weights_only_reason(error: Exception) -> str:
    """The one informative line of torch's long weights_only message ("Unsupported operand 110")."""
    lines = [line.strip() for line in str(error).split("WeightsUnpickler error:")[-1].splitlines()]
    return next((line for line in lines if line), "not a PyTorch checkpoint")


def _pickled_code_error(path: Path, callable_name: str) -> WeightsError:
    return WeightsError(
        f"{path.name} contains pickled Python code (it calls {callable_name}), which lightsr refuses to run",
        hint="only if you trust where the file came from: load it once in your own Python session with "
             "torch.load and weights_only=False, save its state dict with "
             "safetensors.torch.save_file(state_dict, 'model.safetensors'), and use that file")


def _damaged_error(path: Path, error: BaseException | str) -> WeightsError:
    text = error if isinstance(error, str) else str(error).strip() or type(error).__name__
    first_sentence = text.splitlines()[0].split(". ")[0].rstrip(".") if text else "unknown error"
    return WeightsError(f"{path.name} is not a readable checkpoint ({first_sentence[:200]})",
                        hint="the file is damaged or incomplete (an interrupted download or copy?), or not a "
                             "PyTorch/safetensors checkpoint at all: download or copy it again")


def damaged_checkpoint_error(card: ModelCard, path: Path, error: BaseException) -> WeightsError:
    """The error for a checkpoint that loads but does not fit its card's network (a strict-load failure)."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    message = f"{path.name} does not fit the {card.arch} x{card.scale} network of {card.id} ({first_line[:200]})"
    if card.id.startswith(CUSTOM_PREFIX):
        hint = "the file's tensors do not match the detected architecture; check that it is a complete checkpoint"
    elif card.checkpoint.pinned:
        hint = f"this is a lightsr bug or a damaged install; report it with `lightsr models verify {card.id}` output"
    else:
        hint = (f"{card.id} has no published checksum, so a wrong download only shows here: "
                f"run `lightsr models remove {card.id}` and try again")
    return WeightsError(message, hint=hint)


def unwrap_state_dict(checkpoint: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors in a training checkpoint: descend into the usual container keys
    (params_ema before params), keep tensor values, strip prefixes that every key shares."""
    import torch

    current = checkpoint
    for _ in range(4):  # containers nest a couple of levels at most (Lightning: state_dict -> model.*)
        if not isinstance(current, Mapping):
            break
        inner = next((current[key] for key in _CONTAINER_KEYS if isinstance(current.get(key), Mapping)), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping):
        raise WeightsError(f"{source} holds a {type(current).__name__}, not a state dict",
                           hint="lightsr reads state dicts (name -> tensor), as saved by torch.save or safetensors")
    tensors = {str(key): value for key, value in current.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(current)[:8])) or "none"
        raise WeightsError(f"{source} contains no tensors (top-level keys: {keys})",
                           hint="lightsr reads state dicts (name -> tensor), as saved by torch.save or safetensors")
    return _strip_shared_prefixes(tensors)


def _strip_shared_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix):]: value for key, value in tensors.items()}
                stripped = True
    return tensors


# -- architecture detection -------------------------------------------------------------------------

_FAMILY_KEYS = {
    "BSRN": "fea_conv.pw.weight, B1..Bn.*, upsampler.upsampleOneStep.0.weight",
    "A2N": "conv_first.weight, AAB_trunk.<i>.*, att1.conv.weight, upconv1.weight",
    "EMT": "sub_mean.weight, head.weight, body.<i>.sa_list.*, tail.0.weight",
    "PlainUSR": "head.weight, block1.body.*, blockm.body.*, tail.0.weight",
    "GRL": "conv_first.weight, norm_start.weight, layers.<i>.blocks.*, norm_end.weight",
}


def detect_checkpoint(state_dict: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture name, {"scale": s, **hyperparameters}) for a state dict, from keys and shapes.

    Each architecture's own prepare_state_dict + detect decides. Architectures whose module is not
    part of this build are skipped; any other error in them is a bug and propagates. The scale is
    None where the weights cannot tell (A2N x2 and x3 are identical in shape).
    """
    from . import archs

    tensors = unwrap_state_dict(state_dict)
    missing: list[str] = []
    for name in archs.ARCH_MODULES:
        spec = _spec_if_present(name)
        if spec is None or spec.detect is None:
            missing.append(name)
            continue
        try:
            found = spec.detect(spec.prepare_state_dict(tensors))
        except ValueError as error:  # the architecture's way of saying "mine, but inconsistent"
            raise ModelError(f"this checkpoint looks like {name} but does not fit lightsr's {name}: {error}",
                             hint=f"check that it is a complete, unmodified {name} checkpoint") from None
        if found is not None:
            return spec.name, dict(found)
    families = "; ".join(f"{name} ({keys})" for name, keys in _FAMILY_KEYS.items())
    absent = f" (not in this build: {', '.join(missing)})" if missing else ""
    sample = ", ".join(list(tensors)[:4]) + (", ..." if len(tensors) > 4 else "")
    count = f"{len(tensors)} tensor{'s' * (len(tensors) != 1)}"
    raise ModelError(f"no architecture lightsr knows matches this checkpoint ({count}: {sample})",
                     hint=f"lightsr reads these families, recognised by their keys: {families}{absent}")


def _spec_if_present(name: str) -> Any:
    """The ArchSpec, or None when that architecture's module does not exist in this build."""
    from . import archs

    try:
        return archs.get_spec(name)
    except ModuleNotFoundError as error:
        if error.name == archs.ARCH_MODULES[name]:
            return None
        raise


def card_for_file(path: Path, scale: int | None = None) -> ModelCard:
    """An ad-hoc model card for a checkpoint the user points at (``--weights PATH``).

    Its id is ``custom:<file name>``, its checkpoint names the absolute path (url "", sha256 of the
    file), and arch, scale and hyperparameters come from detect_checkpoint, so the rest of lightsr
    treats it like any card. `scale` settles what the weights cannot tell (A2N x2 vs x3); a file
    identical to a registry checkpoint takes that card's scale.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist", hint="check the path given to --weights")
    digest = file_digest(path)
    arch, detected = detect_checkpoint(load_state_dict(path))
    detected_scale = detected.pop("scale", None)
    known = next((card for card in CARDS if card.checkpoint.sha256 == digest.sha256), None)
    if detected_scale is None and known is not None:
        detected_scale = known.scale
    if scale is not None and detected_scale is not None and scale != detected_scale:
        raise ModelError(f"{path.name} is a x{detected_scale} {arch} checkpoint, not x{scale}",
                         hint=f"drop the scale, or use --outscale {scale} to resize the x{detected_scale} result")
    final_scale = detected_scale if detected_scale is not None else scale
    if final_scale is None:
        raise ModelError(f"the scale of {path.name} cannot be read from its weights ({arch} x2 and x3 look the same)",
                         hint="say which with --scale 2 or --scale 3")
    note = f"the same file as {known.id}" if known is not None else ""
    return ModelCard(id=f"{CUSTOM_PREFIX}{path.name}", arch=arch, scale=final_scale, hyperparameters=detected,
                     checkpoint=Checkpoint(str(path.resolve()), "", digest.sha256, digest.size),
                     license="unknown (a file supplied by the user)", redistributable=False, params=None,
                     note=note)


# -- conversion to safetensors ----------------------------------------------------------------------

def convert_to_safetensors(src: Path, dest: Path, metadata: Mapping[str, str] | None = None, *,
                           card: ModelCard | None = None) -> dict[str, str]:
    """Write `src`'s state dict as safetensors at `dest` (temp file, then rename); return the header
    metadata written: arch, scale and hyperparameters (JSON) from `card`, or detected from the
    weights, plus the extra string entries in `metadata` (e.g. provenance).

    Loading is the safe kind (weights_only), so converting an untrusted .pth is harmless.
    The output is byte-for-byte reproducible (sorted header), unlike safetensors' own writer.
    """
    tensors = load_state_dict(src)
    if card is None:
        card = card_for_file(Path(src))
    header = {"format": "pt", "arch": card.arch, "scale": str(card.scale),
              "hyperparameters": json.dumps(dict(card.hyperparameters), sort_keys=True)}
    header.update(metadata or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(dest, safetensors_bytes(tensors, header))
    return header


_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file in memory, with keys and metadata in sorted order so the same tensors always
    give the same bytes (the format: u64 header length, JSON header, then the raw little-endian data)."""
    import torch

    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs: list[bytes] = []
    offset = 0
    # Larger element types first keeps every tensor aligned to its element size, as safetensors does.
    for name in sorted(tensors, key=lambda key: (-tensors[key].element_size(), key)):
        tensor = tensors[name].detach().to("cpu").contiguous()
        dtype = _SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise WeightsError(f"tensor {name} has dtype {tensor.dtype}, which safetensors cannot store")
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)
