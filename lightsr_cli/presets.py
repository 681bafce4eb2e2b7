"""The rule that turns measured speed and quality into the fast / balanced / quality presets.

Pure data in, data out: benchmarks/pick_presets.py feeds it `lightsr bench` timings and Set14
PSNR-Y, and the resulting table is written into registry.PRESET_MODELS.

Per scale:
- quality  = the best PSNR, whatever the speed;
- balanced = the best trade of PSNR against time: the highest PSNR - DB_PER_DOUBLING * log2(time),
  i.e. a model must buy at least DB_PER_DOUBLING dB for every doubling of time to beat a faster one.
  Balanced is the default, so it is chosen among the models whose weights ship inside lightsr
  (`shippable`): the default command must work on a machine with no network;
- fast     = the best PSNR among models at least FAST_SPEEDUP times faster than balanced
  (the fastest model when none is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DB_PER_DOUBLING = 0.1
FAST_SPEEDUP = 4.0


@dataclass(frozen=True)
class Measured:
    model_id: str
    scale: int
    psnr: float
    """Set14 PSNR-Y in dB."""
    milliseconds: float
    """Time per frame at the benchmark size, on one device."""
    shippable: bool = True
    """The weights ship embedded in lightsr (a balanced candidate)."""


def _trade(model: Measured) -> float:
    return model.psnr - DB_PER_DOUBLING * math.log2(model.milliseconds)


def pick_presets(models: list[Measured]) -> dict[int, dict[str, str]]:
    table: dict[int, dict[str, str]] = {}
    for scale in sorted({m.scale for m in models}):
        candidates = [m for m in models if m.scale == scale]
        quality = max(candidates, key=lambda m: (m.psnr, -m.milliseconds))
        balanced = max([m for m in candidates if m.shippable] or candidates, key=lambda m: (_trade(m), m.psnr))
        quick = [m for m in candidates if m.milliseconds * FAST_SPEEDUP <= balanced.milliseconds]
        fast = max(quick, key=lambda m: (m.psnr, -m.milliseconds)) if quick else min(candidates, key=lambda m: m.milliseconds)
        table[scale] = {"fast": fast.model_id, "balanced": balanced.model_id, "quality": quality.model_id}
    return table
