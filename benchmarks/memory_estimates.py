"""Calibrate each architecture's activation memory estimate (ArchSpec.activation_bytes_per_pixel).

For each model (random weights: memory does not depend on their values), one fp32 and one bf16
forward at two LR sizes, each in a fresh process: the peak resident set growth of the forward
(ru_maxrss after it minus the resident set before it). The slope between the two sizes is the
peak activation memory per LR input pixel; the constant part (weights, workspaces) drops out.
The CPU's peak is a stand-in for the GPU's (same tensors, other allocator): the GPU acceptance run
(benchmarks/gpu_acceptance.py) checks torch.cuda.max_memory_allocated against the estimate.

    python benchmarks/memory_estimates.py --out benchmarks/results-memory-estimates.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

MODELS = ["bsrn-x4", "bsrn-s-x4", "a2n-x4", "emt-x4", "plainusr-l-x4", "plainusr-x4", "plainusr-u-x4",
          "grl-tiny-x4", "grl-small-x4", "grl-base-x4"]
SIZES = (64, 128)

_CHILD = r"""
import json, resource, sys
import torch
from lightsr_cli import archs
from lightsr_cli.registry import get_card
card = get_card(sys.argv[1]); side = int(sys.argv[2]); dtype = getattr(torch, sys.argv[3])
spec = archs.get_spec(card.arch)
torch.manual_seed(0)
net = spec.build(scale=card.scale, **card.hyperparameters).eval().to(dtype)
fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
net = net.to(memory_format=fmt)
x = (torch.rand(1, 3, side, side) * spec.input_range).to(dtype).contiguous(memory_format=fmt)
page = __import__("os").sysconf("SC_PAGE_SIZE")
before = int(open("/proc/self/statm").read().split()[1]) * page
with torch.inference_mode():
    net(x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": peak - before}))
"""


def growth(model: str, side: int, dtype: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, model, str(side), dtype], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["growth"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from lightsr_cli import archs
    from lightsr_cli.registry import get_card

    rows = []
    small, large = (side * side for side in SIZES)
    for model in args.models:
        spec = archs.get_spec(get_card(model).arch)
        row = {"model": model, "arch": spec.name}
        for dtype in ("float32", "bfloat16"):
            g_small, g_large = growth(model, SIZES[0], dtype), growth(model, SIZES[1], dtype)
            row[f"{dtype}_bytes_per_pixel"] = round((g_large - g_small) / (large - small))
        row["spec_fp32"] = spec.bytes_per_pixel(__import__("torch").float32)
        row["spec_half"] = spec.bytes_per_pixel(__import__("torch").bfloat16)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "sizes": SIZES,
                                        "command": "python benchmarks/memory_estimates.py", "results": rows},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
