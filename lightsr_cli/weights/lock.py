"""The file lock beside a cached checkpoint: one process fetches a file, the others wait for it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..errors import WeightsError
from ..fs import try_lock, unlock
from ..progress import Reporter

LOCK_SUFFIX = ".lock"
DEFAULT_LOCK_TIMEOUT = 900.0
"""Seconds to wait for another process that is fetching the same file."""


@contextmanager
def file_lock(target: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT, poll: float = 0.1,
              reporter: Reporter | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` (fcntl.flock, msvcrt on Windows).

    The kernel drops the lock when its holder dies, so a crash never leaves a stale lock. The lock
    file itself stays (deleting it would race with a waiter). Where the filesystem refuses locks
    (some network mounts) we go on unlocked: downloads use unique temp names and an atomic rename,
    so the worst case is a duplicate download, never a broken file.
    """
    lock_path = target.with_name(target.name + LOCK_SUFFIX)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        locked = _acquire(handle, lock_path, timeout, poll, reporter)
        try:
            yield
        finally:
            if locked:
                unlock(handle)


def _acquire(handle: IO[bytes], lock_path: Path, timeout: float, poll: float, reporter: Reporter | None) -> bool:
    """Wait for the lock; True once held, False when the filesystem cannot lock at all."""
    deadline = time.monotonic() + timeout
    told = False
    name = lock_path.name.removesuffix(LOCK_SUFFIX)
    while True:
        try:
            if try_lock(handle):
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
