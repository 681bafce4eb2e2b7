"""Turn the user's INPUT... and -o into a list of (source, target) jobs, before any work starts.

Pure path logic, no torch, no pixels: expands folders (optionally recursive) and globs, mirrors
folder trees under an output folder, names outputs with the suffix, and finds every conflict
(an existing output, two jobs writing one file, an output that would replace its input) up front.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..errors import InputError, OutputError, UsageError
from ..media.images import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS
from ..media.video import READ_ONLY_VIDEO_EXTENSIONS, VIDEO_EXTENSIONS, WRITTEN_VIDEO_EXTENSIONS
from ..media.video.sequences import SequenceNaming, is_frame_pattern

_GLOB_CHARS = set("*?[")


class MediaKind(str, Enum):
    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    kind: MediaKind


@dataclass(frozen=True)
class NamingSettings:
    """How an output file is named from its source."""

    suffix: str
    """Appended to the stem, e.g. "_x4"."""
    image_format: str | None
    """Force an image format (png, jpeg, ...) instead of following the input."""


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    skipped: list[Job]
    """Jobs whose output exists and --skip-existing was given."""
    ignored: list[Path] = field(default_factory=list)
    """Files in the folders or globs given that are not images or videos lightsr reads (left alone)."""


def media_kind(path: Path) -> MediaKind | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    return None


def output_name(source: Path, rule: NamingSettings) -> str:
    kind = media_kind(source)
    extension = source.suffix
    if kind is MediaKind.IMAGE and rule.image_format:
        extension = FORMAT_EXTENSIONS[rule.image_format]
    if kind is MediaKind.VIDEO and extension.lower() in READ_ONLY_VIDEO_EXTENSIONS:
        extension = ".mkv"  # read, not written: matroska holds whatever a .ts/.mts/.mpg/.wmv... carries
    return f"{source.stem}{rule.suffix}{extension}"


def _expand_input(text: str, recursive: bool) -> tuple[list[Path], Path | None, list[Path]]:
    """Media files for one INPUT argument, the root that output trees mirror from (None for a lone
    file), and the other files a folder or glob held (reported, never silently dropped)."""
    if any(char in text for char in _GLOB_CHARS) and not os.path.lexists(text):
        root, matches = _glob_files(text)
        if not matches:
            raise InputError(f"no files match '{text}'", hint="check the pattern; quote it so the shell does not expand it")
        media, others = _media_and_others(matches)
        return media, root, others
    path = Path(text)
    if path.is_dir():
        media, others = _media_and_others(_walk_files(path, recursive))
        return media, path, others
    if path.is_file():
        if media_kind(path) is None:
            raise InputError(f"unsupported file type '{path.suffix or path.name}': {path}",
                             hint=f"supported: {', '.join(_supported_extensions())}")
        return [path], None, []
    raise InputError(_not_a_file(path))


def _media_and_others(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    return [p for p in paths if media_kind(p)], [p for p in paths if not media_kind(p)]


def _supported_extensions() -> list[str]:
    return sorted(IMAGE_EXTENSIONS) + sorted(VIDEO_EXTENSIONS)


def kinds_of(paths: list[Path] | list[str]) -> str:
    """'.ppm 2, .txt 1, (no extension) 1': what a list of ignored files holds, most common first."""
    counts = Counter(Path(p).suffix.lower() or "(no extension)" for p in paths)
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _not_a_file(path: Path) -> str:
    """What is at a path that is neither a file nor a folder (or nothing at all)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"no such file or folder: {path}" if not os.path.lexists(path) else f"{path} is a broken link"
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{path} is {kind}, not an image, video or folder"


def _walk_files(root: Path, recursive: bool) -> list[Path]:
    """Regular, non-hidden files under ``root`` (all levels when ``recursive``), sorted.

    Symlinked folders are not entered (a link loop such as sub/up -> .. would never end), and a
    file reached twice (a symlinked file beside its target) is listed once.
    """
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
        found.extend(Path(folder, name) for name in names if not name.startswith("."))
    return _each_file_once(sorted(p for p in found if p.is_file()))


