"""CPU speed of lightsr's default path against the naive loop, with page faults and peak memory (issue #15).

Three worker processes per model, each started fresh and timed in alternating rounds (naive,
today, lightsr, naive, today, lightsr, ...), so a shared machine's drifting load falls on all alike:

- ``naive``: the official test scripts' loop: plain torch, fp32, NCHW, no_grad, the whole frame,
  float arrays in and out. Its process imports lightsr only to build the network and has none of
  lightsr's process settings (checked: no engine is created, the allocator is untouched, and no
  MALLOC_* variables are passed to it).
- ``today``: ``lightsr_cli.Upscaler(model, device="cpu", precision="fp32").upscale(frame)`` with
  LIGHTSR_TUNE_ALLOCATOR=0: the engine path as it ran before the allocator tuning (but with what came
  later, such as BSRN's CPU inference form: benchmarks/cpu_inference_form.py measures that alone).
- ``lightsr``: the same call with lightsr's defaults: what the CLI and the Python API run now.

Per model: median ms per frame, speed-up over naive, minor page faults per frame after warm-up
(resource.getrusage), and whether lightsr's output equals today's. Then peak RSS over a generated
video (--video-frames frames through ``lightsr upscale``) and over a folder of images of varying
sizes (the adversarial case for a heap that is never trimmed), both with and without the tuning,
sampled from /proc so growth over the run shows (the last quarter's peak against the second's).

    LIGHTSR_WEIGHTS_MIRROR=/work/shared/weights/official python benchmarks/cpu_speed.py \
        --out benchmarks/results-cpu-speed.json                        # full: ~10 min on 2 quiet cores
    python benchmarks/cpu_speed.py --quick --out /tmp/cpu-speed.json  # 2 models, 2 rounds, 30 frames

Absolute times vary between machines; the ratios of one run are what this file is for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ["bsrn-x4", "emt-x4", "plainusr-x4", "plainusr-u-x4"]
GOALS = {"bsrn-x4": 2.5, "emt-x4": 2.5, "plainusr-x4": 1.4}
"""Issue #15: the default path's speed-up over the naive loop on a 2-vCPU machine."""

# One worker: builds its variant, then answers "run" with one timed call as a JSON line.
_WORKER = r"""
import hashlib, json, resource, sys, time
import numpy as np
import torch
mode, model, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
first_output, backend, precision = sys.argv[5], sys.argv[6], sys.argv[7]
from lightsr_cli.pipeline.bench import synthetic_frame
frame = synthetic_frame(height, width)
if mode == "naive":
    from lightsr_cli import archs, checkpoints, weights
    from lightsr_cli.engine import allocator
    from lightsr_cli.registry import get_card
    card = get_card(model)
    spec = archs.get_spec(card.arch)
    network = archs.build_network(card.arch, card.scale, card.hyperparameters,
                                  checkpoints.load_state_dict(weights.ensure_weights(card).path)).eval()
    def call():
        with torch.no_grad():
            x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None]
            y = network(x * spec.input_range) / spec.input_range
            return (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
else:
    from lightsr_cli import Upscaler
    from lightsr_cli.engine import allocator
    upscaler = Upscaler(model, device="cpu", backend=backend, precision=precision)
    def call():
        return upscaler.upscale(frame)
np.save(first_output, call())
print(json.dumps({"ready": True, "backend": getattr(upscaler.engine, "backend", "torch") if mode != "naive" else "torch",
                  "precision": upscaler.engine.precision if mode != "naive" else "fp32"}),
      flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    tuning = allocator.current_tuning()
    print(json.dumps({"ms": seconds * 1000, "faults": faults, "sha": hashlib.sha1(out.tobytes()).hexdigest(),
                      "tuned": bool(tuning and tuning.applied), "threads": torch.get_num_threads(),
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
"""

