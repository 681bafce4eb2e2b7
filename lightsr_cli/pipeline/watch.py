"""Watch a folder: upscale each image or video that appears in it, once it is complete, with one loaded model.

A file counts as complete when its size and modification time have not changed for
``stable_seconds`` (a copy in progress, a download, a slow network write keep changing it; a file
renamed into place is settled at once and waits only that interval). Names that are temporary by
convention are never picked up: hidden names (``.x``, which covers lightsr's own temp and lock
files), ``~`` endings, ``.part``, ``.partial``, ``.tmp``, ``.temp``, ``.crdownload``, ``.download``,
``.swp``. Each settled file becomes one job of :func:`.run.run_jobs` (the same image and video jobs
as ``lightsr upscale``), so a bad file is reported and the watch goes on; a file that changes again
later is done again. Events come from watchfiles (Rust notify) when it is installed, else (or with
``poll``) from rescanning the folder; either way the folder is also rescanned every
``rescan_seconds``, for filesystems that drop events (network mounts).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..engine import EnginePool
from ..errors import UsageError
from ..progress import Reporter
from .images import OutputSettings
from .jobs import Job, NamingSettings, media_kind, output_name
from .run import RunSummary, run_jobs
from .video import VideoSettings

TEMPORARY_ENDINGS = ("~", ".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp")


@dataclass(frozen=True)
class WatchSettings:
    stable_seconds: float = 2.0
    """How long a file's size and time must stay unchanged before it is read."""
    existing: bool = True
    """Also upscale the files present when the watch starts (whose outputs do not exist yet)."""
    poll: bool = False
    """Rescan instead of filesystem events (network mounts that deliver none)."""
    recursive: bool = False
    rescan_seconds: float = 30.0


@dataclass
class WatchSummary:
    done: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)


def is_candidate(path: Path, root: Path) -> bool:
    """An image or video name that is not hidden (at any level below ``root``) nor temporary by convention."""
    relative = path.relative_to(root)
    if any(part.startswith(".") for part in relative.parts):
        return False
    name = path.name.lower()
    return not name.endswith(TEMPORARY_ENDINGS) and media_kind(path) is not None


def check_folders(in_dir: Path, out_dir: Path, recursive: bool) -> None:
    if not in_dir.is_dir():
        raise UsageError(f"{in_dir} is not a folder", hint="lightsr watch IN_DIR -o OUT_DIR")
    inside = out_dir.resolve() == in_dir.resolve() or (recursive and out_dir.resolve().is_relative_to(in_dir.resolve()))
    if inside:
        raise UsageError(f"the output folder {out_dir} is watched too: every output would be upscaled again",
                         hint="give {-o} a folder outside the watched one")


class Settling:
    """Files seen, and since when each has kept its size and modification time."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}

    def observe(self, path: Path, now: float) -> None:
        try:
            stat = path.stat()
        except OSError:  # gone again (renamed away, deleted)
            self._seen.pop(path, None)
            return
        state = (stat.st_size, stat.st_mtime_ns)
        if path not in self._seen or self._seen[path][0] != state:
            self._seen[path] = (state, now)

    def settled(self, now: float, seconds: float) -> list[tuple[Path, tuple[int, int]]]:
        """Files unchanged for ``seconds`` (re-checked now), removed from the watch list; empty files wait."""
        ready = []
        for path, (state, since) in list(self._seen.items()):
            self.observe(path, now)
            current = self._seen.get(path)
            if current is not None and current[0] == state and now - since >= seconds and state[0] > 0:
                del self._seen[path]
                ready.append((path, state))
        return sorted(ready)

    @property
    def waiting(self) -> int:
        return len(self._seen)


class FolderWatch:
    """The watch loop; :meth:`run` returns when ``stop`` is set (Ctrl-C raises KeyboardInterrupt through it)."""

    def __init__(self, pool: EnginePool, in_dir: Path, out_dir: Path, naming: NamingSettings, output: OutputSettings,
                 video: VideoSettings, settings: WatchSettings, reporter: Reporter) -> None:
        check_folders(in_dir, out_dir, settings.recursive)
        self.pool, self.in_dir, self.out_dir, self.naming = pool, in_dir, out_dir, naming
        self.output, self.video, self.settings, self.reporter = output, video, settings, reporter
        self.summary = WatchSummary()
        self._settling = Settling()
        self._done: dict[Path, tuple[int, int]] = {}
        self._ours: set[Path] = set()

    def target_of(self, source: Path) -> Path:
        relative = source.parent.relative_to(self.in_dir)
        return self.out_dir / relative / output_name(source, self.naming)

    def scan(self, now: float) -> None:
        for folder, subfolders, names in os.walk(self.in_dir):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")] if self.settings.recursive else []
            for name in names:
                self.notice(Path(folder, name), now)

    def notice(self, path: Path, now: float) -> None:
        if path.parent != self.in_dir and not self.settings.recursive:
            return
        if is_candidate(path, self.in_dir) and path.is_file():
            self._settling.observe(path, now)

    def start(self, now: float) -> None:
        """Take note of what is there: to upscale (``existing``) or to leave as it is."""
        self.scan(now)
        if not self.settings.existing:
            for path, state in self._settling.settled(now + self.settings.stable_seconds, 0):
                self._done[path] = state

    def process_settled(self, now: float) -> None:
        for path, state in self._settling.settled(now, self.settings.stable_seconds):
            if self._done.get(path) == state:
                continue
            self._done[path] = state
            self._run_one(path)

    def _run_one(self, source: Path) -> None:
        target = self.target_of(source)
        job = Job(source, target, media_kind(source))
        redo = target in self._ours  # our own earlier result for an older version of this file
        if target.exists() and not (self.output.overwrite or redo):
            self.summary.skipped.append(job)
            self.reporter.note(f"skipped {source.name}: {target} exists (pass --overwrite to replace it)")
            return
        output = replace(self.output, overwrite=self.output.overwrite or redo, skip_existing=False)
        result: RunSummary = run_jobs(self.pool, [job], output, self.video, self.reporter)
        if result.done:
            self._ours.add(target)
            self.summary.done.append(job)
            self.reporter.note(f"done: {source.name} -> {target}")
        else:
            self.summary.failed.append(job)

    def run(self, stop: threading.Event) -> WatchSummary:
        tick = max(0.05, min(0.5, self.settings.stable_seconds / 4))
        self.start(time.monotonic())
        self.reporter.note(f"watching {self.in_dir} -> {self.out_dir} (Ctrl-C stops)")
        events = None if self.settings.poll else _event_batches(self.in_dir, tick, stop, self.settings.recursive)
        last_scan = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if events is None or now - last_scan >= self.settings.rescan_seconds:
                self.scan(now)
                last_scan = now
            self.process_settled(now)
            if events is None:
                stop.wait(tick)
                continue
            changed = next(events, None)
            if changed is None:  # the watcher ended (the folder went away): fall back to scanning
                events = None
                continue
            for path in changed:
                self.notice(Path(path), time.monotonic())
        return self.summary


def _event_batches(folder: Path, tick: float, stop: threading.Event, recursive: bool):
    """Sets of changed paths from watchfiles (an empty set every ``tick``); None when it is not installed."""
    try:
        import watchfiles
    except ImportError:
        return None
    milliseconds = int(tick * 1000)
    batches = watchfiles.watch(folder, watch_filter=None, debounce=milliseconds, step=min(50, milliseconds),
                               stop_event=stop, rust_timeout=milliseconds, yield_on_timeout=True,
                               recursive=recursive)
    return ({path for _change, path in changes} for changes in batches)
