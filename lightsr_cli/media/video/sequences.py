"""Frame sequences: numbered image files (``frames/%06d.png``, or a folder of them) as a video's frames.

Reading: :func:`scan_sequence` checks a sequence before any work (one naming, no gaps, no
duplicate numbers, no stray files, every frame the same size) and describes it as a
:class:`SequenceInfo`, a :class:`VideoInfo` whose path is the pattern; :class:`SequenceReader`
yields its frames as HxWx3 RGB arrays, as :class:`FrameReader` does for a video file.

Naming follows ffmpeg's image2 patterns: ``%0Nd`` is a number zero-padded to at least N digits,
``%d`` a number without padding; one such field, in the file name (not in a folder name).

The sidecar (:data:`SIDECAR_NAME`, JSON, written by lightsr beside the frames it writes) records
what image files cannot: the exact frame rate, the colour description, the sample aspect ratio and
rotation, and which streams were left behind. Reading a sequence with a sidecar for the same
pattern takes the rate and colour from it, so video -> frames -> video keeps its rate.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ... import fs
from ...errors import InputError, UsageError
from .. import images
from .probe import ColourTags, VideoInfo
from .timeline import Timeline

SIDECAR_NAME = "lightsr-sequence.json"
DEFAULT_RATE = Fraction(24000, 1001)
_FIELD = re.compile(r"%(?:0(\d+))?d")
_NUMBERED_NAME = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")
_HEADER_BYTES = 1 << 16  # enough for the size in PNG, BMP, TIFF, WebP and most JPEG headers


def is_frame_pattern(path: str | os.PathLike[str]) -> bool:
    """True for a printf pattern of numbered frames with an image extension: 'out/%06d.png', 'f_%d.tif'."""
    name = Path(path).name
    return (len(_FIELD.findall(name)) == 1 and "%" not in name.replace(_FIELD.search(name).group(0), "")
            and images.is_image_path(Path(name.replace("%", ""))) and "%" not in str(Path(path).parent))


@dataclass(frozen=True)
class SequenceNaming:
    """How frame n is named: ``folder / f"{prefix}{n:0{width}d}{suffix}"`` (width 0: no padding)."""

    folder: Path
    prefix: str
    width: int
    suffix: str

    @classmethod
    def from_pattern(cls, pattern: str | os.PathLike[str]) -> SequenceNaming:
        path = Path(pattern)
        match = _FIELD.search(path.name)
        if match is None:
            raise ValueError(f"not a frame pattern: {pattern}")
        width = int(match.group(1) or 0)
        return cls(path.parent, path.name[:match.start()], width, path.name[match.end():])

    @property
    def pattern(self) -> str:
        return f"{self.prefix}%{f'0{self.width}' if self.width else ''}d{self.suffix}"

    def name(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.width}d}{self.suffix}"

    def path(self, number: int) -> Path:
        return self.folder / self.name(number)

    def number_of(self, name: str) -> int | None:
        """The frame number a file name carries under this naming (None: not one of its frames)."""
        if not (name.startswith(self.prefix) and name.endswith(self.suffix)) or len(name) <= len(self.prefix + self.suffix):
            return None
        digits = name[len(self.prefix):len(name) - len(self.suffix)]
        if not digits.isascii() or not digits.isdigit() or self.name(int(digits)) != name:
            return None
        return int(digits)

    def numbers_present(self) -> list[int]:
        """Numbers of the frames under this naming that exist now, sorted."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in map(self.number_of, names) if n is not None)


@dataclass(frozen=True)
class SequenceInfo(VideoInfo):
    """A frame sequence described as a video: ``path`` is its pattern, ``files`` its frames in order."""

    files: tuple[Path, ...] = ()
    first_number: int = 0
    rate_from: str = "default"
    """Where the frame rate came from: "--fps", "sidecar" or "default" (24000/1001)."""
    alpha_dropped: bool = False


# -- reading ---------------------------------------------------------------------------------------

