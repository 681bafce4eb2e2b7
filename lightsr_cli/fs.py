"""Files written whole or not at all: a temp file beside the target, fsync, one rename.

Every output lightsr writes (images, videos, downloaded checkpoints, cache records) goes through
here, so the same guarantees hold everywhere: the target name never holds a partial file, an
existing file is never replaced unless the caller says so, new files get the usual
umask-governed mode (not tempfile's 0600), and a replaced file keeps the mode it had.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import OutputError

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


def _output_exists(target: Path) -> OutputError:
    return OutputError(f"output exists: {target}", hint="pass {--overwrite} to replace it, or {--skip-existing}")


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
        raise _output_exists(target) from None
    except OSError:  # no hard links here (some network and FAT filesystems)
        if target.exists():
            raise _output_exists(target) from None
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
