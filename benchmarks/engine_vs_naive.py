"""Compare lightsr's engine with a naive baseline, in one run on one device; write a results file.

Naive baseline = what the official test scripts do: the same module in fp32, batch 1, whole frame,
NCHW memory format, torch.no_grad, one frame at a time. The engine runs with its defaults for the
device (precision auto, its memory format, uint8 transfers, batching) plus the variants below:
frames in batches, torch.compile (--compile), and tiling overhead: --tile 512 against the whole
image on a large frame (--tiling-size, 4K output by default), where tiling is what a user would
use. With --video, the video pipeline's end-to-end fps against model-only fps.

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
from lightsr_cli.bench import _synthetic_frame
from lightsr_cli.pipeline import EngineChoice, load_upscaler, upscale_pixels
from lightsr_cli.registry import get_card


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run, device: torch.device, repeats: int) -> float:
    run()  # warm-up (cudnn autotuning, allocator)
    _sync(device)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        _sync(device)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def naive_seconds(network: torch.nn.Module, spec, frame: np.ndarray, device: torch.device, repeats: int) -> float:
    """Official-script style: fp32, NCHW, no_grad, whole frame, host array in and out."""
    network = copy.deepcopy(network).to(device, torch.float32).to(memory_format=torch.contiguous_format).eval()

    def run():
        with torch.no_grad():
            x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].to(device)
            y = network(x * spec.input_range) / spec.input_range
            (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).cpu().numpy()

    return _median_seconds(run, device, repeats)


def engine_seconds(upscaler, frame: np.ndarray, repeats: int) -> float:
    return _median_seconds(lambda: upscale_pixels(upscaler, frame), upscaler.device, repeats)


def engine_float_io_seconds(upscaler, frame: np.ndarray, repeats: int) -> float:
    """The engine fed and read as float32 on the host (the path before uint8 transfers), for comparison."""
    def run():
        x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
        y = upscaler.upscale(x)
        (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).contiguous().numpy()

    return _median_seconds(run, upscaler.device, repeats)


def engine_batched_seconds(upscaler, frame: np.ndarray, repeats: int) -> float:
    """Per-frame time when frames go through in batches (the video path)."""
    batch = upscaler.batch
    frames = torch.from_numpy(np.stack([frame] * batch).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    return _median_seconds(lambda: upscaler.upscale(frames), upscaler.device, repeats) / batch


def measure_model(model_id: str, size: tuple[int, int], tiling_size: tuple[int, int], device: str, repeats: int,
                  batch: int, compiled: bool) -> dict:
    card = get_card(model_id)
    width, height = size[0] // card.scale, size[1] // card.scale
    frame = _synthetic_frame(height, width)
    engine = load_upscaler(card, EngineChoice(device=device))
    row = {"model": model_id, "input": f"{width}x{height}", "output": f"{width * card.scale}x{height * card.scale}",
           "engine_precision": engine.precision}
    naive_network = engine._fp32_master  # the same weights (copied to NCHW fp32 by naive_seconds)
    row["naive_s"] = naive_seconds(naive_network, engine.spec, frame, engine.device, repeats)
    row["engine_s"] = engine_seconds(engine, frame, repeats)
    row["speedup_vs_naive"] = row["naive_s"] / row["engine_s"]
    row["engine_float_io_s"] = engine_float_io_seconds(engine, frame, repeats)
    row["uint8_io_gain"] = row["engine_float_io_s"] / row["engine_s"]
    row["engine_output_mp_s"] = width * height * card.scale ** 2 / 1e6 / row["engine_s"]
    if batch > 1:
        batched = load_upscaler(card, EngineChoice(device=device, batch=batch))
        row[f"engine_batch{batch}_s_per_frame"] = engine_batched_seconds(batched, frame, repeats)
        row[f"batch{batch}_speedup_vs_naive"] = row["naive_s"] / row[f"engine_batch{batch}_s_per_frame"]
    if compiled:
        engine_compiled = load_upscaler(card, EngineChoice(device=device, compile=True))
        started = time.perf_counter()
        upscale_pixels(engine_compiled, frame)
        row["compile_first_call_s"] = time.perf_counter() - started
        row["engine_compiled_s"] = engine_seconds(engine_compiled, frame, repeats)
        row["compiled_speedup_vs_naive"] = row["naive_s"] / row["engine_compiled_s"]
    row.update(measure_tiling(card, tiling_size, device, repeats))
    return row


def measure_tiling(card, tiling_size: tuple[int, int], device: str, repeats: int, tile: int = 512) -> dict:
    """Time with --tile 512 over time in one piece, on a frame large enough that tiles are worth it."""
    width, height = tiling_size[0] // card.scale, tiling_size[1] // card.scale
    frame = _synthetic_frame(height, width)
    whole = load_upscaler(card, EngineChoice(device=device, tile=0))
    tiled = load_upscaler(card, EngineChoice(device=device, tile=tile))
    auto = load_upscaler(card, EngineChoice(device=device))
    rows, cols = tiled.tile_spans(height, width, tile)
    whole_s = engine_seconds(whole, frame, repeats)
    tiled_s = engine_seconds(tiled, frame, repeats)
    return {"tiling_input": f"{width}x{height}", f"tiling_grid_tile{tile}": f"{len(rows)}x{len(cols)} of "
            f"{rows[0].length}x{cols[0].length}", "tiling_whole_s": whole_s, f"tiling_tile{tile}_s": tiled_s,
            f"tiling_overhead_tile{tile}": tiled_s / whole_s - 1,
            "tiling_auto_tile": auto.auto_tile_size(height, width) or "whole image"}


def measure_video(model_id: str, device: str, batch: int) -> dict:
    """End-to-end fps of `lightsr upscale clip.mp4` against model-only fps, one generated clip."""
    from lightsr_cli.media.video import ffmpeg_exe

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=320x180:rate=24000/1001:duration=4", "-f", "lavfi", "-i", "sine=duration=4",
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
    parser.add_argument("--tiling-size", default="3840x2160", help="output frame size for the tiling overhead")
    parser.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--video", default=None, help="model id for the video pipeline measurement")
    parser.add_argument("--video-batch", type=int, default=1, help="--batch for the video measurement")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tiling_size = tuple(int(v) for v in args.tiling_size.lower().split("x"))
    device = torch.device("cuda") if args.device == "auto" and torch.cuda.is_available() else torch.device(
        "cpu" if args.device == "auto" else args.device)
    results = {
        "lightsr": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(), "size": args.size, "repeats": args.repeats,
        "command": " ".join(sys.argv),
        "models": [measure_model(m, size, tiling_size, str(device), args.repeats, args.batch, args.compile)
                   for m in args.models],
    }
    if args.video:
        results["video"] = measure_video(args.video, str(device), args.video_batch)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