def scan_sequence(source: Path, frame_rate: Fraction | None = None) -> SequenceInfo:
    """Check and describe the sequence at ``source`` (a printf pattern or a folder of numbered images)."""
    naming = SequenceNaming.from_pattern(source) if is_frame_pattern(source) else _naming_of_folder(source)
    numbers = naming.numbers_present()
    if not numbers:
        raise InputError(f"no frames match {source}", hint="check the pattern: %06d means six digits, e.g. 000001")
    missing = next((n for n, m in zip(numbers, numbers[1:], strict=False) if m != n + 1), None)
    if missing is not None:
        raise InputError(f"frame {naming.name(missing + 1)} is missing from {naming.folder} "
                         f"(the numbers jump from {missing} to {numbers[numbers.index(missing) + 1]})",
                         hint="a frame sequence must be numbered without gaps")
    files = tuple(naming.path(n) for n in numbers)
    raw = images.read_image(files[0])
    first = _as_rgb(raw, files[0])
    _check_sizes(files, first.shape[1], first.shape[0])
    sidecar = read_sidecar(naming)
    rate, rate_from = _rate_of(frame_rate, sidecar)
    deep = first.dtype == np.uint16
    colour = _colour_of(sidecar)
    sar = sidecar.get("sample_aspect_ratio") if sidecar else None
    return SequenceInfo(
        path=naming.folder / naming.pattern, stream_index=0, codec=images.image_format(files[0]),
        width=first.shape[1], height=first.shape[0], frame_rate=rate, frame_count=len(files),
        duration=float(len(files) / rate), pix_fmt="rgb48le" if deep else "rgb24",
        bit_depth=max((sidecar or {}).get("bit_depth", 16), 9) if deep else 8,
        rotation=(sidecar or {}).get("rotation", 0) % 360, colour=colour,
        sample_aspect_ratio=_fraction_or_none(sar), files=files, first_number=numbers[0],
        rate_from=rate_from, alpha_dropped=raw.ndim == 3 and raw.shape[2] in (2, 4),
        # numbered frames are shown at the sequence's rate: frame k at k / rate, exactly
        timeline=Timeline(time_base=1 / rate, pts=tuple(range(len(files))), end=len(files)))


def _naming_of_folder(folder: Path) -> SequenceNaming:
    """The one naming every (non-hidden) file of a folder follows; stray or unnumbered files are errors."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of frames", hint="give a folder or a pattern such as frames/%06d.png")
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and n != SIDECAR_NAME
                   and (folder / n).is_file())
    if not names:
        raise InputError(f"{folder} holds no frames (the folder is empty)")
    strays = [n for n in names if not images.is_image_path(Path(n))]
    if strays:
        raise InputError(f"{folder} holds files that are not frames: {', '.join(strays[:3])}"
                         + (f" (and {len(strays) - 3} more)" if len(strays) > 3 else ""),
                         hint="move them out, or name the frames with a pattern such as frames/%06d.png")
    parts = [(_NUMBERED_NAME.match(n), n) for n in names]
    unnumbered = [n for m, n in parts if m is None]
    if unnumbered:
        raise InputError(f"{folder / unnumbered[0]} has no frame number in its name",
                         hint="frames are named with a number, e.g. 000001.png")
    kinds = {(m.group(1), m.group(3)) for m, _ in parts}
    if len(kinds) > 1:
        (p1, s1), (p2, s2) = sorted(kinds)[:2]
        raise InputError(f"{folder} mixes frame names ({p1}N{s1} and {p2}N{s2})",
                         hint="give a pattern to pick one sequence, e.g. " + str(folder / f"{p1}%06d{s1}"))
    (prefix, suffix), = kinds
    numbers = [int(m.group(2)) for m, _ in parts]
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{folder} holds two frames with the same number (e.g. 01 and 1)")
    lengths = {len(m.group(2)) for m, _ in parts}
    # One length for all: fixed width (%0Nd); several lengths: unpadded numbers (%d).
    naming = SequenceNaming(folder, prefix, lengths.pop() if len(lengths) == 1 else 0, suffix)
    odd = next((n for n in names if naming.number_of(n) is None), None)
    if odd is not None:
        raise InputError(f"{folder / odd} is padded differently from the other frames",
                         hint="number every frame with the same number of digits, e.g. 000001.png")
    return naming


def _check_sizes(files: tuple[Path, ...], width: int, height: int) -> None:
    """Every frame's header must claim the first frame's size (checked before any work starts)."""
    for path in files[1:]:
        try:
            with open(path, "rb") as stream:
                size = images.claimed_size(stream.read(_HEADER_BYTES), path)
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
        if size is not None and size != (width, height):
            raise InputError(f"{path.name} is {size[0]}x{size[1]}, the first frame {files[0].name} is "
                             f"{width}x{height}", hint="every frame of a sequence must have the same size")


def _colour_of(sidecar: dict | None) -> ColourTags:
    """The source's colour tags from the sidecar; BT.709 (limited range) when there are none.

    An RGB source's "gbr" matrix says nothing about the YUV the frames will be encoded to: default then.
    """
    tags = sidecar.get("colour") if sidecar else None
    if isinstance(tags, dict) and tags.get("matrix") != "gbr":
        known = {key: tags.get(key) for key in ("matrix", "range", "primaries", "transfer")}
        if all(value is None or isinstance(value, str) for value in known.values()):
            return ColourTags(**known)
    return ColourTags("bt709", "tv", "bt709", "bt709")


def _rate_of(frame_rate: Fraction | None, sidecar: dict | None) -> tuple[Fraction, str]:
    if frame_rate is not None:
        return frame_rate, "--fps"
    if sidecar and sidecar.get("frame_rate"):
        try:
            rate = Fraction(str(sidecar["frame_rate"]))
            if rate > 0:
                return rate, "sidecar"
        except (ValueError, ZeroDivisionError):
            pass
    return DEFAULT_RATE, "default"


def _fraction_or_none(text: object) -> Fraction | None:
    try:
        value = Fraction(str(text)) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and value > 0 else None


def parse_rate(text: str) -> Fraction:
    """'24000/1001', '25', '29.97' -> an exact positive Fraction (a decimal is taken as written)."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if not 0 < rate <= 1000:
        raise UsageError(f"{{--fps {text}}} is not a frame rate", hint="e.g. 24000/1001, 25 or 30000/1001")
    return rate