def _each_file_once(paths: list[Path]) -> list[Path]:
    seen: set[tuple[int, int]] = set()
    unique = []
    for path in paths:
        identity = (path.stat().st_dev, path.stat().st_ino)
        if identity not in seen:
            seen.add(identity)
            unique.append(path)
    return unique


def _glob_files(pattern: str) -> tuple[Path, list[Path]]:
    """Files matching a quoted glob, and the folder before its first wildcard (the tree's root).

    Matched by walking that folder like -r does (no symlinked folders, each file once); ``**``
    spans any number of folders, ``*`` and ``?`` stay within one name, hidden names need a
    pattern that starts with a dot.
    """
    parts = Path(pattern).parts
    first_wild = next(i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS))
    root = Path(*parts[:first_wild]) if first_wild else Path(".")
    wild = parts[first_wild:]
    matcher = re.compile("".join(_glob_part_regex(part, last=i == len(wild) - 1) for i, part in enumerate(wild)))
    recursive = len(wild) > 1 or "**" in wild[0]
    matches = [p for p in _walk_files(root, recursive) if matcher.fullmatch(p.relative_to(root).as_posix())]
    return root, matches


def _glob_part_regex(part: str, last: bool) -> str:
    """One path component of a glob as a regex; a hidden name matches only a pattern starting with '.'."""
    if part == "**":
        return "(?:[^/.][^/]*/)*" + ("[^/.][^/]*" if last else "")
    body, index = "" if part.startswith(".") else "(?!\\.)", 0
    while index < len(part):
        char = part[index]
        closing = part.find("]", index + 2) if char == "[" else -1
        if char == "*":
            body += "[^/]*"
        elif char == "?":
            body += "[^/]"
        elif closing != -1:
            inside = part[index + 1:closing]
            body += "[" + ("^" + inside[1:] if inside.startswith("!") else inside).replace("\\", "\\\\") + "]"
            index = closing
        else:
            body += re.escape(char)
        index += 1
    return body + ("" if last else "/")


def _has_subfolders(inputs: list[str]) -> bool:
    return any(Path(text).is_dir() and any(p.is_dir() for p in Path(text).iterdir()) for text in inputs)


def _looks_like_file(output: Path) -> bool:
    return not output.is_dir() and not str(output).endswith(("/", "\\")) and media_kind(output) is not None


def _is_sequence_input(text: str, sequence: bool) -> bool:
    """One video job from numbered frames: a printf pattern naming no file, or a folder with {--sequence}.

    Without {--sequence} a folder stays a batch of photos (each image its own job).
    """
    return (sequence and Path(text).is_dir()) or (is_frame_pattern(text) and not os.path.lexists(text))


def _sequence_job(source: Path, output: Path | None, rule: NamingSettings, single_file_target: bool) -> Job:
    """A frame sequence becomes one video job: by default ``<folder>_x4.mp4`` beside the frames' folder,
    or ``<prefix>_x4.mp4`` inside it for a pattern with a prefix (``shots/take_%04d.png``)."""
    if single_file_target:
        return Job(source, output, MediaKind.VIDEO)
    folder = (source if source.is_dir() else source.parent).resolve()
    prefix = "" if source.is_dir() else SequenceNaming.from_pattern(source).prefix.rstrip("_-. ")
    where, stem = (folder, prefix) if prefix else (folder.parent, folder.name or "frames")
    return Job(source, (output or where) / f"{stem}{rule.suffix}.mp4", MediaKind.VIDEO)


