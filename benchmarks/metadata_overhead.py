"""What carrying metadata costs: a folder of 20 small JPEGs upscaled with and without it; write a results file.

"with": every JPEG holds EXIF (camera, dates, GPS, orientation), XMP, IPTC and an ICC profile, and
the run carries them all into the outputs (the default). "without": pixel-identical JPEGs that hold
no metadata, run with --strip-metadata --strip-icc. The difference is reading, rebuilding and
writing the metadata. The two are timed in alternating rounds, in A-B-B-A order (a shared machine's
drifting load falls on both alike, and neither always goes first); the median round of each is
compared, by wall time and by this process's CPU time (less sensitive to other processes' load).
Two networks: the toy nearest-neighbour x2 of the tests (file handling dominates: the worst case for
the ratio) and a real model.

    python benchmarks/metadata_overhead.py --out benchmarks/results-metadata.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightsr_cli.media.metadata import MetadataPolicy  # noqa: E402
from lightsr_cli.pipeline.images import OutputSettings  # noqa: E402
from lightsr_cli.pipeline.jobs import NamingRule, plan_jobs  # noqa: E402
from lightsr_cli.pipeline.run import run_jobs  # noqa: E402
from tests.test_photos import IPTC, P3, XMP, jpeg_iptc, photo_exif, toy_pool  # noqa: E402


def photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like picture: smooth colour gradients plus sensor-like noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([128 + 100 * np.sin(3 * x + c) * np.cos(2 * y - c) for c in range(3)], axis=2)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def make_folders(root: Path, count: int, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    with_meta, without = root / "with", root / "without"
    with_meta.mkdir()
    without.mkdir()
    for index in range(count):
        pixels = Image.fromarray(photo(rng, size))
        pixels.save(with_meta / f"p{index:02d}.jpg", quality=92, exif=photo_exif(1, size, size), xmp=XMP,
                    icc_profile=P3, extra=jpeg_iptc(IPTC))
        pixels.save(without / f"p{index:02d}.jpg", quality=92)
    return with_meta, without


def one_round(pool, folder: Path, out: Path, policy: MetadataPolicy) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for upscaling every file of ``folder``."""
    jobs = plan_jobs([str(folder)], out, NamingRule("_up", None), False, True, False).jobs
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = run_jobs(pool, jobs, OutputSettings(overwrite=True, metadata=policy))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert not summary.failed, summary.failed
    return seconds, cpu


def measure(pool, with_meta: Path, without: Path, out: Path, rounds: int) -> dict:
    carried, stripped = [], []
    runs = {"with": lambda: carried.append(one_round(pool, with_meta, out / "a", MetadataPolicy())),
            "without": lambda: stripped.append(one_round(pool, without, out / "b",
                                                         MetadataPolicy(strip=True, strip_icc=True)))}
    one_round(pool, with_meta, out / "warm", MetadataPolicy())  # warm-up: imports, first allocations
    one_round(pool, without, out / "warm", MetadataPolicy(strip=True, strip_icc=True))
    for index in range(rounds):
        for name in ("with", "without") if index % 2 == 0 else ("without", "with"):
            runs[name]()
    figures: dict = {"rounds": rounds}
    for kind, position in (("wall", 0), ("cpu", 1)):
        with_s = statistics.median(r[position] for r in carried)
        without_s = statistics.median(r[position] for r in stripped)
        figures[kind] = {"with_metadata_s": [round(r[position], 4) for r in carried],
                         "without_metadata_s": [round(r[position], 4) for r in stripped],
                         "median_with_s": round(with_s, 4), "median_without_s": round(without_s, 4),
                         "added_percent": round(100 * (with_s - without_s) / without_s, 2)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="side of each square JPEG in pixels")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default="plainusr-u-x4", help="the real model (empty to skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared machine, waiting threads spin and add noise)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-metadata.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = {"files": args.files, "size": f"{args.size}x{args.size}", "torch_threads": args.threads,
               "command": "python benchmarks/metadata_overhead.py " + " ".join(sys.argv[1:]),
               "python": platform.python_version(),
               "machine": platform.machine(), "networks": {}}
    with tempfile.TemporaryDirectory() as temp:
        with_meta, without = make_folders(Path(temp), args.files, args.size)
        results["networks"]["toy-nearest-x2"] = measure(toy_pool(), with_meta, without, Path(temp), args.rounds)
        if args.model:
            from lightsr_cli.pipeline.loading import EngineSettings, load_pool
            from lightsr_cli.registry import resolve_model

            pool = load_pool(resolve_model(args.model, None, None), EngineSettings(device="cpu"))
            results["networks"][args.model] = measure(pool, with_meta, without, Path(temp), args.rounds)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, figures in results["networks"].items():
        for kind in ("wall", "cpu"):
            f = figures[kind]
            print(f"{name} ({kind}): {f['median_with_s']:.3f} s with metadata, {f['median_without_s']:.3f} s "
                  f"without: {f['added_percent']:+.2f}%")


if __name__ == "__main__":
    main()
