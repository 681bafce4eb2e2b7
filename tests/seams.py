"""Seam detection shared by the tiling tests of every architecture.

A seam is a step in the tiled-minus-untiled difference along the lines where tiles meet. We
compare the mean absolute gradient of that difference across tile-boundary lines with its
mean across all other lines; a visible seam makes the ratio large, blended tiles keep it near 1.
"""

from __future__ import annotations

import numpy as np

from lightsr_cli.tiling import Span


def boundary_line_groups(spans: list[Span], scale: int) -> dict[str, list[int]]:
    """Gradient positions (output pixels) where tiles meet: their cut edges and their fade centres."""
    length = spans[-1].stop
    groups: dict[str, set[int]] = {"cut edges": set(), "fade centres": set()}
    for left, right in zip(spans, spans[1:], strict=False):
        groups["cut edges"].update({right.start * scale - 1, left.stop * scale - 1})
        groups["fade centres"].add((right.start + left.stop) * scale // 2 - 1)
    last = length * scale - 1
    return {name: sorted(p for p in lines if 0 <= p < last) for name, lines in groups.items()}


class SeamMeter:
    """Pools |gradient of (tiled - whole)| over many images, by kind of line.

    Single lines are noisy (any textured row can spike), so the verdict is taken over every
    boundary line of every image: ``ratio()`` is the worst kind of boundary line's mean gradient
    over the mean gradient of all non-boundary lines. A seam (a step along boundary lines) lifts
    it well above 1; well blended tiles keep it near 1.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _add(self, group: str, values: np.ndarray) -> None:
        self.sums[group] = self.sums.get(group, 0.0) + float(values.sum())
        self.counts[group] = self.counts.get(group, 0) + int(values.size)

    def add(self, tiled: np.ndarray, whole: np.ndarray, spans: tuple[list[Span], list[Span]], scale: int) -> None:
        """``spans``: the (row, column) spans the engine tiled with (Engine.tile_spans)."""
        diff = tiled.astype(np.float64) - whole.astype(np.float64)
        for axis in (0, 1):
            gradient = np.abs(np.diff(diff, axis=axis))
            profile = gradient.mean(axis=tuple(a for a in range(gradient.ndim) if a != axis))
            groups = boundary_line_groups(spans[axis], scale)
            boundary = sorted(set().union(*groups.values()))
            if not boundary:
                continue
            self._add("other", profile[np.setdiff1d(np.arange(profile.size), boundary)])
            for name, lines in groups.items():
                self._add(name, profile[lines])

    def ratio(self) -> float:
        if not self.counts.get("other"):
            raise ValueError("no image was tiled: use smaller tiles or larger images")
        baseline = max(self.sums["other"] / self.counts["other"], 1e-12)
        return max(self.sums[g] / self.counts[g] / baseline for g in self.counts if g != "other" and self.counts[g])