def plan_jobs(inputs: list[str], output: Path | None, rule: NamingSettings, recursive: bool,
              overwrite: bool, skip_existing: bool, sequence: bool = False) -> Plan:
    if overwrite and skip_existing:
        raise UsageError("{--overwrite} and {--skip-existing} cannot be used together")
    if any(separator in rule.suffix for separator in ("/", "\\", os.sep)) or ".." in rule.suffix:
        raise UsageError(f"{{--suffix}} '{rule.suffix}' holds a path separator or '..'",
                         hint="the suffix only extends the file name; use {-o} to choose a folder")
    sources: list[tuple[Path, Path | None]] = []
    ignored: list[Path] = []
    sequences = [Path(text) for text in inputs if _is_sequence_input(text, sequence)]
    for text in inputs:
        if Path(text) not in sequences:
            files, root, others = _expand_input(text, recursive)
            sources.extend((f, root) for f in files)
            ignored.extend(others)
    if not sources and not sequences:
        raise InputError(f"no images or videos found in {', '.join(inputs)}", hint=_nothing_found_hint(inputs, recursive, ignored))
    single_file_target = output is not None and _looks_like_file(output)
    if single_file_target and output.suffix.lower() in READ_ONLY_VIDEO_EXTENSIONS:
        raise UsageError(f"-o {output}: lightsr reads {output.suffix} videos but does not write them",
                         hint=f"name a {', '.join(sorted(WRITTEN_VIDEO_EXTENSIONS))} file (.mkv holds any stream)")
    if single_file_target and len(sources) + len(sequences) > 1:
        raise UsageError(f"-o {output} names one file but there are {len(sources) + len(sequences)} inputs",
                         hint="give -o a folder (it is created if missing)")
    if single_file_target and is_frame_pattern(str(output)) and sources and media_kind(sources[0][0]) != MediaKind.VIDEO:
        raise UsageError(f"-o {output} is a numbered-frames pattern, but {sources[0][0].name} is an image",
                         hint="frame patterns are for video inputs; give -o one file name or a folder")
    jobs = [_sequence_job(source, output, rule, single_file_target) for source in sequences]
    jobs += [_job_for(source, root, output, rule, single_file_target) for source, root in sources]
    jobs = _drop_own_outputs(jobs, output)
    return dataclasses.replace(_check_conflicts(jobs, overwrite, skip_existing), ignored=ignored)


def _nothing_found_hint(inputs: list[str], recursive: bool, ignored: list[Path]) -> str | None:
    found = f"found only other files ({kinds_of(ignored)})" if ignored else ""
    if not recursive and _has_subfolders(inputs):
        return "pass {--recursive} to look into subfolders" + (f" ({found} here)" if found else "")
    if found:
        return f"{found}; lightsr reads {', '.join(_supported_extensions())}"
    return None


def _job_for(source: Path, root: Path | None, output: Path | None, rule: NamingSettings, single_file_target: bool) -> Job:
    kind = media_kind(source)
    if single_file_target:
        return Job(source, output, kind)
    name = output_name(source, rule)
    if output is None:
        return Job(source, source.with_name(name), kind)
    relative_folder = source.parent.relative_to(root) if root is not None else Path()
    return Job(source, output / relative_folder / name, kind)


def _drop_own_outputs(jobs: list[Job], output: Path | None) -> list[Job]:
    """A folder upscaled in place holds earlier results (photo_x4.png): never feed them back in.

    Only another job's output is dropped; a job whose output is its own input stays, so that the
    conflict check refuses it instead of silently doing nothing.
    """
    targets = {job.target.resolve(): job for job in jobs}
    return [job for job in jobs if targets.get(job.source.resolve(), job) is job]


def _same_file(target: Path, source: Path) -> bool:
    """A hard link (or a case-insensitive spelling) of the input is the input."""
    try:
        return target.exists() and os.path.samefile(target, source)
    except OSError:
        return False


def _check_conflicts(jobs: list[Job], overwrite: bool, skip_existing: bool) -> Plan:
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.target.resolve()
        if target == job.source.resolve() or _same_file(job.target, job.source):
            raise OutputError(f"the output would replace its input: {job.source}",
                              hint="use {-o} to write elsewhere or a non-empty {--suffix}")
        if target in seen:
            raise OutputError(f"{seen[target]} and {job.source} would both be written to {job.target}",
                              hint="use {--format} or {--suffix} so the names differ, or upscale them separately")
        seen[target] = job.source
    existing = [job for job in jobs if job.target.exists()]
    if existing and not (overwrite or skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"output exists: {existing[0].target}{more}",
                          hint="pass {--overwrite} to replace it, or {--skip-existing} to leave it")
    if skip_existing:
        return Plan([job for job in jobs if job not in existing], existing)
    return Plan(jobs, [])
