"""torch against onnxruntime per model on one device, in alternating rounds; picks for `--backend auto`.

Both backends run the same frame through the full engine path (`upscale_pixels`: uint8 in and out,
the engine's padding, tiles and NaN guard), fp32, whole frame, batch 1; the first call of each is a
warm-up (and exports the ONNX graph into the cache). Rounds alternate torch / onnxruntime, so a shared
machine's drifting load falls on both alike; the median per backend is reported. Outputs are checked
equal (max difference in 8-bit levels, at most 1). A model's pick is onnxruntime only where it was
faster by more than --margin (default 5%), otherwise torch. Copy the written file's "picks" for this
device into lightsr_cli/engine/backends.py (MEASURED_PICKS; a test keeps them equal).

    LIGHTSR_WEIGHTS_MIRROR=... nice python benchmarks/backend_speed.py --device cpu --size 320x180 \
        --rounds 5 --out benchmarks/results-backend-cpu.json

Run it on a quiet machine: other processes on the cores change both backends' times, not alike.

--half fp16|bf16 adds a third contender on the CPU: torch in that precision (fast only where the CPU
multiplies it in hardware: Intel AMX-FP16 for fp16, AVX512-BF16 or AMX-BF16 for bf16; the file records
which half precision this CPU has, engine.devices.cpu_half_precision). Its max level difference is against
torch fp32. A model's half pick is "torch fp16" (or bf16) where it beat the faster fp32 backend by more than
the margin; those models go into MEASURED_CPU_HALF[fp16|bf16] once benchmarks/quality.py --precision
fp16|bf16 shows them within 0.05 dB of fp32 (tests/test_cpu_half.py checks both):

    LIGHTSR_WEIGHTS_MIRROR=... nice python benchmarks/backend_speed.py --device cpu --size 1280x720 \
        --rounds 5 --half fp16 --out benchmarks/results-backend-cpu-amx-fp16.json
    LIGHTSR_WEIGHTS_MIRROR=... nice python benchmarks/backend_speed.py --device cpu --size 1280x720 \
        --rounds 5 --half bf16 --out benchmarks/results-backend-cpu-avx512-bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lightsr_cli.pipeline.bench import synthetic_frame
from lightsr_cli.pipeline.loading import EngineSettings, load_engine
from lightsr_cli.pipeline.onnx_models import lightsr_version
from lightsr_cli.pipeline.pixels import upscale_pixels
from lightsr_cli.registry import get_card

DEFAULT_MODELS = ["bsrn-s-x4", "bsrn-x4", "a2n-x3", "emt-x4", "plainusr-u-x4", "plainusr-x4"]


def measure(model_id: str, device: str, width: int, height: int, rounds: int, margin: float,
            half: str | None = None) -> dict:
    card = get_card(model_id)
    frame = synthetic_frame(max(1, height // card.scale), max(1, width // card.scale))
    engines = {name: load_engine(card, EngineSettings(device=device, precision="fp32", tile=0, backend=name))
               for name in ("torch", "onnxruntime")}
    if half:
        engines[f"torch {half}"] = load_engine(card, EngineSettings(device=device, precision=half, tile=0,
                                                                    backend="torch"))
    outputs = {name: upscale_pixels(engine, frame) for name, engine in engines.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            upscale_pixels(engine, frame)
            times[name].append((time.perf_counter() - started) * 1000)
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    faster = medians["onnxruntime"] * (1 + margin) < medians["torch"]
    row = {"model": model_id, "lr_size": [frame.shape[1], frame.shape[0]],
            "torch_ms": round(medians["torch"], 1), "onnxruntime_ms": round(medians["onnxruntime"], 1),
            "speedup_onnxruntime": round(medians["torch"] / medians["onnxruntime"], 3),
            "samples_ms": {name: [round(t, 1) for t in samples] for name, samples in times.items()},
            "max_level_diff": int(np.abs(outputs["torch"].astype(int) - outputs["onnxruntime"].astype(int)).max()),
            "pick": "onnxruntime" if faster else "torch"}
    if half:
        contender = f"torch {half}"
        half_engine = engines[contender]
        fp32_ms = medians[row["pick"]]
        row.update({f"torch_{half}_ms": round(medians[contender], 1), "half_precision_ran": half_engine.precision,
                    f"speedup_{half}_vs_fp32_pick": round(fp32_ms / medians[contender], 3),
                    f"max_level_diff_{half}_vs_fp32": int(np.abs(outputs[contender].astype(int)
                                                                 - outputs["torch"].astype(int)).max()),
                    "half_pick": contender if (half_engine.precision == half
                                               and medians[contender] * (1 + margin) < fp32_ms) else row["pick"]})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="320x180", help="output frame WIDTHxHEIGHT")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-backend-cpu.json"))
    parser.add_argument("--half", choices=["fp16", "bf16"], help="also time torch in this precision")
    parser.add_argument("--append", action="store_true",
                        help="add these models' rows to the --out file (same --device, --size, --margin and --half)")
    parser.add_argument("--note", default="", help="how the machine was (quiet, shared, ...)")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    rows = []
    for model_id in args.models:
        row = measure(model_id, args.device, width, height, args.rounds, args.margin, args.half)
        print(json.dumps({k: v for k, v in row.items() if k != "samples_ms"}), flush=True)
        rows.append(row)
    import onnxruntime

    result = {
        "command": f"python benchmarks/backend_speed.py --device {args.device} --size {args.size} "
                   f"--rounds {args.rounds} --models {' '.join(args.models)}"
                   + (f" --half {args.half}" if args.half else "") + (" --append" if args.append else ""),
        "how": "full engine path (upscale_pixels, uint8), fp32, whole frame, batch 1, one warm-up, rounds "
               "alternating torch / onnxruntime, median; pick onnxruntime only when faster by more than the margin",
        "note": args.note, "device": args.device, "output_size": args.size, "margin": args.margin,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_at_end": list(os.getloadavg()), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
                    "lightsr": lightsr_version()},
        "rows": rows, "picks": {row["model"]: row["pick"] for row in rows},
    }
    if args.half:
        from lightsr_cli.engine.devices import cpu_half_precision, cpu_has_fp16_matrix_unit

        result["cpu_has_fp16_matrix_unit"] = cpu_has_fp16_matrix_unit()
        result["cpu_half_precision"] = cpu_half_precision()
        result["half_picks"] = {row["model"]: row["half_pick"] for row in rows}
    if args.append and args.out.exists():
        result = _appended(json.loads(args.out.read_text()), result)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


def _appended(earlier: dict, now: dict) -> dict:
    """The earlier file with this run's rows added (replacing rows of the same models) and its command kept."""
    same = ("device", "output_size", "margin")
    if any(earlier.get(key) != now.get(key) for key in same) or ("half_picks" in earlier) != ("half_picks" in now):
        raise SystemExit(f"--append: {', '.join(same)} and --half must match the earlier file")
    models = {row["model"] for row in now["rows"]}
    rows = [row for row in earlier["rows"] if row["model"] not in models] + now["rows"]
    merged = {**earlier, "rows": rows, "picks": {row["model"]: row["pick"] for row in rows},
              "appended": [*earlier.get("appended", []), {"command": now["command"], "note": now["note"],
                                                           "machine": now["machine"]}]}
    if "half_picks" in now:
        merged["half_picks"] = {row["model"]: row["half_pick"] for row in rows}
    return merged


if __name__ == "__main__":
    main()
