"""Compare lightsr's engine with a naive baseline, in one run on one device; write a results file.

Naive baseline = what the official test scripts do: the same module in fp32, batch 1, whole frame,
NCHW memory format, torch.no_grad, one frame at a time. The engine runs with its defaults for the
device (precision auto, its memory format, uint8 transfers, batching) plus the variants below:
frames in batches, torch.compile (--compile), and tiling overhead: --tile 512 against the whole
image on a large frame (--tiling-size, 2560x1440 output by default). Variants are timed in
alternating rounds, so a shared machine's drifting load falls on all of them alike. With --video,
the video pipeline's end-to-end fps against model-only fps.

    python benchmarks/engine_vs_naive.py --models bsrn-x4 plainusr-x4 --size 1280x720 --compile \
        --video bsrn-x4 --out benchmarks/results-cpu.json

Absolute times vary between machines; the ratios measured in one run are what this file is for.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lightsr_cli import __version__
from lightsr_cli.pipeline.bench import synthetic_frame
from lightsr_cli.pipeline.loading import EngineSettings, load_engine
from lightsr_cli.pipeline.pixels import upscale_pixels
from lightsr_cli.registry import get_card


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(runs: dict, device: torch.device, rounds: int) -> dict[str, float]:
    """Median seconds per call of each run, timed in alternating rounds (A B C A B C ...).

    Shared machines drift (other tenants, CPU steal): alternating puts the drift on every variant
    alike, so the ratios hold even when absolute times wander between runs of this script.
    """
    for run in runs.values():  # warm-up: cudnn autotuning, allocator, compiled graphs
        run()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            _sync(device)
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def naive_run(network: torch.nn.Module, spec, frame: np.ndarray, device: torch.device):
    """Official-script style: fp32, NCHW, no_grad, whole frame, host array in and out."""
    network = copy.deepcopy(network).to(device, torch.float32).to(memory_format=torch.contiguous_format).eval()

    def run():
        with torch.no_grad():
            x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].to(device)
            y = network(x * spec.input_range) / spec.input_range
            (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).cpu().numpy()

    return run


def float_io_run(upscaler, frame: np.ndarray):
    """The engine fed and read as float32 on the host (the path before uint8 transfers), for comparison."""
    def run():
        x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
        y = upscaler.upscale(x)
        (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).contiguous().numpy()

    return run


def measure_model(model_id: str, size: tuple[int, int], tiling_size: tuple[int, int], device: str, rounds: int,
                  batch: int, compiled: bool) -> dict:
    card = get_card(model_id)
    width, height = size[0] // card.scale, size[1] // card.scale
    frame = synthetic_frame(height, width)
    engine = load_engine(card, EngineSettings(device=device))
    row = {"model": model_id, "input": f"{width}x{height}", "output": f"{width * card.scale}x{height * card.scale}",
           "engine_precision": engine.precision}
    runs = {
        "naive": naive_run(engine._fp32_master, engine.spec, frame, engine.device),  # the same weights, NCHW fp32
        "engine": lambda: upscale_pixels(engine, frame),
        "engine_float_io": float_io_run(engine, frame),
    }
    if batch > 1:
        batched = load_engine(card, EngineSettings(device=device, batch=batch))
        frames = torch.from_numpy(np.stack([frame] * batch)).permute(0, 3, 1, 2)
        runs[f"engine_batch{batch}"] = lambda: batched.upscale(frames, to_uint8=True)
    if compiled:
        engine_compiled = load_engine(card, EngineSettings(device=device, compile=True))
        started = time.perf_counter()
        upscale_pixels(engine_compiled, frame)
        row["compile_first_call_s"] = time.perf_counter() - started
        runs["engine_compiled"] = lambda: upscale_pixels(engine_compiled, frame)
    seconds = interleaved_seconds(runs, engine.device, rounds)
    if batch > 1:
        seconds[f"engine_batch{batch}"] /= batch  # per frame
    row.update({f"{name}_s": value for name, value in seconds.items()})
    row.update({f"{name}_speedup_vs_naive": seconds["naive"] / value for name, value in seconds.items() if name != "naive"})
    row["uint8_io_gain"] = seconds["engine_float_io"] / seconds["engine"]
    row["engine_output_mp_s"] = width * height * card.scale ** 2 / 1e6 / seconds["engine"]
    row.update(measure_tiling(card, tiling_size, device, rounds))
    return row


def measure_tiling(card, tiling_size: tuple[int, int], device: str, rounds: int, tile: int = 512) -> dict:
    """Time with --tile 512 over time in one piece, on a frame large enough that tiles are worth it."""
    width, height = tiling_size[0] // card.scale, tiling_size[1] // card.scale
    frame = synthetic_frame(height, width)
    whole = load_engine(card, EngineSettings(device=device, tile=0))
    tiled = load_engine(card, EngineSettings(device=device, tile=tile))
    auto = load_engine(card, EngineSettings(device=device))
    rows, cols = tiled.tile_spans(height, width, tile)
    seconds = interleaved_seconds({"whole": lambda: upscale_pixels(whole, frame),
                                   "tiled": lambda: upscale_pixels(tiled, frame)}, whole.device, rounds)
    return {"tiling_input": f"{width}x{height}",
            f"tiling_grid_tile{tile}": f"{len(rows)}x{len(cols)} of {rows[0].length}x{cols[0].length}",
            "tiling_whole_s": seconds["whole"], f"tiling_tile{tile}_s": seconds["tiled"],
            f"tiling_overhead_tile{tile}": seconds["tiled"] / seconds["whole"] - 1,
            "tiling_auto_tile": auto.auto_tile_size(height, width) or "whole image"}


def measure_video(model_id: str, device: str, batch: int, clip_size: str = "320x180", seconds: float = 4) -> dict:
    """End-to-end fps of `lightsr upscale clip.mp4` against model-only fps, one generated clip."""
    from lightsr_cli.media.video import ffmpeg_exe

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={clip_size}:rate=24000/1001:duration={seconds}", "-f", "lavfi", "-i",
                        f"sine=duration={seconds}",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)], check=True)
        result = subprocess.run([sys.executable, "-m", "lightsr_cli", "upscale", str(clip), "--model", model_id,
                                 "--device", device, "--batch", str(batch), "--json", "-q"],
                                capture_output=True, text=True, check=True)
        summary = json.loads(result.stdout)["video"]
    summary["model"] = model_id
    summary["end_to_end_over_model"] = summary["end_to_end_fps"] / summary["model_fps"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bsrn-x4", "plainusr-x4"])
    parser.add_argument("--size", default="1280x720", help="output frame size")
    parser.add_argument("--tiling-size", default="2560x1440", help="output frame size for the tiling overhead")
    parser.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each variant once per round)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--video", default=None, help="model id for the video pipeline measurement")
    parser.add_argument("--video-batch", type=int, default=1, help="--batch for the video measurement")
    parser.add_argument("--video-clip", default="320x180", help="size of the generated clip for --video")
    parser.add_argument("--video-seconds", type=float, default=4, help="length of the generated clip for --video")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tiling_size = tuple(int(v) for v in args.tiling_size.lower().split("x"))
    device = torch.device("cuda") if args.device == "auto" and torch.cuda.is_available() else torch.device(
        "cpu" if args.device == "auto" else args.device)
    results = {
        "lightsr": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(), "size": args.size, "rounds": args.rounds,
        "command": " ".join(sys.argv),
        "note": "seconds per frame (engine_batchN_s too); medians of interleaved rounds",
        "models": [measure_model(m, size, tiling_size, str(device), args.rounds, args.batch, args.compile)
                   for m in args.models],
    }
    if args.video:
        results["video"] = measure_video(args.video, str(device), args.video_batch, args.video_clip, args.video_seconds)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
