"""Which model a run uses: the user's choice, or, for a target size with no model named, the right scale."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from ..checkpoints import resolve_card
from ..registry import ModelCard


def auto_scaled(model: str | None, weights: Path | None, scale: int | None, target) -> bool:
    """A target size and no model, checkpoint or scale named: the scale follows the inputs' sizes."""
    return target is not None and not model and weights is None and scale is None


def card_for_sizes(preset: str | None, target, sizes: Iterable[tuple[int, int, object] | None]) -> ModelCard:
    """The preset's model at the smallest scale that reaches the largest enlargement the inputs need."""
    from ..pipeline.sizing import enlargement, pick_network_scale

    factors = [enlargement(target, width, height, sar) for width, height, sar in filter(None, sizes)]
    return resolve_card(None, preset, None, pick_network_scale(factors))


def choose_card(model: str | None, preset: str | None, weights: Path | None, scale: int | None, target,
                sizes: Callable[[], Iterable[tuple[int, int, object] | None]]) -> ModelCard:
    """The card for a run; ``sizes`` (called only when the scale follows the inputs) gives (w, h, sar) per input."""
    if auto_scaled(model, weights, scale, target):
        return card_for_sizes(preset, target, sizes())
    return resolve_card(model, preset, weights, scale)
