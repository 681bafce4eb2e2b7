"""Helpers every architecture's ``detect`` shares: reading the scale off a pixel-shuffle layer,
numbered blocks off key names, and comparing a state dict with a network built on the meta device.

``detect`` functions receive state dicts already unwrapped by :mod:`lightsr_cli.checkpoints`
(no containers, no ``module.``/``model.`` prefixes).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn


def pixel_shuffle_scale(out_channels: int, channels: int = 3) -> int | None:
    """The factor s of a layer that feeds a pixel shuffle: ``out_channels == channels * s * s``."""
    if channels < 1 or out_channels % channels:
        return None
    scale = math.isqrt(out_channels // channels)
    return scale if scale >= 1 and channels * scale * scale == out_channels else None


def block_indices(keys: Iterable[Any], prefix: str) -> list[int]:
    """Sorted integers ``i`` such that some key starts with ``prefix + f"{i}."`` ("body." -> [0, 1, ...])."""
    found = set()
    for key in keys:
        if isinstance(key, str) and key.startswith(prefix):
            head, dot, _ = key[len(prefix):].partition(".")
            if dot and head.isdigit():
                found.add(int(head))
    return sorted(found)


def is_numbered_from(indices: list[int], first: int = 0) -> bool:
    """True for a non-empty run first, first + 1, ... without gaps."""
    return bool(indices) and indices == list(range(first, first + len(indices)))


def shape_of(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    value = state_dict.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def matches_network(state_dict: Mapping[str, Any], make_network: Callable[[], nn.Module]) -> bool:
    """True when `state_dict` has exactly the keys and shapes of the network `make_network` builds
    (on the meta device, so nothing is allocated)."""
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in make_network().state_dict().items()}
    return {key: shape_of(state_dict, key) for key in state_dict} == expected
