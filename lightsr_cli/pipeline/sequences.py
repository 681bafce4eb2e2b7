"""Frame sequences in the video pipeline: a numbered-frames source in, numbered image files out.

``open_source`` and ``reader_for`` let a video job read either a video file or a frame sequence
(media/video/sequences.py); :class:`FrameSequenceOutput` is where a video job writes when its target is a
printf pattern (``-o 'out/%06d.png'``): one image file per frame, each written whole (temp file,
rename), numbered from 1 as ffmpeg numbers them, with a sidecar that keeps the rate, colour
description and resume plan. A resumed run carries on after the last complete frame.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

from ..errors import LightsrError, OutputError, OutputExistsError
from ..media import images, video
from ..media.video.sequences import (
    SequenceInfo,
    SequenceNaming,
    SequenceReader,
    is_frame_pattern,
    read_sidecar,
    scan_sequence,
    write_sidecar,
)
from ..progress import ProgressTask


def is_sequence_source(path: Path) -> bool:
    """A folder (turned into one video job by {--sequence}) or a printf pattern that names no existing file."""
    return path.is_dir() or (is_frame_pattern(path) and not path.exists())


def open_source(path: Path, frame_rate: Fraction | None) -> video.VideoInfo:
    """A video file probed, or a frame sequence scanned (at ``frame_rate``, else its sidecar's, else 24000/1001)."""
    return scan_sequence(path, frame_rate) if is_sequence_source(path) else video.probe_video(path)


def reader_for(info: video.VideoInfo, start_frame: int):
    """The frames of ``info`` from ``start_frame`` on (a context manager that iterates RGB arrays)."""
    if isinstance(info, SequenceInfo):
        return SequenceReader(info, start_frame=start_frame)
    return video.FrameReader(info, start_frame=start_frame)


def size_change_note(info: video.VideoInfo, reader) -> str | None:
    """A warning where the source's frames changed size mid-stream and were fitted into the first size."""
    other = getattr(reader, "other_sizes", ())  # a frame sequence's frames all have one size (scan_sequence)
    if not other:
        return None
    sizes = ", ".join(f"{w}x{h}" for w, h in other)
    return (f"warning: {info.path.name} changes frame size mid-stream ({info.width}x{info.height}, then {sizes}): "
            f"those frames were fitted into {info.width}x{info.height} keeping their shape, with black bars, "
            "rather than squashed; cut the video where its size changes to upscale each part at its own size")


def source_identity(source: Path, info: video.VideoInfo) -> dict:
    """What says the source is unchanged, for --resume: the file's size and time, or every frame's."""
    if isinstance(info, SequenceInfo):
        digest = hashlib.sha256()
        for path in info.files:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"source": str(info.path.resolve()), "source_frames": digest.hexdigest()[:16]}
    stat = source.stat()
    return {"source": str(source.resolve()), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def sequence_notes(info: video.VideoInfo, target: Path) -> list[str]:
    """What a frame sequence cannot hold and a video could (said once per job)."""
    notes = []
    if isinstance(info, SequenceInfo):
        if info.rate_from == "default":
            notes.append(f"note: {info.path}: no frame rate given and no lightsr sidecar beside the frames: "
                         "they play at 24000/1001 fps")
        if info.alpha_dropped:
            notes.append(f"warning: {info.path}: the frames' alpha channel is not kept in a video")
    if is_frame_pattern(target):
        dropped = sorted({s.kind for s in info.other_streams if not s.attached_pic})
        if dropped:
            notes.append(f"warning: {info.path.name}: a frame sequence holds pictures only; its "
                         f"{', '.join(dropped)} stream(s) are not written (upscale to a video to keep them)")
    return notes


def resumable(old_plan: object, plan: dict) -> bool:
    """Whether a run may carry on from an earlier one's plan: the same plan, but for the tile the earlier
    run chose (and recorded) from its free memory, which the resumed run then adopts."""
    return isinstance(old_plan, dict) and "tile" in old_plan and {**old_plan, "tile": None} == {**plan, "tile": None}


def resume_refused(what, old_plan: object, plan: dict, start_over: str) -> LightsrError:
    """The error for a --resume whose earlier plan differs, naming what changed (after an upgrade,
    ``--precision auto`` may mean another precision on the same machine: the hint gives back the old one).
    ``old_plan`` is what was read back: None (or anything but a plan) where it was missing or damaged."""
    if not isinstance(old_plan, dict) or "tile" not in old_plan:
        return LightsrError(f"cannot resume {what}: the plan the earlier run recorded is missing or damaged",
                            hint=start_over)
    changed = [key for key in sorted(set(old_plan) | set(plan)) if key != "tile" and old_plan.get(key) != plan.get(key)]

    def plain(value) -> str | None:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return " + ".join(value)
        return str(value) if isinstance(value, (str, int, float, bool)) or value is None else None

    def shown(key: str) -> str:
        if key not in old_plan or key not in plan:
            return key
        before, now = plain(old_plan[key]), plain(plan[key])
        return key if before is None or now is None else f"{key} {before} (now {now})"

    said = ", ".join(shown(key) for key in changed[:4]) + (", ..." if len(changed) > 4 else "")
    old_precision = old_plan.get("precision")
    keep = f"resume with {{--precision {old_precision}}} to carry on, or " \
        if changed == ["precision"] and isinstance(old_precision, str) and "+" not in old_precision else ""
    return LightsrError(f"cannot resume {what}: it was started with other settings: {said}", hint=keep + start_over)


class FrameSequenceOutput:
    """Numbered image files for a video job whose target is a pattern such as ``out/%06d.png``."""

    def __init__(self, target: Path, info: video.VideoInfo, plan: dict, overwrite: bool) -> None:
        self.naming = SequenceNaming.from_pattern(target)
        self.info = info
        self.plan = json.loads(json.dumps(plan))  # as it reads back from the sidecar
        self.overwrite = overwrite
        self.format = images.image_format(target)
        self.first_missing = 0
        self.start_frame = 0

    def start(self, resume: bool, align: int) -> int:
        """Check what is there; returns the index of the first frame to compute.

        Without ``resume`` or ``overwrite`` any existing frame of this naming is refused. With
        ``resume`` the run carries on after the last complete frame (frames are written whole), from
        the ``align`` boundary before it (so --dedup near makes the decisions an uninterrupted run makes).
        """
        if isinstance(self.info, SequenceInfo):
            inputs = {path.resolve() for path in self.info.files}
            if any(self.naming.path(n).resolve() in inputs for n in range(1, self.info.frame_count + 1)):
                raise OutputError(f"the output frames {self.naming.folder / self.naming.pattern} would replace "
                                  "input frames", hint="write the frames to another folder or with another name")
        present = self.naming.numbers_present()
        sidecar = read_sidecar(self.naming)
        if resume and present and sidecar is not None:
            old_plan = sidecar.get("plan")
            if not resumable(old_plan, self.plan):
                raise resume_refused(self.naming.folder / self.naming.pattern, old_plan, self.plan,
                                     "run with {--overwrite} instead of {--resume} to write every frame again")
            self.plan["tile"] = old_plan["tile"]
            numbers = set(present)
            while self.first_missing + 1 in numbers and self.first_missing < self.info.frame_count:
                self.first_missing += 1
            self.start_frame = self.first_missing - self.first_missing % max(1, align)
        elif present and not self.overwrite:
            more = f" (and {len(present) - 1} more frames)" if len(present) > 1 else ""
            raise OutputExistsError(f"output exists: {self.naming.path(present[0])}{more}",
                                    hint="pass {--overwrite} to replace the frames, or {--resume} to carry on")
        self._write_sidecar(complete=False)
        return self.start_frame

    def write_frames(self, frames: Iterable, progress: ProgressTask) -> float:
        """Write frames from ``start_frame`` on (frames a resumed run already has are kept); returns seconds."""
        import time

        seconds, written = 0.0, self.start_frame
        options = images.ImageEncodeSettings(self.format)
        for index, frame in enumerate(frames, start=self.start_frame):
            if index >= self.first_missing:
                started = time.perf_counter()
                images.write_image(self.naming.path(index + 1), frame, options, overwrite=True)
                seconds += time.perf_counter() - started
            written = index + 1
            progress.advance()
        if written != self.info.frame_count:
            raise LightsrError(f"the video pipeline stopped after frame {written} of {self.info.frame_count}")
        return seconds

    def finish(self) -> None:
        self._write_sidecar(complete=True)

    def kept(self) -> str:
        frames = len(self.naming.numbers_present())
        return (f"{frames} finished frame(s) are kept in {self.naming.folder}; after fixing the cause, "
                "{--resume} carries on from them") if frames else f"no frames were written to {self.naming.folder}"

    def _write_sidecar(self, complete: bool) -> None:
        info = self.info
        sar = info.sample_aspect_ratio
        write_sidecar(self.naming, {
            "first_number": 1, "frame_count": info.frame_count,
            "frame_rate": f"{info.frame_rate.numerator}/{info.frame_rate.denominator}",
            "bit_depth": info.bit_depth, "colour": asdict(info.colour), "rotation": info.rotation,
            "sample_aspect_ratio": f"{sar.numerator}/{sar.denominator}" if sar else None,
            "source": str(info.path), "streams_not_kept": sorted({s.kind for s in info.other_streams}),
            "complete": complete, "plan": self.plan,
        })
