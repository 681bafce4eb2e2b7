"""Seam detection shared by the tiling tests of every architecture.

A seam is a step in the tiled-minus-untiled difference along the lines where tiles meet. We
compare the mean absolute gradient of that difference across tile-boundary lines with its
mean across all other lines; a visible seam makes the ratio large, blended tiles keep it near 1.
"""

from __future__ import annotations

import numpy as np

from lightsr_cli.tiling import plan_spans


def boundary_line_groups(length: int, patch: int, context: int, scale: int) -> dict[str, list[int]]:
    """Gradient positions (output pixels) where tiles meet: their cut edges and their fade centres."""
    spans = plan_spans(length, patch, context)
    groups: dict[str, set[int]] = {"cut edges": set(), "fade centres": set()}
    for left, right in zip(spans, spans[1:]):
        groups["cut edges"].update({right.start * scale - 1, left.stop * scale - 1})
        groups["fade centres"].add((right.start + left.stop) * scale // 2 - 1)
    last = length * scale - 1
    return {name: sorted(p for p in lines if 0 <= p < last) for name, lines in groups.items()}


def seam_ratio(tiled: np.ndarray, whole: np.ndarray, patch: int, context: int, scale: int) -> float:
    """Mean |gradient of (tiled - whole)| on tile-boundary lines over the same on all other lines.

    Computed per axis and per kind of boundary line (cut edges, fade centres); the worst ratio is
    returned. A seam is a step in the difference along a boundary line, which lifts its ratio far
    above 1; well blended tiles stay near 1.
    """
    diff = tiled.astype(np.float64) - whole.astype(np.float64)
    worst = 0.0
    for axis in (0, 1):
        gradient = np.abs(np.diff(diff, axis=axis))
        profile = gradient.mean(axis=tuple(a for a in range(gradient.ndim) if a != axis))
        groups = boundary_line_groups(diff.shape[axis] // scale, patch, context, scale)
        boundary = sorted(set().union(*groups.values()))
        if not boundary:
            continue
        baseline = max(profile[np.setdiff1d(np.arange(profile.size), boundary)].mean(), 1e-12)
        for lines in groups.values():
            worst = max(worst, float(profile[lines].mean() / baseline))
    return worst
