"""What an architecture's CPU inference form gains: the network as built against the form, same process.

The torch engine runs an fp32 CPU network through ``ArchSpec.cpu_inference_form`` where the
architecture has one (BSRN: oneDNN's fused convolutions and no concatenations). This times both on
the same input, as the engine feeds them (channels_last, allocator tuned), in alternating rounds so
a drifting load falls on both alike, and records the median, the speed-up and the max difference.

    LIGHTSR_WEIGHTS_MIRROR=/work/shared/weights/official python benchmarks/cpu_inference_form.py \
        --out benchmarks/results-cpu-inference-form.json

--precision fp16|bf16 times both in that precision (the form runs in any dtype it agrees in).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightsr_cli import Upscaler  # noqa: E402
from lightsr_cli.engine import allocator  # noqa: E402
from lightsr_cli.pipeline.bench import synthetic_frame  # noqa: E402


def _cpu_name() -> str:
    """The CPU's marketing name (results differ between CPU families more than between runs)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(model: str, width: int, height: int, rounds: int, precision: str) -> dict:
    engine = Upscaler(model, device="cpu", backend="torch", precision=precision).engine
    form = engine._eager_network
    built = getattr(form, "network", form)
    if form is built:
        return {"model": model, "form": None, "note": "no CPU inference form on this build or for this model"}
    frame = synthetic_frame(height, width)
    x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].to(engine.dtype)
    if engine.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    samples: dict[str, list[float]] = {"built": [], "form": []}
    with torch.inference_mode():
        outputs = {"built": built(x), "form": form(x)}  # warm-up
        for _ in range(rounds):
            for label, network in (("built", built), ("form", form)):
                started = time.perf_counter()
                network(x)
                samples[label].append((time.perf_counter() - started) * 1000)
    built_ms, form_ms = statistics.median(samples["built"]), statistics.median(samples["form"])
    return {"model": model, "form": type(form).__name__, "precision": engine.precision,
            "input": f"{width}x{height}", "rounds": rounds,
            "built_ms": round(built_ms, 1), "form_ms": round(form_ms, 1),
            "speedup": round(built_ms / form_ms, 3),
            "max_abs_diff": float((outputs["built"].float() - outputs["form"].float()).abs().max()),
            "samples_ms": {label: [round(v, 1) for v in values] for label, values in samples.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bsrn-x4", "bsrn-x2", "bsrn-s-x4"])
    parser.add_argument("--size", default="320x180", help="LR input WxH")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tuning = allocator.tune_for_cpu_inference()
    result = {
        "command": "python benchmarks/cpu_inference_form.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "cpu": _cpu_name(), "allocator_tuned": bool(tuning.applied),
        "load_average_at_start": os.getloadavg(),
        "models": [measure(model, width, height, args.rounds, args.precision) for model in args.models],
        "load_average_at_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["models"]:
        print(json.dumps({key: row.get(key) for key in ("model", "built_ms", "form_ms", "speedup", "max_abs_diff")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
