"""Duplicate frames skipped (``--dedup exact|near[:T]``): which frames go through the network, which reuse.

A video's decoded frames are grouped into batches of frames that *need* the network; a frame that
repeats the reference (the last frame that was actually upscaled) is not sent and the previous
upscaled frame is emitted again in its place, so the frame count and every timestamp stay the same.

The rule, precisely:

* ``exact``: the frame's decoded RGB pixels equal the reference's, bit for bit. The output is then
  identical to a run without dedup (the network would have produced the same pixels again).
* ``near:T`` (T an integer 0..255, default :data:`DEFAULT_NEAR_THRESHOLD`): the largest absolute
  difference over every pixel and every channel between the frame and the reference is <= T,
  counted in 8-bit levels (for 16-bit frames, T * 257 on their 0..65535 scale). One pixel that
  changed by more than T is enough to send the frame through the network.

The reference is the last frame that was upscaled, never the previous (reused) frame: comparing
against the previous frame would let a slow fade of 1 level per frame be reused for ever, each
step within T while the distance from what was really upscaled grows without bound. It is also
reset at every resume segment boundary (``reset_every``), so a run resumed with ``--resume`` makes
the same decisions as one that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError

DEFAULT_NEAR_THRESHOLD = 2
"""8-bit levels: below what video compression noise on a still picture usually reaches, above 0."""


@dataclass(frozen=True)
class DedupSettings:
    """Which repeated frames skip the network: mode "off", "exact" or "near" (with ``threshold``)."""

    mode: str = "off"
    threshold: int = 0
    """near only: the largest per-pixel, per-channel difference in 8-bit levels that still counts as a repeat."""

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def describe(self) -> str:
        return f"near:{self.threshold}" if self.mode == "near" else self.mode


def parse_dedup(text: str | None) -> DedupSettings:
    """'exact', 'near', 'near:4' or 'off' (None too) -> DedupSettings; anything else is a usage error."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return DedupSettings()
    mode, _, value = text.strip().lower().partition(":")
    if mode == "exact" and not value:
        return DedupSettings("exact")
    if mode == "near":
        if not value:
            return DedupSettings("near", DEFAULT_NEAR_THRESHOLD)
        if value.isdigit() and 0 <= int(value) <= 255:
            return DedupSettings("near", int(value))
        raise UsageError(f"{{--dedup {text}}}: the threshold must be a whole number of 8-bit levels, 0 to 255",
                         hint=f"e.g. {{--dedup near:{DEFAULT_NEAR_THRESHOLD}}}")
    raise UsageError(f"{{--dedup {text}}} is not a dedup mode", hint="use exact, near or near:LEVELS")


def is_repeat(frame: np.ndarray, reference: np.ndarray, settings: DedupSettings) -> bool:
    """Does ``frame`` count as a repeat of ``reference`` under ``settings`` (see the module docstring)?"""
    if frame.shape != reference.shape or frame.dtype != reference.dtype:
        return False
    if settings.mode == "exact":
        return bool(np.array_equal(frame, reference))
    if settings.mode != "near":
        return False
    limit = settings.threshold * (257 if frame.dtype == np.uint16 else 1)
    # int32 holds any difference of uint16 values; checked in row bands to keep the temporary small.
    for start in range(0, frame.shape[0], 64):
        rows = slice(start, start + 64)
        if np.abs(frame[rows].astype(np.int32) - reference[rows]).max(initial=0) > limit:
            return False
    return True


@dataclass
class FrameBatch:
    """Frames for one network pass, and where the results go among the output frames.

    ``plan[i]`` says what output frame i of this batch is: True, the next upscaled frame of this
    batch; False, the previous output frame again (from this batch or an earlier one).
    """

    frames: list[np.ndarray] = field(default_factory=list)
    plan: list[bool] = field(default_factory=list)


@dataclass
class DedupCounts:
    """How many frames went through the network and how many were reused (filled in as frames pass)."""

    upscaled: int = 0
    reused: int = 0


def batches_with_reuse(frames: Iterable[np.ndarray], size: int, settings: DedupSettings, first_index: int = 0,
                       reset_every: int | None = None, counts: DedupCounts | None = None) -> Iterator[FrameBatch]:
    """Group frames into batches of up to ``size`` frames that need the network, repeats riding along.

    ``first_index`` is the index of the first frame in the whole video and ``reset_every`` the
    resume segment length: the first frame of every segment is always upscaled. With dedup off
    every frame is upscaled and the batches are exactly ``size`` frames, as without this module.
    A repeat never opens a batch of its own: it joins the batch being filled, which is sent when the
    next frame that needs the network would overflow it, or at the end of the stream.
    """
    counts = counts if counts is not None else DedupCounts()
    batch = FrameBatch()
    reference: np.ndarray | None = None
    for index, frame in enumerate(frames, start=first_index):
        segment_start = reset_every is not None and index % reset_every == 0
        if (settings.active and reference is not None and not segment_start
                and is_repeat(frame, reference, settings)):
            batch.plan.append(False)
            counts.reused += 1
            continue
        if len(batch.frames) == size:
            yield batch
            batch = FrameBatch()
        batch.frames.append(frame)
        batch.plan.append(True)
        counts.upscaled += 1
        reference = frame
    if batch.plan:
        yield batch


def expand_reuse(batches: Iterable[tuple[FrameBatch, list[np.ndarray]]]) -> Iterator[np.ndarray]:
    """Output frames in order from (batch, its upscaled frames) pairs that arrive in order."""
    previous: np.ndarray | None = None
    for batch, upscaled in batches:
        results = iter(upscaled)
        for fresh in batch.plan:
            if fresh:
                previous = next(results)
            if previous is None:  # never: the first frame of a stream is always upscaled
                raise RuntimeError("a reused frame before any upscaled frame")
            yield previous