VARIANTS = {"naive": {}, "today": {"LIGHTSR_TUNE_ALLOCATOR": "0"}, "lightsr": {}}
BACKENDS = {"naive": "torch", "today": "torch", "lightsr": "auto"}
PRECISIONS = {"naive": "fp32", "today": "fp32", "lightsr": "auto"}
"""today: the torch engine in fp32 as it ran before the allocator tuning; lightsr: the defaults (--backend auto,
--precision auto: fp16 or bf16 for some models on CPUs that multiply it in hardware, see
engine.backends.MEASURED_CPU_HALF)."""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MALLOC_", "GLIBC_TUNABLES", "LIGHTSR_TUNE"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


class Worker:
    def __init__(self, mode: str, model: str, width: int, height: int, first_output: Path) -> None:
        env = _clean_env(VARIANTS[mode])
        self.first_output = first_output
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, "naive" if mode == "naive" else "engine", model,
                                      str(width), str(height), str(first_output), BACKENDS[mode],
                                      PRECISIONS[mode]],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        ready = self._reply()
        self.backend, self.precision = ready["backend"], ready["precision"]

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def measure_model(model: str, width: int, height: int, rounds: int, warmup: int) -> dict:
    import numpy as np

    scratch = Path(tempfile.mkdtemp(prefix="cpu-speed-"))
    workers = {mode: Worker(mode, model, width, height, scratch / f"{mode}.npy") for mode in VARIANTS}
    outputs = {mode: np.load(worker.first_output).astype(int) for mode, worker in workers.items()}
    try:
        for _ in range(warmup):
            first = {mode: worker.run() for mode, worker in workers.items()}
        samples = {mode: [] for mode in workers}
        for _ in range(rounds):
            for mode, worker in workers.items():
                samples[mode].append(worker.run())
    finally:
        for worker in workers.values():
            worker.close()
    row = {"model": model, "input": f"{width}x{height}", "rounds": rounds,
           "threads": samples["naive"][0]["threads"], "lightsr_backend": workers["lightsr"].backend,
           "lightsr_precision": workers["lightsr"].precision}
    for mode, values in samples.items():
        row[f"{mode}_ms"] = round(statistics.median(v["ms"] for v in values), 1)
        row[f"{mode}_faults_per_frame"] = int(statistics.median(v["faults"] for v in values))
        row[f"{mode}_max_rss_mb"] = round(max(v["max_rss_mb"] for v in values), 1)
    for mode in ("today", "lightsr"):
        row[f"{mode}_speedup_vs_naive"] = round(row["naive_ms"] / row[f"{mode}_ms"], 2)
    row["lightsr_vs_today"] = round(row["today_ms"] / row["lightsr_ms"], 2)
    row["naive_process_untouched"] = not any(v["tuned"] for v in samples["naive"])
    row["lightsr_tuned"] = all(v["tuned"] for v in samples["lightsr"])
    row["lightsr_output_equals_today"] = first["today"]["sha"] == first["lightsr"]["sha"]
    # onnxruntime sums in another order: within one 8-bit level of the torch path, not bit-equal.
    row["lightsr_max_level_diff_vs_naive"] = int(np.abs(outputs["lightsr"] - outputs["naive"]).max())
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()
    if model in GOALS:
        row["goal_speedup"] = GOALS[model]
        row["goal_met"] = row["lightsr_speedup_vs_naive"] >= GOALS[model]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


# -- memory over long runs ---------------------------------------------------------------------------

