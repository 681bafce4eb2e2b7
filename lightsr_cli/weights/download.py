"""The resumable downloader: one URL into one verified file, atomically.

Streams into a temp file beside the target, hashing on the way; resumes with a Range request after
a dropped connection, retries what is worth retrying with exponential backoff, checks size and
hashes, and only then renames into place. Importing it touches neither torch nor the network.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import fs
from ..errors import WeightsError
from ..progress import NullReporter, ProgressTask, Reporter
from .hashing import FileDigest, StreamHasher, digest_mismatch
from .lock import DEFAULT_LOCK_TIMEOUT
from .records import PART_SUFFIX

USER_AGENT = "lightsr (weights downloader; python urllib)"
_CHUNK = 1 << 16
NETWORK_HINT = ("check the network connection and try again; or get the file another way and set "
                "LIGHTSR_WEIGHTS_MIRROR to a folder or URL laid out as <ARCH>/<file>, or copy it to {dest}; "
                "LIGHTSR_OFFLINE=1 keeps lightsr off the network")
WRONG_FILE_HINT = ("the server sent different bytes (a damaged mirror, or a proxy error page?); try again later, "
                   "or if LIGHTSR_WEIGHTS_MIRROR is set, check its copy or unset it")


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
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    """How long to wait for another process that is downloading the same file."""


DEFAULT_POLICY = DownloadPolicy()


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
    descriptor, temp = fs.create_temp_beside(dest, PART_SUFFIX, hidden=False)
    try:
        with os.fdopen(descriptor, "w+b") as out:
            transfer = Transfer(url, out, temp, size=size, git_blob=git_blob_sha1 is not None,
                                reporter=reporter, policy=policy, dest=dest)
            digest = transfer.run()
            problem = digest_mismatch(digest, sha256, size, git_blob_sha1)
            if problem is not None and transfer.resumed:
                # A resumed file is spliced from two responses; fetch it whole once before blaming the server.
                digest = transfer.run_from_scratch()
                problem = digest_mismatch(digest, sha256, size, git_blob_sha1)
            if problem is not None:
                raise WeightsError(f"{dest.name} from {url} is not the expected file ({problem}); nothing was saved",
                                   hint=WRONG_FILE_HINT)
            out.flush()
            os.fsync(out.fileno())
        fs.place_file(temp, dest, overwrite=True)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return digest


class RetryableError(Exception):
    """A failed attempt worth repeating (dropped connection, short body, bad resume)."""


class FinalError(Exception):
    """A failure that repeating cannot fix (the server announces the wrong size, sends too much)."""


class Transfer:
    """One file's download: the bytes so far, their hashes, and whether the server can resume."""

    def __init__(self, url: str, out: IO[bytes], temp: Path, *, size: int | None, git_blob: bool,
                 reporter: Reporter, policy: DownloadPolicy, dest: Path) -> None:
        self.url, self.out, self.temp, self.dest = url, out, temp, dest
        self.expected_size = size
        self.total = size
        self.git_blob = git_blob
        self.reporter, self.policy = reporter, policy
        self.received = 0
        self.hasher = StreamHasher(size, git_blob)
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
            except FinalError as error:
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

        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self.received and self.accepts_ranges:
            headers["Range"] = f"bytes={self.received}-"
            if self.validator:
                headers["If-Range"] = self.validator
        elif self.received:
            self._restart()
        request = urllib.request.Request(self.url, headers=headers)  # noqa: S310 - http(s) or file URLs we built
        try:
            response = urllib.request.urlopen(request, timeout=self.policy.timeout)  # noqa: S310 - http/file only
        except urllib.error.HTTPError as error:
            if error.code == 416 and self.received:  # our resume offset is past the server's file
                self._restart()
                self.accepts_ranges = False
                error.close()
                raise RetryableError("the server refused to resume the download") from None
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
                raise RetryableError(f"the server resumed at byte {start}, not {self.received}")
            self.accepts_ranges = True
            self.resumed = True
            if self.total is None:
                self.total = total
            return self.received + length if length is not None else self.total
        if self.received:
            self._restart()  # the server ignored our Range header and sends the whole file again
        if length is not None and self.expected_size is not None and length != self.expected_size:
            raise FinalError(f"the server announces {length} bytes but the model card expects {self.expected_size}")
        if self.expected_size is None and length is not None:  # learn (or correct) the size from this answer
            self.total = length
            self.hasher = StreamHasher(length, self.git_blob)
        return length if length is not None else self.total

    def _stream(self, response: Any, end: int | None) -> None:
        self._open_progress()
        while chunk := response.read(_CHUNK):
            if self.expected_size is not None and self.received + len(chunk) > self.expected_size:
                raise FinalError(f"the server sends more than the expected {self.expected_size} bytes")
            self.out.write(chunk)
            self.hasher.update(chunk)
            self.received += len(chunk)
            self._advance_progress()
        if end is not None and self.received < end:
            raise RetryableError(f"connection closed after {self.received} of {end} bytes")

    def _restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.received = 0
        self.hasher = StreamHasher(self.total, self.git_blob)

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
            hint = WRONG_FILE_HINT
        elif http_code == 404:
            hint = (f"there is no file at that address: if LIGHTSR_WEIGHTS_MIRROR is set, check that it is laid "
                    f"out as <ARCH>/<file>; or copy the file to {self.dest}")
        elif http_code is not None and 400 <= http_code < 500:
            hint = f"the server refused the request; get the file another way and copy it to {self.dest}"
        else:
            hint = NETWORK_HINT.format(dest=self.dest)
        return WeightsError(message, hint=hint)


def _classify(error: Exception, policy: DownloadPolicy, received: int,
              total: int | None) -> tuple[str | None, bool, float]:
    """(what went wrong in words, worth retrying?, minimum wait) — description None for unknown kinds."""
    import http.client
    import socket
    import ssl
    import urllib.error

    if isinstance(error, RetryableError):
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
