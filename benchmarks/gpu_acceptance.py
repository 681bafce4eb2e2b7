"""The GPU path, proven in one call (issues #15 part 3 and #16): one command, one JSON result.

Needs the checkout plus weights and a benchmark set staged beside it in the git-ignored folder
``.device-data/`` (see benchmarks/stage_device_data.sh):

    .device-data/weights/<ARCH>/<official file>     (a LIGHTSR_WEIGHTS_MIRROR folder)
    .device-data/benchmarks/Set5/x4/{LR,HR}/*.png

    benchmarks/gpu_acceptance.sh                          # ~5 min on an H100/H200 -> benchmarks/results-gpu-acceptance.json
    benchmarks/gpu_acceptance.sh --dry-run --out /tmp/dry.json     # CPU, tiny sizes (CI runs this in its tests)

(the .sh only runs this file with python3, or $PYTHON).

Every check is recorded as {"status": "pass" | "fail" | "skip", ...} with its numbers; a check that
raises is a "fail" with the error, and the rest still run. The exit code is 1 when any check failed.
``--dry-run`` runs the same code on the CPU with tiny sizes and random weights where none are
staged, so the script cannot rot between GPU runs; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lightsr_cli import __version__, archs, checkpoints, weights  # noqa: E402
from lightsr_cli.engine import Engine, EnginePool  # noqa: E402
from lightsr_cli.errors import LightsrError  # noqa: E402
from lightsr_cli.media import images  # noqa: E402
from lightsr_cli.metrics import psnr_y  # noqa: E402
from lightsr_cli.pipeline.bench import benchmark, synthetic_frame  # noqa: E402
from lightsr_cli.pipeline.evaluation import evaluate  # noqa: E402
from lightsr_cli.registry import get_card  # noqa: E402

ARCH_CARDS = ["bsrn-x4", "a2n-x4", "emt-x4", "plainusr-x4", "grl-small-x4"]
QUALITY_CARDS = ARCH_CARDS + ["bsrn-s-x4", "plainusr-u-x4", "grl-tiny-x4", "grl-base-x4"]
SPEED_CARDS = ["bsrn-x4", "plainusr-x4", "plainusr-u-x4"]
# A dry run exercises the code, not the networks: the two cheapest on a CPU (EMT and GRL take
# tens of seconds per forward there even at 24x40).
DRY_CARDS = ["bsrn-s-x4", "plainusr-u-x4"]


class Run:
    def __init__(self, args) -> None:
        self.dry = args.dry_run
        self.data = args.data
        self.device = "cpu" if self.dry else args.device
        self.results: dict = {}
        self.random_weights: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------
    def network(self, card_id: str) -> nn.Module:
        """The card's network with staged weights; random weights in a dry run when none are staged."""
        card = get_card(card_id)
        try:
            path = weights.ensure_weights(card).path
            return archs.build_network(card.arch, card.scale, card.hyperparameters, checkpoints.load_state_dict(path))
        except Exception:
            if not self.dry:
                raise
            self.random_weights.add(card_id)
            torch.manual_seed(0)
            return archs.get_spec(card.arch).build(scale=card.scale, **dict(card.hyperparameters)).eval()

    def engine(self, card_id: str, **settings) -> Engine:
        card = get_card(card_id)
        settings.setdefault("device", self.device)
        return Engine(self.network(card_id), archs.get_spec(card.arch), card.scale, **settings)

    def side(self, full: int, dry: int) -> int:
        return dry if self.dry else full

    def check(self, name: str, body) -> None:
        started = time.perf_counter()
        try:
            result = body() or {}
            result.setdefault("status", "pass")
        except Exception as error:  # noqa: BLE001 - one failed check must not hide the others
            result = {"status": "fail", "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc(limit=4)}
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.results[name] = result
        print(f"{name}: {result['status']} ({result['seconds']} s)", file=sys.stderr, flush=True)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    # -- checks -------------------------------------------------------------------------------
    def cuda_tests(self) -> dict:
        """Every CUDA-marked test of the suite (they skip without a GPU)."""
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                               str(REPO / "tests")], cwd=REPO, capture_output=True, text=True, timeout=300)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        return {"status": "pass" if proc.returncode == 0 else "fail", "summary": tail[0],
                **({"output": proc.stdout[-3000:]} if proc.returncode else {})}

    def quality(self) -> dict:
        """Set5 PSNR-Y of every architecture in its half precision against fp32 (within 0.05 dB)."""
        dataset = self.data / "benchmarks" / "Set5"
        if not dataset.is_dir():
            if not self.dry:
                return {"status": "skip", "reason": f"{dataset} is not staged"}
            dataset = _synthetic_set(Path(tempfile.mkdtemp()), 4)
        rows, worst = [], 0.0
        for card_id in QUALITY_CARDS if not self.dry else DRY_CARDS:
            try:
                fp32 = evaluate(self.engine(card_id, precision="fp32"), dataset).psnr_y
            except LightsrError as error:  # weights not staged
                rows.append({"model": card_id, "status": "skip", "reason": str(error)})
                continue
            for precision in ("fp16", "bf16"):
                engine = self.engine(card_id, precision=precision)
                half = evaluate(engine, dataset).psnr_y
                rows.append({"model": card_id, "precision": engine.precision, "fp32_psnr_y": round(fp32, 4),
                             "psnr_y": round(half, 4), "delta_db": round(half - fp32, 4),
                             "fp32_fallbacks": engine.stats.fp32_fallbacks})
                worst = max(worst, abs(half - fp32))
        return {"status": "pass" if worst <= 0.05 else "fail", "worst_delta_db": round(worst, 4), "rows": rows}

    def parity(self) -> dict:
        """Every architecture, auto precision, against CPU fp32: tile 0 and 64, batch 2, uint8 and float
        inputs; finite output, no fp32 fallbacks, bit-identical repeats, memory peak against the estimate."""
        rows, ok = [], True
        height, width = self.side(180, 24), self.side(320, 40)
        pair = [synthetic_frame(height, width), synthetic_frame(height, width)[::-1].copy()]
        frames = torch.from_numpy(np.stack(pair))
        frames = frames.permute(0, 3, 1, 2).contiguous()
        for card_id in ARCH_CARDS if not self.dry else DRY_CARDS:
            network = self.network(card_id)
            card, spec = get_card(card_id), archs.get_spec(get_card(card_id).arch)
            reference = Engine(network, spec, card.scale, device="cpu", precision="fp32", tile=0).upscale(frames)
            for tile in (0, 64):
                for as_uint8 in (True, False):
                    engine = Engine(network, spec, card.scale, device=self.device, tile=tile, batch=2)
                    if self.device.startswith("cuda"):
                        torch.cuda.reset_peak_memory_stats()
                    inputs = frames if as_uint8 else frames.float() / 255
                    first = engine.upscale(inputs, to_uint8=as_uint8)
                    again = engine.upscale(inputs, to_uint8=as_uint8)
                    out = first.float() / 255 if as_uint8 else first
                    diff = (out.clamp(0, 1) - reference.clamp(0, 1)).abs()
                    row = {"model": card_id, "precision": engine.precision, "tile": tile, "uint8": as_uint8,
                           "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                           "finite": bool(torch.isfinite(out).all()), "fp32_fallbacks": engine.stats.fp32_fallbacks,
                           "repeat_identical": bool(torch.equal(first, again)), "notes": engine.stats.notes}
                    if self.device.startswith("cuda") and tile == 0:
                        estimate = spec.bytes_per_pixel(engine.dtype) * 2 * height * width
                        row["peak_over_estimate"] = round(torch.cuda.max_memory_allocated() / estimate, 3)
                    row["ok"] = (row["finite"] and not row["fp32_fallbacks"] and row["repeat_identical"]
                                 and row["mean_abs_diff"] < 0.01)
                    ok &= row["ok"]
                    rows.append(row)
        return {"status": "pass" if ok else "fail", "rows": rows}

    def sanitizer(self) -> dict:
        """One tiled job under TORCH_CUDA_SANITIZER=1 (stream-ordering races are reported and fail it)."""
        if not self.device.startswith("cuda"):
            return {"status": "skip", "reason": "the CUDA sanitizer needs a GPU"}
        code = ("import torch,sys; sys.path.insert(0, %r); from benchmarks.gpu_acceptance import _sanitized_job; "
                "_sanitized_job()" % str(REPO))
        env = {**os.environ, "TORCH_CUDA_SANITIZER": "1"}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        racy = "CSAN" in proc.stderr or "data race" in proc.stderr.lower()
        return {"status": "pass" if proc.returncode == 0 and not racy else "fail", "returncode": proc.returncode,
                "stderr_tail": proc.stderr[-2000:]}

    def forced_overflow(self) -> dict:
        """A network that overflows in half precision: the batch is recomputed in fp32, output finite."""
        engine = Engine(_Overflows(), _toy_spec(), 2, device=self.device, precision="fp16" if not self.dry else "bf16")
        out = engine.upscale(torch.rand(2, 3, 40, 40))
        ok = bool(torch.isfinite(out).all()) and engine.stats.fp32_fallbacks >= 1
        return {"status": "pass" if ok else "fail", "fp32_fallbacks": engine.stats.fp32_fallbacks}

    def bsrn_4k(self) -> dict:
        """BSRN x2 fp16 on a 3840x2160 input, whole (the engine may tile past 2^31 elements) vs 512 px tiles."""
        height, width = self.side(2160, 48), self.side(3840, 64)
        frame = torch.from_numpy(synthetic_frame(height, width)).permute(2, 0, 1)[None].contiguous()
        precision = "fp16" if not self.dry else "fp32"
        model = "bsrn-x2" if not self.dry else DRY_CARDS[0]
        whole = self.engine(model, precision=precision, tile=0)
        tiled = self.engine(model, precision=precision, tile=self.side(512, 24))
        a, b = whole.upscale(frame, to_uint8=True), tiled.upscale(frame, to_uint8=True)
        psnr = psnr_y(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(), 2)
        return {"status": "pass" if psnr >= 40 else "fail", "whole_vs_tiled_psnr_y": round(psnr, 2),
                "whole_tiles": whole.stats.tiles, "notes": whole.stats.notes + tiled.stats.notes}

    def oom_recovery(self) -> dict:
        """With 10% of the GPU, an image too large for it: recovered by smaller tiles, twice in a row,
        the second time without another out-of-memory (the working tile is remembered)."""
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(0.1)
            engine, side = self.engine("bsrn-x4", precision="fp32"), 1800
        else:
            engine, side = Engine(_SmallMemory(), _toy_spec(), 2, device="cpu"), 96
        frame = torch.from_numpy(synthetic_frame(side, side)).permute(2, 0, 1)[None].contiguous()
        try:
            engine.upscale(frame, to_uint8=True)
            first = engine.stats.oom_retries
            engine.upscale(frame, to_uint8=True)
            second = engine.stats.oom_retries - first
        finally:
            if self.device.startswith("cuda"):
                torch.cuda.set_per_process_memory_fraction(1.0)
                torch.cuda.empty_cache()
        ok = first >= 1 and second == 0
        return {"status": "pass" if ok else "fail", "first_call_retries": first, "second_call_retries": second,
                "tile": engine.stats.tile, "notes": engine.stats.notes}

    def two_engines(self) -> dict:
        """Two engines on one GPU sharing frames, eager and compiled: same frames as one engine."""
        height, width = self.side(180, 24), self.side(320, 32)
        frames = [torch.from_numpy(synthetic_frame(height, width + 2 * i)).permute(2, 0, 1)[None].contiguous()
                  for i in range(4)]
        rows = {}
        for compiled in (False, True):
            if compiled and self.dry:
                rows["compiled"] = {"status": "skip", "reason": "inductor compile is too slow for a dry run"}
                continue
            model = "bsrn-x4" if not self.dry else DRY_CARDS[0]
            pool = EnginePool([self.engine(model, compile=compiled) for _ in range(2)])
            single = self.engine(model, compile=compiled)
            together = list(pool.map_ordered(lambda engine, frame: engine.upscale(frame, to_uint8=True), frames))
            alone = [single.upscale(frame, to_uint8=True) for frame in frames]
            same = all(torch.equal(a, b) for a, b in zip(together, alone, strict=True))
            rows["compiled" if compiled else "eager"] = {
                "status": "pass" if same else "fail", "identical": same,
                "compiled_graphs": [e.stats.compiled_graphs for e in pool.engines],
                "graph_breaks": [e.stats.graph_breaks for e in pool.engines],
                "notes": pool.notes}
        ok = all(row["status"] != "fail" for row in rows.values())
        return {"status": "pass" if ok else "fail", **rows}

    def bench_vs_events(self) -> dict:
        """`lightsr bench`'s model-only figure against events (or a clock) around the network alone."""
        rows = []
        width, height = (1280, 720) if not self.dry else (96, 64)
        for card_id in SPEED_CARDS if not self.dry else DRY_CARDS:
            engine = self.engine(card_id)
            result = benchmark(engine, width, height, repeats=3)
            x = torch.rand(1, 3, height // engine.scale, width // engine.scale, device=engine.device)
            x = (x * engine.spec.input_range).to(engine.dtype)
            if engine.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            network = engine._eager_network
            with torch.inference_mode():
                network(x)
                self.sync()
                samples = []
                for _ in range(5):
                    if engine.device.type == "cuda":
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        network(x)
                        end.record()
                        torch.cuda.synchronize()
                        samples.append(start.elapsed_time(end))
                    else:
                        started = time.perf_counter()
                        network(x)
                        samples.append((time.perf_counter() - started) * 1000)
            direct = float(np.median(samples))
            rows.append({"model": card_id, "bench_model_ms": round(result.model_ms_per_frame, 3),
                         "events_ms": round(direct, 3), "ratio": round(result.model_ms_per_frame / direct, 3),
                         "end_to_end_ms": round(result.end_to_end_ms_per_frame, 3),
                         "peak_memory_mb": round(result.peak_memory_mb, 1)})
        ok = self.dry or all(0.8 <= row["ratio"] <= 1.25 for row in rows)
        return {"status": "pass" if ok else "fail", "rows": rows}

    def speed(self) -> dict:
        """Engine vs naive fp32 (goal >= 3x), MP/s, video end to end vs model-only (goal >= 80%)."""
        out = Path(tempfile.mkdtemp()) / "speed.json"
        size, tiling = ("1280x720", "2560x1440") if not self.dry else ("96x64", "128x96")
        models = SPEED_CARDS if not self.dry else ["bsrn-s-x4"]
        command = [sys.executable, str(REPO / "benchmarks" / "engine_vs_naive.py"), "--models", *models, "--size", size,
                   "--tiling-size", tiling, "--device", self.device, "--rounds", "5" if not self.dry else "1",
                   "--out", str(out), "--video", models[0]]
        if not self.dry:
            command += ["--compile"]
        else:  # the video pipeline end to end on a tiny clip, so its measurement cannot rot either
            command += ["--video-clip", "64x36", "--video-seconds", "0.5", "--batch", "2"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        if proc.returncode:
            return {"status": "fail", "stderr": proc.stderr[-2000:]}
        measured = json.loads(out.read_text())
        floors = json.loads((REPO / "benchmarks" / "results-memory-floor.json").read_text())
        goals = {f"{row['model']}_engine_vs_naive_ge_3x": row["engine_speedup_vs_naive"] >= 3
                 for row in measured["models"]}
        goals["video_end_to_end_ge_80pct_of_model"] = measured["video"]["end_to_end_over_model"] >= 0.8
        met = all(goals.values())
        return {"status": "pass" if met or self.dry else "fail", "goals_met": goals, "engine_vs_naive": measured,
                "memory_floor": floors,
                "goals": "engine >= 3x naive fp32 for each model; video end to end >= 80% of model-only fps"
                         + (" (not judged in a dry run)" if self.dry else "")}

    def onnxruntime(self) -> dict:
        """ONNX Runtime's providers, and a toy network exported to ONNX run on each GPU provider
        present (CUDA, TensorRT; the CPU provider in a dry run) against torch's output."""
        try:
            import onnxruntime
        except ImportError:
            return {"status": "skip", "reason": "onnxruntime not installed"}
        available = onnxruntime.get_available_providers()
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if self.dry:
            wanted.append("CPUExecutionProvider")
        result = {"version": onnxruntime.__version__, "providers": available, "runs": {}}
        if not wanted:
            return {"status": "skip", "reason": "no CUDA or TensorRT provider", **result}
        network, x = _Toy().eval(), torch.rand(1, 3, 40, 48)
        path = Path(tempfile.mkdtemp()) / "toy.onnx"
        try:
            torch.onnx.export(network, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h2", 3: "w2"}})
        except Exception as error:  # noqa: BLE001 - no exporter (onnx missing): say so, do not fail
            return {"status": "skip", "reason": f"torch.onnx.export: {type(error).__name__}: {error}", **result}
        with torch.inference_mode():
            expected = network(x).numpy()
        ok = True
        for provider in wanted:
            session = onnxruntime.InferenceSession(str(path), providers=[provider])
            got = session.run(None, {"x": x.numpy()})[0]
            diff = float(np.abs(got - expected).max())
            result["runs"][provider] = {"used": session.get_providers()[0], "max_abs_diff": diff}
            ok &= diff <= 1e-3 and session.get_providers()[0] == provider
        return {"status": "pass" if ok else "fail", **result}


# -- stand-in networks ---------------------------------------------------------------------------------

class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x))


class _Overflows(_Toy):
    def forward(self, x):
        y = super().forward(x)
        return y * torch.finfo(y.dtype).max * 4 if x.dtype != torch.float32 else y  # inf in fp16 and bf16


class _SmallMemory(_Toy):
    """Stand-in for a small GPU in a dry run: passes over 48x48 px raise out-of-memory."""

    def forward(self, x):
        if x.shape[-1] * x.shape[-2] > 48 * 48:
            raise RuntimeError("CUDA out of memory (stand-in)")
        return super().forward(x)


def _toy_spec():
    return archs.spec.ArchSpec(name="Toy", build=lambda scale: _Toy(), input_range=1.0, min_size=1, size_multiple=1,
                               tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)


def _sanitized_job() -> None:
    """Run in a subprocess under TORCH_CUDA_SANITIZER=1: one tiled batch job on the GPU."""
    engine = Engine(_Toy(), _toy_spec(), 2, device="cuda", tile=32, batch=2)
    engine.upscale(torch.rand(3, 3, 100, 90), to_uint8=True)
    engine.upscale(torch.rand(3, 3, 100, 90))
    torch.cuda.synchronize()


def _synthetic_set(root: Path, scale: int) -> Path:
    """A two-image benchmark set (DATASET/x<scale>/{LR,HR}) for dry runs."""
    for name, side in (("a.png", 16), ("b.png", 20)):
        hr = synthetic_frame(side * scale, side * scale)
        for folder, pixels in (("HR", hr), ("LR", hr[::scale, ::scale].copy())):
            (root / f"x{scale}" / folder).mkdir(parents=True, exist_ok=True)
            images.write_image(root / f"x{scale}" / folder / name, pixels, images.ImageEncodeSettings("png"))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".device-data")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results-gpu-acceptance.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, random weights where none are staged")
    parser.add_argument("--only", nargs="*", help="run only these checks")
    args = parser.parse_args()
    if (args.data / "weights").is_dir():
        os.environ.setdefault("LIGHTSR_WEIGHTS_MIRROR", str(args.data / "weights"))
    os.environ.setdefault("LIGHTSR_OFFLINE", "1")
    run = Run(args)
    if not run.dry and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run to exercise the script on the CPU)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    checks = ["cuda_tests", "parity", "forced_overflow", "oom_recovery", "bsrn_4k", "two_engines",
              "bench_vs_events", "quality", "sanitizer", "speed", "onnxruntime"]
    for name in args.only or checks:
        run.check(name, getattr(run, name))
    failed = [name for name, result in run.results.items() if result["status"] == "fail"]
    report = {
        "lightsr": __version__, "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": run.dry,
        "device": torch.cuda.get_device_name(run.device) if run.device.startswith("cuda") else platform.processor(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
        "random_weights": sorted(run.random_weights), "failed": failed, "checks": run.results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"{len(run.results) - len(failed)} of {len(run.results)} checks passed or skipped; wrote {args.out}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