def read_sidecar(naming: SequenceNaming) -> dict | None:
    """The sidecar beside a sequence, when it describes this pattern; None when absent or about another."""
    try:
        data = json.loads((naming.folder / SIDECAR_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("pattern") != naming.pattern:
        return None
    # Hand-edited or damaged fields are dropped, not trusted: each falls back to its default.
    for key, kind in (("bit_depth", int), ("rotation", int), ("frame_rate", str), ("sample_aspect_ratio", str)):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            data.pop(key, None)
    if "bit_depth" in data and not 8 <= data["bit_depth"] <= 16:
        del data["bit_depth"]
    return data


def _as_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Gray -> RGB, alpha dropped: the video path works on three channels."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 2:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    if pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[:, :, :3])
    if pixels.shape[2] != 3:
        raise InputError(f"{path.name} has {pixels.shape[2]} channels")
    return pixels


class SequenceReader:
    """The frames of a :class:`SequenceInfo` from index ``start_frame`` on, as HxWx3 RGB arrays."""

    def __init__(self, info: SequenceInfo, *, start_frame: int = 0) -> None:
        if not 0 <= start_frame <= info.frame_count:
            raise ValueError(f"start_frame {start_frame} outside 0..{info.frame_count}")
        self.info = info
        self.start_frame = start_frame
        self.dtype = np.dtype(np.uint16) if info.pix_fmt == "rgb48le" else np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.info.frame_count - self.start_frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.info.files[self.start_frame:]:
            try:
                frame = _as_rgb(images.read_image(path), path)
            except FileNotFoundError:
                raise InputError(f"frame {path} disappeared while the sequence was being read") from None
            if frame.shape != (self.info.height, self.info.width, 3):
                raise InputError(f"{path.name} is {frame.shape[1]}x{frame.shape[0]}, the sequence "
                                 f"{self.info.width}x{self.info.height}",
                                 hint="every frame of a sequence must have the same size")
            if frame.dtype != self.dtype:
                raise InputError(f"{path.name} is {frame.dtype.itemsize * 8}-bit, the first frame "
                                 f"{self.dtype.itemsize * 8}-bit", hint="every frame of a sequence must have one depth")
            yield frame

    def __enter__(self) -> SequenceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def write_sidecar(naming: SequenceNaming, facts: dict) -> None:
    """Write (or replace) the sidecar beside a sequence lightsr writes, whole or not at all."""
    data = {"pattern": naming.pattern, **facts}
    fs.write_bytes(naming.folder / SIDECAR_NAME, (json.dumps(data, indent=1) + "\n").encode(), overwrite=True,
                   hidden=True)
