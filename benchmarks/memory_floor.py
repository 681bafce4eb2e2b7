"""How fast could a network run on a GPU at best? Count its memory traffic and its arithmetic.

Runs one forward pass per model on the CPU and counts, for every aten operation, the bytes it
reads and writes (every input and output tensor, as an unfused eager run moves them) and the
floating-point operations (torch.utils.flop_counter). Divided by a GPU's memory bandwidth and
peak half-precision rate, they give two floors on the time per frame of an unfused eager run
(fusion, as torch.compile does, can move less); the larger one is the bound that matters, and
GPU timings from `lightsr bench` can be set next to it.

    python benchmarks/memory_floor.py --models bsrn-x4 bsrn-s-x4 plainusr-x4 plainusr-u-x4 \\
        --size 1280x720 --out benchmarks/results-memory-floor.json

Bytes are counted at 2 bytes per element (fp16/bf16, as the engine runs on GPUs), whatever the
CPU computed in. H100 SXM figures by default: 3.35 TB/s HBM3, 989 TFLOP/s dense fp16.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from lightsr_cli import archs
from lightsr_cli.registry import get_card


class TrafficCounter(TorchDispatchMode):
    """Elements read and written by every aten op (views move no data and are skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func._schema.name.startswith("aten::") and not _is_view(func):
            self.read += sum(t.numel() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
            self.written += sum(t.numel() for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor))
        return result


def _is_view(func) -> bool:
    return any(a.alias_info is not None and not a.alias_info.is_write for a in func._schema.returns)


def measure(model_id: str, size: tuple[int, int], bandwidth: float, flops_peak: float) -> dict:
    card = get_card(model_id)
    spec = archs.get_spec(card.arch)
    torch.manual_seed(0)
    network = spec.build(scale=card.scale, **dict(card.hyperparameters)).eval()  # counts need no trained weights
    height, width = size[1] // card.scale, size[0] // card.scale
    x = torch.rand(1, 3, height, width) * spec.input_range
    traffic, flops = TrafficCounter(), FlopCounterMode(display=False)
    with torch.inference_mode(), flops, traffic:
        network(x)
    moved = 2 * (traffic.read + traffic.written)
    total_flops = flops.get_total_flops()
    memory_ms, compute_ms = moved / bandwidth * 1e3, total_flops / flops_peak * 1e3
    floor_ms = max(memory_ms, compute_ms)
    return {"model": model_id, "input": f"{width}x{height}", "output": f"{size[0]}x{size[1]}",
            "gflop": total_flops / 1e9, "gb_moved_fp16": moved / 1e9,
            "memory_floor_ms": memory_ms, "compute_floor_ms": compute_ms,
            "memory_over_compute": memory_ms / compute_ms,
            "best_case_output_mp_s": size[0] * size[1] / 1e6 / (floor_ms / 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bsrn-x4", "bsrn-s-x4", "plainusr-x4", "plainusr-u-x4"])
    parser.add_argument("--size", default="1280x720", help="output frame size")
    parser.add_argument("--bandwidth-tb-s", type=float, default=3.35)
    parser.add_argument("--fp16-tflop-s", type=float, default=989.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    results = {
        "torch": torch.__version__, "python": platform.python_version(), "command": " ".join(sys.argv),
        "assumed_gpu": {"bandwidth_tb_s": args.bandwidth_tb_s, "fp16_tflop_s": args.fp16_tflop_s},
        "note": "bytes: every aten op's inputs and outputs at 2 bytes per element (unfused eager traffic)",
        "models": [measure(m, size, args.bandwidth_tb_s * 1e12, args.fp16_tflop_s * 1e12) for m in args.models],
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
