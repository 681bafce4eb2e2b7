"""Files written whole or not at all (temp file beside the target, fsync, one rename), and target locks.

Every output lightsr writes (images, videos, downloaded checkpoints, cache records) goes through
here, so the same guarantees hold everywhere: the target name never holds a partial file, an
existing file is never replaced unless the caller says so, new files get the usual
umask-governed mode (not tempfile's 0600), and a replaced file keeps the mode it had.

:class:`TargetLock` claims one output for a whole job, so two runs never write the same file at
once: the second is refused (or, with --skip-existing, leaves that file to the first).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import OutputError, OutputExistsError, TargetBusyError

_NEW_FILE_MODE = 0o666  # before the umask, as open() and every other tool create files


def create_temp_beside(target: Path, suffix: str = ".part", *, hidden: bool = True) -> tuple[int, Path]:
    """A new, uniquely named file in target's folder, open for reading and writing.

    ``hidden`` names it ``.<target>.<random><suffix>`` (a folder listing or glob of outputs does not
    pick it up); otherwise ``<target>.<random><suffix>``. The mode follows the umask.
    """
    prefix = "." if hidden else ""
    while True:
        temp = target.with_name(f"{prefix}{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temp, flags, _NEW_FILE_MODE), temp
        except FileExistsError:
            continue


def fsync_path(path: Path) -> None:
    """Flush a finished file's bytes to the disk before it is renamed into place."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def output_exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(f"output exists: {target}", hint="pass {--overwrite} to replace it, or {--skip-existing}")


def place_file(temp: Path, target: Path, *, overwrite: bool) -> None:
    """Move a finished temp file (same folder) onto ``target`` in one step.

    Without ``overwrite`` a file already at ``target`` (perhaps written by another process a moment
    ago) is never replaced: the final step is a hard link, which fails if the name exists; where
    the filesystem has no hard links, an existence check and a rename. With ``overwrite`` the
    replaced file's permission bits are kept. ``temp`` is gone afterwards either way.
    """
    try:
        if overwrite:
            _keep_mode_of(target, temp)
            os.replace(temp, target)
        else:
            _link_without_replacing(temp, target)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)


def _link_without_replacing(temp: Path, target: Path) -> None:
    try:
        os.link(temp, target)
    except FileExistsError:
        raise output_exists_error(target) from None
    except OSError:  # no hard links here (some network and FAT filesystems)
        if target.exists():
            raise output_exists_error(target) from None
        os.replace(temp, target)


def _keep_mode_of(existing: Path, temp: Path) -> None:
    try:
        mode = stat.S_IMODE(existing.stat().st_mode)
    except OSError:
        return
    os.chmod(temp, mode)


def write_bytes(target: Path, data: bytes, *, overwrite: bool, hidden: bool = True) -> None:
    """Write ``data`` to ``target`` whole or not at all (folders are created)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = create_temp_beside(target, ".part", hidden=hidden)
    except OSError as error:
        raise OutputError(f"cannot write to {target.parent}: {error.strerror or error}",
                          hint="choose another output folder") from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        place_file(temp, target, overwrite=overwrite)
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)


# -- target locks ---------------------------------------------------------------------------------

def try_lock(handle: IO[bytes]) -> bool:
    """Lock an open file exclusively without waiting: True when held, False when someone else holds it.

    fcntl.flock (msvcrt on Windows): the kernel drops the lock when its holder dies, so a killed
    process never leaves a stale lock. OSError when the filesystem cannot lock at all.
    """
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


def unlock(handle: IO[bytes]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def lock_path_of(target: Path) -> Path:
    """The hidden lock file beside ``target``: ``.<name>.lightsr-lock``."""
    return target.with_name(f".{target.name}.lightsr-lock")


class TargetLock:
    """Exclusive claim on one output for as long as a job works on it (a context manager).

    A second claim on the same target, from another process or another thread, fails at once with
    TargetBusyError naming the target. The lock is an OS lock on a hidden file beside the target,
    released by the kernel if the holder dies, so there are no stale locks; the file is removed on
    release. Where the filesystem refuses locks (some network mounts) the job goes on unlocked.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = lock_path_of(target)
        self._handle: IO[bytes] | None = None
        self._locked = False
        self._made_folder = False

    def acquire(self) -> None:
        try:
            self._made_folder = not self.path.parent.is_dir()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot write to {self.path.parent}: {error.strerror or error}",
                              hint="choose another output folder") from None
        while True:
            try:
                handle = open(self.path, "a+b")  # noqa: SIM115 - held until release()
            except OSError as error:
                raise OutputError(f"cannot write to {self.path.parent}: {error.strerror or error}",
                                  hint="choose another output folder") from None
            try:
                locked = try_lock(handle)
            except OSError:  # no locks on this filesystem: atomic renames still keep outputs whole
                self._handle, self._locked = handle, False
                return
            if not locked:
                handle.close()
                raise TargetBusyError(f"another lightsr run is writing {self.target}",
                                      hint="wait for it to finish, or write elsewhere with {--output}")
            if self._still_named(handle):
                self._handle, self._locked = handle, True
                return
            # The holder before us removed the lock file after we opened it: lock the new one.
            unlock(handle)
            handle.close()

    def _still_named(self, handle: IO[bytes]) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(handle.fileno())
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if self._locked:
                if os.name != "nt":  # Windows cannot remove an open file; the empty file stays
                    self.path.unlink(missing_ok=True)
                unlock(handle)
            elif os.name != "nt":
                self.path.unlink(missing_ok=True)
        finally:
            handle.close()
        if self._made_folder:  # a job that failed leaves no empty output folder behind
            with contextlib.suppress(OSError):  # it holds the output (or another job's): it stays
                self.path.parent.rmdir()

    def __enter__(self) -> TargetLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
