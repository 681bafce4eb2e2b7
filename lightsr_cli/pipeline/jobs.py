"""Turn the user's INPUT... and -o into a list of (source, target) jobs, before any work starts.

Pure path logic, no torch, no pixels: expands folders (optionally recursive) and globs, mirrors
folder trees under an output folder, names outputs with the suffix, and finds every conflict
(an existing output, two jobs writing one file, an output that would replace its input) up front.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import InputError, OutputError, UsageError
from ..media.images import FORMAT_EXTENSIONS, IMAGE_EXTENSIONS
from ..media.video import VIDEO_EXTENSIONS

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
class NamingRule:
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


def media_kind(path: Path) -> MediaKind | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    return None


def output_name(source: Path, rule: NamingRule) -> str:
    kind = media_kind(source)
    extension = source.suffix
    if kind is MediaKind.IMAGE and rule.image_format:
        extension = FORMAT_EXTENSIONS[rule.image_format]
    return f"{source.stem}{rule.suffix}{extension}"


def _expand_input(text: str, recursive: bool) -> tuple[list[Path], Path | None]:
    """Files for one INPUT argument and the root that output trees mirror from (None for a lone file)."""
    if any(char in text for char in _GLOB_CHARS) and not Path(text).exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputError(f"no files match '{text}'", hint="check the pattern; quote it so the shell does not expand it")
        root = Path(text.split("*")[0].split("?")[0].split("[")[0] or ".")
        root = root if root.is_dir() else root.parent
        return [p for p in matches if media_kind(p)], root
    path = Path(text)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in path.glob(pattern) if p.is_file() and media_kind(p) and not p.name.startswith("."))
        return files, path
    if path.is_file():
        if media_kind(path) is None:
            supported = sorted(IMAGE_EXTENSIONS) + sorted(VIDEO_EXTENSIONS)
            raise InputError(f"unsupported file type '{path.suffix or path.name}': {path}",
                             hint=f"supported: {', '.join(supported)}")
        return [path], None
    raise InputError(f"no such file or folder: {text}")


def _looks_like_file(output: Path) -> bool:
    return not output.is_dir() and not str(output).endswith(("/", "\\")) and media_kind(output) is not None


def plan_jobs(inputs: list[str], output: Path | None, rule: NamingRule, recursive: bool,
              overwrite: bool, skip_existing: bool) -> Plan:
    if overwrite and skip_existing:
        raise UsageError("{--overwrite} and {--skip-existing} cannot be used together")
    sources: list[tuple[Path, Path | None]] = []
    for text in inputs:
        files, root = _expand_input(text, recursive)
        sources.extend((f, root) for f in files)
    if not sources:
        raise InputError(f"no images or videos found in {', '.join(inputs)}",
                         hint="pass -r to look into subfolders" if not recursive else None)
    single_file_target = output is not None and _looks_like_file(output)
    if single_file_target and len(sources) > 1:
        raise UsageError(f"-o {output} names one file but there are {len(sources)} inputs",
                         hint="give -o a folder (it is created if missing)")
    jobs = [_job_for(source, root, output, rule, single_file_target) for source, root in sources]
    jobs = _drop_own_outputs(jobs, output)
    return _check_conflicts(jobs, overwrite, skip_existing)


def _job_for(source: Path, root: Path | None, output: Path | None, rule: NamingRule, single_file_target: bool) -> Job:
    kind = media_kind(source)
    if single_file_target:
        return Job(source, output, kind)
    name = output_name(source, rule)
    if output is None:
        return Job(source, source.with_name(name), kind)
    relative_folder = source.parent.relative_to(root) if root is not None else Path()
    return Job(source, output / relative_folder / name, kind)


def _drop_own_outputs(jobs: list[Job], output: Path | None) -> list[Job]:
    """A folder upscaled in place holds earlier results (photo_x4.png): never feed them back in."""
    targets = {job.target.resolve() for job in jobs}
    return [job for job in jobs if job.source.resolve() not in targets]


def _check_conflicts(jobs: list[Job], overwrite: bool, skip_existing: bool) -> Plan:
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.target.resolve()
        if target == job.source.resolve():
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
