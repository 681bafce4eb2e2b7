"""What carrying metadata costs: a folder of 20 small JPEGs upscaled with and without it; write a results file.

"with": every JPEG holds EXIF (camera, dates, GPS, orientation), XMP, IPTC and an ICC profile, and
the run carries them all into the outputs (the default). "without": pixel-identical JPEGs that hold
no metadata, run with --strip-metadata --strip-icc. Two measures:

- direct (the target's measure): during the "with" rounds, the CPU time of this thread spent in the
  metadata work itself (reading the blocks, the EXIF orientation, for_output, building the save
  options with the updated EXIF, PNG chunks), per file, against the whole run's CPU time per file
  (decode, model, encode, write). Per-thread CPU clocks are not moved by other processes' load.
- difference: the two folders timed in alternating rounds, in A-B-B-A order (a shared machine's
  drifting load falls on both alike, and neither always goes first); the median round of each is
  compared, by wall time and by this process's CPU time. It also holds what the direct measure
  cannot isolate (Pillow parsing the extra segments while opening, libjpeg writing them), but on a
  shared machine its noise is larger than the effect.

Networks: the toy nearest-neighbour x2 of the tests (file handling only: no real run is this cheap),
then real models run as the CLI runs them: bsrn-x4, what `lightsr upscale FOLDER` runs by default
(the balanced preset), and plainusr-u-x4, the fastest model (the worst case for the ratio).

    python benchmarks/metadata_overhead.py --out benchmarks/results-metadata.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightsr_cli.media import images, metadata  # noqa: E402
from lightsr_cli.media.metadata import MetadataPolicy  # noqa: E402
from lightsr_cli.pipeline.images import OutputSettings  # noqa: E402
from lightsr_cli.pipeline.jobs import NamingSettings, plan_jobs  # noqa: E402
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
    jobs = plan_jobs([str(folder)], out, NamingSettings("_up", None), False, True, False).jobs
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = run_jobs(pool, jobs, OutputSettings(overwrite=True, metadata=policy))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert not summary.failed, summary.failed
    return seconds, cpu


METADATA_WORK = [(metadata, "read_metadata"), (metadata, "orientation"), (metadata, "for_output"),
                 (metadata, "pillow_save_options"), (images, "png_with_metadata")]


@contextmanager
def metadata_clock(spent: list[float]):
    """Add the calling thread's CPU time inside every metadata function to ``spent[0]`` (outermost calls only;
    the run reads and writes on their own threads, so the nesting depth is counted per thread)."""
    nesting = threading.local()
    guard = threading.Lock()
    originals = [(module, name, getattr(module, name)) for module, name in METADATA_WORK]

    def timed(function):
        def wrapper(*args, **kwargs):
            nesting.depth = getattr(nesting, "depth", 0) + 1
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                nesting.depth -= 1
                if nesting.depth == 0:
                    with guard:
                        spent[0] += time.thread_time() - started
        return wrapper

    for module, name, function in originals:
        setattr(module, name, timed(function))
    try:
        yield
    finally:
        for module, name, function in originals:
            setattr(module, name, function)


def measure(pool, with_meta: Path, without: Path, out: Path, rounds: int, files: int) -> dict:
    carried, stripped, direct = [], [], []

    def with_round():
        spent = [0.0]
        with metadata_clock(spent):
            carried.append(one_round(pool, with_meta, out / "a", MetadataPolicy()))
        direct.append(spent[0])

    runs = {"with": with_round,
            "without": lambda: stripped.append(one_round(pool, without, out / "b",
                                                         MetadataPolicy(strip=True, strip_icc=True)))}
    one_round(pool, with_meta, out / "warm", MetadataPolicy())  # warm-up: imports, first allocations
    one_round(pool, without, out / "warm", MetadataPolicy(strip=True, strip_icc=True))
    for index in range(rounds):
        for name in ("with", "without") if index % 2 == 0 else ("without", "with"):
            runs[name]()
    figures: dict = {"rounds": rounds}
    per_file_ms = statistics.median(direct) / files * 1e3
    total_ms = statistics.median(r[1] for r in carried) / files * 1e3
    figures["direct"] = {"metadata_cpu_ms_per_file": round(per_file_ms, 4),
                         "run_cpu_ms_per_file": round(total_ms, 3),
                         "metadata_share_percent": round(100 * per_file_ms / total_ms, 2),
                         "metadata_cpu_s_per_round": [round(d, 5) for d in direct]}
    for kind, position in (("wall", 0), ("cpu", 1)):
        with_s = statistics.median(r[position] for r in carried)
        without_s = statistics.median(r[position] for r in stripped)
        figures[kind] = {"with_metadata_s": [round(r[position], 4) for r in carried],
                         "without_metadata_s": [round(r[position], 4) for r in stripped],
                         "median_with_s": round(with_s, 4), "median_without_s": round(without_s, 4),
                         "added_percent": round(100 * (with_s - without_s) / without_s, 2),
                         # the fastest round of each: the least disturbed by other processes
                         "added_percent_fastest_rounds": round(100 * (min(r[position] for r in carried) / min(
                             r[position] for r in stripped) - 1), 2)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="side of each square JPEG in pixels")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--models", nargs="*", default=["bsrn-x4", "plainusr-u-x4"],
                        help="real models (none to skip): the CLI's default and the fastest")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared machine, waiting threads spin and add noise)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-metadata.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = {"files": args.files, "size": f"{args.size}x{args.size}", "torch_threads": args.threads,
               "command": "python benchmarks/metadata_overhead.py " + " ".join(sys.argv[1:]),
               "python": platform.python_version(),
               "machine": platform.machine(), "cpus": os.cpu_count(),
               "load_average_at_start": os.getloadavg(), "networks": {}}
    with tempfile.TemporaryDirectory() as temp:
        with_meta, without = make_folders(Path(temp), args.files, args.size)
        results["networks"]["toy-nearest-x2"] = measure(toy_pool(), with_meta, without, Path(temp), args.rounds,
                                                         args.files)
        from lightsr_cli.pipeline.loading import EngineSettings, load_pool
        from lightsr_cli.registry import resolve_model

        for model in args.models:
            pool = load_pool(resolve_model(model, None, None), EngineSettings(device="cpu"))
            results["networks"][model] = measure(pool, with_meta, without, Path(temp), args.rounds, args.files)
    results["load_average_at_end"] = os.getloadavg()  # other work on the machine shows up in the wall figures
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, figures in results["networks"].items():
        direct = figures["direct"]
        print(f"{name} (direct): metadata work {direct['metadata_cpu_ms_per_file']:.3f} ms CPU per file of "
              f"{direct['run_cpu_ms_per_file']:.2f} ms: {direct['metadata_share_percent']:.2f}%")
        for kind in ("wall", "cpu"):
            f = figures[kind]
            print(f"{name} ({kind}): {f['median_with_s']:.3f} s with metadata, {f['median_without_s']:.3f} s "
                  f"without: {f['added_percent']:+.2f}% (fastest rounds: {f['added_percent_fastest_rounds']:+.2f}%)")


if __name__ == "__main__":
    main()