def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sampled_run(command: list[str], env: dict[str, str]) -> dict:
    """Run a command, sampling its resident memory every 0.1 s: the peak, and each quarter's peak."""
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    samples: list[float] = []

    def sample() -> None:
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append(rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    _out, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{command[3:5]} failed: {err[-1500:]}")
    quarter = max(len(samples) // 4, 1)
    peaks = [round(max(samples[i * quarter:(i + 1) * quarter] or samples[-1:]), 1) for i in range(3)]
    peaks.append(round(max(samples[3 * quarter:] or samples[-1:]), 1))
    # The first quarter holds start-up (imports, loading); growth is the last quarter's peak over the second's.
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(max(samples), 1),
            "quarter_peaks_mb": peaks, "growth_mb": round(peaks[3] - peaks[1], 1), "samples": len(samples)}


def _memory_rows(label: str, model: str, inputs: list[str], extra: list[str]) -> dict:
    rows = {"what": label, "model": model}
    for mode in ("today", "lightsr"):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "lightsr_cli", "upscale", *inputs, "--model", model, "--device", "cpu",
                       "-o", out, "-q", *extra]
            rows[mode] = sampled_run(command, _clean_env(VARIANTS[mode]))
    print(json.dumps(rows), file=sys.stderr, flush=True)
    return rows


def video_memory(model: str, frames: int, size: str) -> dict:
    from lightsr_cli.media.video import ffmpeg_exe

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                        "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
        return _memory_rows(f"video, {frames} frames of {size}", model, [str(clip)], [])


def folder_memory(model: str, count: int, cycles: int = 3) -> dict:
    """Images whose sizes jump up and down, the same sequence of sizes ``cycles`` times over: a
    never-trimmed heap that fragmented would grow from one cycle to the next."""
    import numpy as np

    from lightsr_cli.media import images
    from lightsr_cli.pipeline.bench import synthetic_frame

    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(48, 321)), int(rng.integers(32, 241))) for _ in range(max(count // cycles, 1))]
    with tempfile.TemporaryDirectory() as folder:
        for index in range(len(sizes) * cycles):
            width, height = sizes[index % len(sizes)]
            images.write_image(Path(folder) / f"{index:03d}.png", synthetic_frame(height, width),
                               images.ImageEncodeSettings("png"))
        return _memory_rows(f"folder, {len(sizes)} sizes from 48x32 to 320x240 in random order, {cycles} times",
                            model, [folder], [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--size", default="320x180", help="input frame size")
    parser.add_argument("--large", default="bsrn-x4:640x360", help="MODEL:WxH measured as well ('' for none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--video-model", default="bsrn-x4")
    parser.add_argument("--video-frames", type=int, default=100)
    parser.add_argument("--video-size", default="128x72")
    parser.add_argument("--folder-images", type=int, default=24)
    parser.add_argument("--folder-cycles", type=int, default=3, help="times the folder's sizes repeat")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="bsrn-x4 and plainusr-x4, 2 rounds, 30 frames")
    parser.add_argument("--note", default="", help="how the machine was (which CPU, quiet, ...)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.quick:
        args.models, args.rounds, args.warmup, args.large = ["bsrn-x4", "plainusr-x4"], 2, 2, ""
        args.video_frames, args.folder_images = 30, 12
    width, height = (int(v) for v in args.size.lower().split("x"))
    cases = [(model, width, height) for model in args.models]
    if args.large:
        model, _, size = args.large.partition(":")
        cases.append((model, *(int(v) for v in size.lower().split("x"))))
    import torch

    from lightsr_cli.engine.devices import cpu_half_precision  # what auto may use here: results differ with it most

    results = {
        "torch": torch.__version__, "python": platform.python_version(), "libc": "-".join(platform.libc_ver()),
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "note": "median ms per frame of alternating rounds; naive in a clean process; today = the engine with "
                "LIGHTSR_TUNE_ALLOCATOR=0; lightsr = the default path (Upscaler API, as the CLI runs it)",
        "machine_note": args.note, "cpu_half_precision": cpu_half_precision(),
        "models": [measure_model(model, w, h, args.rounds, args.warmup) for model, w, h in cases],
    }
    if not args.skip_memory:
        results["memory"] = [video_memory(args.video_model, args.video_frames, args.video_size),
                             folder_memory(args.video_model, args.folder_images, args.folder_cycles)]
    results["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
