"""What --dedup exact saves end to end on a clip where half the frames repeat; write a results file.

The clip: N distinct pictures (smooth gradients plus noise, like a frame of a film), each shown
twice in a row, so 50% of the frames repeat the one before (as in anime on twos, or a screen
recording), encoded losslessly (ffv1, RGB) so the decoded repeats are bit-identical. One engine
is loaded once; each round runs the whole video job (decode, upscale, encode, join) with and
without ``--dedup exact``, in alternating A-B-B-A order (a shared machine's drifting load falls on
both alike). The median round of each is compared, by wall time and by this process's CPU time
(less sensitive to other processes' load); the outputs are checked to hold the same frames.

    LIGHTSR_WEIGHTS_MIRROR=/work/shared/weights/official \\
        python benchmarks/dedup_speedup.py --out benchmarks/results-dedup.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightsr_cli.checkpoints import resolve_card  # noqa: E402
from lightsr_cli.media import video  # noqa: E402
from lightsr_cli.pipeline.dedup import DedupSettings  # noqa: E402
from lightsr_cli.pipeline.images import OutputSettings  # noqa: E402
from lightsr_cli.pipeline.jobs import Job, MediaKind  # noqa: E402
from lightsr_cli.pipeline.loading import EngineSettings, load_pool  # noqa: E402
from lightsr_cli.pipeline.video import VideoSettings, run_video_job  # noqa: E402
from lightsr_cli.progress import NullReporter  # noqa: E402


def picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.uniform(0, 6, 3)
    base = np.stack([128 + 100 * np.sin(3 * x + p) * np.cos(2 * y - p) for p in phase], axis=2)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def make_clip(path: Path, frames: int, height: int, width: int) -> Path:
    rng = np.random.default_rng(0)
    pictures = [picture(rng, height, width) for _ in range((frames + 1) // 2)]
    options = video.VideoEncodeSettings(codec="ffv1", pix_fmt="gbrp")
    with video.FrameWriter(path, Fraction(24000, 1001), options=options) as writer:
        for index in range(frames):
            writer.write(pictures[index // 2])
    return path


def one_round(pool, source: Path, target: Path, dedup: DedupSettings, batch_codec: str) -> dict:
    settings = VideoSettings(encode=video.VideoEncodeSettings(codec=batch_codec), dedup=dedup)
    target.unlink(missing_ok=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run_video_job(pool, Job(source, target, MediaKind.VIDEO), OutputSettings(overwrite=True), settings,
                           NullReporter())
    return {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu_started,
            "inference": result.inference_seconds,
            "upscaled": result.frames_upscaled, "frames": result.frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bsrn-x2", help="bsrn-x2: the balanced x2 preset")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="320x180", help="WIDTHxHEIGHT of the source")
    parser.add_argument("--rounds", type=int, default=2, help="A-B-B-A rounds (each runs both twice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--codec", default="ffv1", help="output encoder (ffv1: lossless, so outputs compare)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-dedup.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    card = resolve_card(args.model, None, None, None)
    pool = load_pool(card, EngineSettings(device=args.device, batch=args.batch))
    runs: dict[str, list[dict]] = {"off": [], "exact": []}
    modes = {"off": DedupSettings(), "exact": DedupSettings("exact")}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = make_clip(root / "repeats.mkv", args.frames, height, width)
        one_round(pool, source, root / "warm.mkv", modes["off"], args.codec)  # first-call costs out of the way
        for _ in range(args.rounds):
            for name in ("off", "exact", "exact", "off"):
                runs[name].append(one_round(pool, source, root / f"{name}.mkv", modes[name], args.codec))
                print(f"{name}: {runs[name][-1]['wall']:.3f} s", file=sys.stderr, flush=True)
        same = (args.codec != "ffv1" or np.array_equal(np.stack(list(video.FrameReader(root / "off.mkv"))),
                                                       np.stack(list(video.FrameReader(root / "exact.mkv")))))
    median = {name: statistics.median(r["wall"] for r in rounds) for name, rounds in runs.items()}
    cpu = {name: statistics.median(r["cpu"] for r in rounds) for name, rounds in runs.items()}
    result = {
        "what": "end-to-end seconds of one video job (decode, upscale, encode, join), 50% repeated frames, "
                "with and without --dedup exact; median of alternating rounds",
        "command": "LIGHTSR_WEIGHTS_MIRROR=/work/shared/weights/official python benchmarks/dedup_speedup.py "
                   + " ".join(sys.argv[1:]),
        "model": card.id, "device": str(pool.primary.device), "batch": args.batch, "source": f"{width}x{height}",
        "frames": args.frames, "frames_upscaled_with_dedup": runs["exact"][0]["upscaled"],
        "median_seconds": {name: round(value, 3) for name, value in median.items()},
        "all_seconds": {name: [round(r["wall"], 3) for r in rounds] for name, rounds in runs.items()},
        "speedup": round(median["off"] / median["exact"], 3),
        "median_cpu_seconds": {name: round(value, 3) for name, value in cpu.items()},
        "speedup_cpu_time": round(cpu["off"] / cpu["exact"], 3),
        "outputs_equal": bool(same),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "note": "measured on a shared 2-core machine (other jobs running): noisy, preliminary; the CPU time "
                "(this process: decoding and encoding run in ffmpeg child processes) is less sensitive to that load",
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
