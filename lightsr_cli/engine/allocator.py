"""Keep freed host memory in the process, so torch's CPU passes stop faulting their buffers in again.

Every CPU forward pass allocates and frees activations of tens to hundreds of megabytes. glibc
serves blocks above its mmap threshold with fresh mmap()s and gives them back with munmap() on
free (and trims the top of its heap when more than 128 KiB is free there), so each pass faults
every page of every large buffer in again: ~2.9 million minor faults and 4.8-6 s of kernel time per
BSRN x4 pass on a 640x360 input (issue #15). Told to serve everything from its heap
(``M_MMAP_MAX`` 0) and never to trim it (``M_TRIM_THRESHOLD`` at its maximum), glibc reuses the
same pages pass after pass: 1.3-3x faster passes, minor faults near zero after the first.

The cost is bounded: the heap never holds more than the process needed at its busiest moment
(the largest pass so far, plus fragmentation, measured in benchmarks/cpu_speed.py over a folder of
varying sizes and a video). Memory the heap keeps free is counted as available when the engine
sizes its tiles (:func:`kept_free_bytes`), so tiles do not shrink after a large image.

Threads: glibc gives threads their own arenas, whose heaps are at most 64 MiB and fall back to
mmap for anything larger whatever ``M_MMAP_MAX`` says; ``M_ARENA_MAX`` 1 keeps every thread (video
readers and writers, a caller's own worker threads running the Python API) on the main heap.

Applied once per process, when the first CPU engine is created (never at import); a no-op with a
debug note where malloc is not glibc's (musl, macOS, Windows, or jemalloc/tcmalloc preloaded).
``LIGHTSR_TUNE_ALLOCATOR=0`` leaves the allocator alone (read by settings.py).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from dataclasses import dataclass

_LOG = logging.getLogger(__name__)

# mallopt() parameter numbers from glibc's <malloc.h> (stable ABI since glibc 2.0 / 2.10 for arenas).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt's value is an int that glibc stores as size_t: -1 becomes SIZE_MAX, "never trim".
NEVER = -1


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_for_cpu_inference` did in this process."""

    applied: bool
    allocator: str
    """e.g. 'glibc 2.36', or why it is not known to be glibc."""
    note: str = ""


class _ProcessTuning:
    """mallopt's settings belong to the process: tuned at most once, the outcome kept for callers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcome: AllocatorTuning | None = None


_PROCESS = _ProcessTuning()


def _glibc() -> tuple[ctypes.CDLL | None, str]:
    """The C library as a handle, if malloc in this process is glibc's; else None and why not."""
    if sys.platform.startswith(("win", "cygwin", "darwin")):
        return None, f"not glibc ({sys.platform})"
    try:
        process = ctypes.CDLL(None)
        version = process.gnu_get_libc_version
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - raises AttributeError where the symbol is missing
    except (OSError, AttributeError, TypeError):
        return None, "not glibc (no gnu_get_libc_version/mallopt: musl or another C library)"
    version.restype = ctypes.c_char_p
    name = f"glibc {version().decode()}"
    # jemalloc or tcmalloc preloaded: mallopt would tune glibc's unused malloc (or be a stub).
    if ctypes.cast(process.malloc, ctypes.c_void_p).value != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return None, f"{name}, but malloc comes from another library (preloaded allocator)"
    return libc, name


def tune_for_cpu_inference(enabled: bool = True) -> AllocatorTuning:
    """Tell glibc to keep freed memory (once per process; later calls return the first outcome)."""
    with _PROCESS.lock:
        if _PROCESS.outcome is None:
            _PROCESS.outcome = _tune(enabled)
            _LOG.debug("host allocator: %s%s", _PROCESS.outcome.allocator,
                     f" ({_PROCESS.outcome.note})" if _PROCESS.outcome.note else "")
        return _PROCESS.outcome


def _tune(enabled: bool) -> AllocatorTuning:
    libc, name = _glibc()
    if not enabled:
        return AllocatorTuning(False, name, "turned off by LIGHTSR_TUNE_ALLOCATOR=0")
    if libc is None:
        return AllocatorTuning(False, name, "left as it is")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    refused = [label for param, value, label in ((M_MMAP_MAX, 0, "M_MMAP_MAX"), (M_TRIM_THRESHOLD, NEVER,
                                                 "M_TRIM_THRESHOLD"), (M_ARENA_MAX, 1, "M_ARENA_MAX"))
               if libc.mallopt(param, value) != 1]
    if refused:
        return AllocatorTuning(False, name, "mallopt refused " + ", ".join(refused))
    return AllocatorTuning(True, name, "freed memory kept in the heap (no mmap, no trim, one arena)")


def current_tuning() -> AllocatorTuning | None:
    """The outcome of this process's tuning, or None before the first CPU engine."""
    return _PROCESS.outcome


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def kept_free_bytes() -> int:
    """Bytes the tuned heap holds free for reuse (0 when not tuned or not measurable).

    They are resident, so the kernel does not count them as available, yet the next pass gets
    them at once: the engine adds them to the memory it sizes tiles from.
    """
    outcome = _PROCESS.outcome
    if outcome is None or not outcome.applied:
        return 0
    libc, _name = _glibc()
    mallinfo2 = getattr(libc, "mallinfo2", None)  # glibc >= 2.33
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = _Mallinfo2
    return int(mallinfo2().fordblks)
