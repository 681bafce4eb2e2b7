"""Pure arithmetic for tiled inference: where tiles go and how their outputs are blended.

Tiles along an axis all have the same length (so they batch together and keep kernel shapes
fixed) and overlap by at least ``2 * context`` pixels. Inside an overlap, the two tiles' outputs
are cross-faded with linear ramps centred in the overlap, so the pixels nearest a tile's cut edge
(where the network saw the least context) get no weight and no seam forms along tile lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """A half-open interval [start, stop) along one axis, in input pixels."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_spans(length: int, tile: int, context: int, align: int = 1, min_length: int = 0) -> list[Span]:
    """Spans of at most ``tile`` covering [0, length) with overlaps of at least 2 * context.

    ``tile`` <= 0 or >= length gives one span over the whole axis. With ``align`` 1 the spans all
    have the same length (so they batch together): the fewest tiles of at most ``tile`` that cover
    the axis, each shrunk to the shortest equal length that still overlaps its neighbours by
    2 * context (but not below ``min_length``), so no work is spent on needless overlap. With
    ``align`` > 1 (windowed attention) every span starts on a multiple of ``align``, so its windows
    sit on the same grid as the whole image's; the last span then ends at the border and may be
    shorter.
    """
    if tile <= 0 or tile >= length:
        return [Span(0, length)]
    overlap = min(2 * context, tile - 1)
    if align > 1:
        return _aligned_spans(length, tile, overlap, align, min_length)
    count = math.ceil((length - overlap) / (tile - overlap))
    if count <= 1:
        return [Span(0, length)]
    shortest = math.ceil((length + (count - 1) * overlap) / count)
    tile = min(tile, max(shortest, min_length))
    # Spread the tiles evenly so the last one ends exactly at the border.
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return [Span(start, start + tile) for start in starts]


def _aligned_spans(length: int, tile: int, overlap: int, align: int, min_length: int) -> list[Span]:
    """The fewest aligned spans of at most ``tile``, each as short as a multiple of ``align`` allows."""
    full = _aligned_plan(length, tile, overlap, align)
    shortest = max(min_length, math.ceil((length + (len(full) - 1) * overlap) / len(full)))
    for candidate in range(math.ceil(shortest / align) * align, tile, align):
        plan = _aligned_plan(length, candidate, overlap, align)
        if len(plan) <= len(full):
            return plan
    return full


def _aligned_plan(length: int, tile: int, overlap: int, align: int) -> list[Span]:
    step = max(align, (tile - overlap) // align * align)
    last = math.ceil((length - tile) / align) * align  # the first aligned start whose span reaches the border
    starts = list(range(0, last, step)) + [last]
    return [Span(start, min(start + tile, length)) for start in starts]


def blend_ramp(spans: list[Span], index: int, scale: int, context: int) -> np.ndarray:
    """1-D blending weights (output resolution) of span ``index`` among its neighbours.

    Each overlap (at least ``2 * context`` wide) is cross-faded over a band of ``context`` input
    pixels centred in it: the tile's weight is 1 before the band, falls linearly to 0 across it,
    and is 0 beyond, where the neighbour (with the mirror-image ramp) takes over. Pixels within
    ``context / 2`` of a cut edge, where the network saw the least context, never contribute, and
    in every overlap the two weights sum to one.
    """
    span = spans[index]
    positions = span.start * scale + np.arange(span.length * scale, dtype=np.float64) + 0.5
    weights = np.ones(positions.shape, dtype=np.float64)
    if index > 0:
        centre, half = _fade_band(spans[index - 1], span, scale, context)
        weights = np.minimum(weights, np.clip((positions - (centre - half)) / (2 * half), 0.0, 1.0))
    if index < len(spans) - 1:
        centre, half = _fade_band(span, spans[index + 1], scale, context)
        weights = np.minimum(weights, np.clip(((centre + half) - positions) / (2 * half), 0.0, 1.0))
    return weights.astype(np.float32)


def _fade_band(left: Span, right: Span, scale: int, context: int) -> tuple[float, float]:
    """Centre and half-width (output pixels) of the cross-fade between two overlapping spans.

    The half-width is also kept within half the stride, so a tile's two fade bands (towards its
    previous and its next neighbour) never intersect, even when tiles are packed closely.
    """
    overlap = left.stop - right.start
    stride = right.start - left.start
    centre = (right.start + left.stop) / 2 * scale
    half = max(min(context / 2, overlap / 2, stride / 2), 0.5) * scale
    return centre, half


def pick_tile_size(height: int, width: int, max_pixels: int, multiple: int, minimum: int) -> int:
    """Largest square tile (a multiple of ``multiple``) within ``max_pixels``; 0 when the whole image fits."""
    if height * width <= max_pixels:
        return 0
    side = int(math.isqrt(max(max_pixels, 1)))
    side = max(minimum, side - side % max(multiple, 1))
    return side
