"""Throughput of `lightsr upscale --cluster` with 1 and 2 single-CPU worker nodes, and its overhead on one node.

Starts Ray clusters on this machine with ``ray.cluster_utils.Cluster`` (a head without CPUs, so no
worker runs there, plus N nodes of one CPU each) and runs the real CLI against them, on a folder
of generated images and on one generated video (FFV1, segments of --segment-seconds). Then the
one-node overhead: a plain local run against ``--cluster ray`` (Ray started on this machine, one
worker with all its CPUs), the same inputs.

Throughput is taken from each run's --json summary: output megapixels over the run's ``seconds``,
which span the jobs (sending, upscaling, writing, joining) but not Ray's start-up and the
workers' model loading, a fixed cost per command that is reported beside as ``command_seconds``.
Each configuration runs --rounds times; the median counts.

    python benchmarks/cluster_scaling.py --out benchmarks/results-cluster-scaling.json

Needs the ray extra (pip install 'lightsr[ray]') and at least 3 free cores for the 2-node figures
to mean anything: the driver, two workers and Ray's own processes share this machine's CPUs.
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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, count: int, size: tuple[int, int], video_size: tuple[int, int], frames: int) -> tuple[Path, Path]:
    import cv2

    from lightsr_cli.media import video

    photos = folder / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    width, height = size
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    for index in range(count):  # smooth-ish content, each image different
        image = cv2.resize(np.roll(base, index, axis=1), (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(photos / f"photo_{index:03d}.png"), image)
    clip = folder / "clip" / "clip.mkv"
    clip.parent.mkdir()
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={video_size[0]}x{video_size[1]}:rate=24", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    return photos, clip


def run_lightsr(inputs: Path, out: Path, args: list[str], env: dict) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lightsr_cli", "upscale", str(inputs), "-o", str(out),
                             "--overwrite", "--json", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"lightsr failed ({result.returncode}): {result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    return {"seconds": report["seconds"], "command_seconds": round(time.perf_counter() - started, 3),
            "megapixels_out": report["megapixels_out"], "cluster": report.get("cluster")}


def median_of(runs: list[dict]) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    megapixels = runs[0]["megapixels_out"]
    return {"seconds": round(seconds, 3), "megapixels_out_per_second": round(megapixels / seconds, 4),
            "command_seconds": round(statistics.median(r["command_seconds"] for r in runs), 3),
            "all_seconds": [r["seconds"] for r in runs], "nodes": runs[-1]["cluster"]["nodes"]
            if runs[-1]["cluster"] else None}


def scaling(work: Path, photos: Path, clip: Path, common: list[str], video_args: list[str], rounds: int,
            env: dict) -> dict:
    from ray.cluster_utils import Cluster

    results = {}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for nodes in (1, 2):
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            node_env = {**env, "RAY_ADDRESS": cluster.address}
            args = [*common, "--cluster", "auto", "--cluster-files", "transfer"]
            results[f"{nodes}_worker_nodes"] = {
                "images": median_of([run_lightsr(photos, work / "out-images", args, node_env) for _ in range(rounds)]),
                "video": median_of([run_lightsr(clip, work / "out-video", [*args, *video_args], node_env)
                                    for _ in range(rounds)]),
            }
            print(json.dumps({nodes: {k: v["megapixels_out_per_second"] for k, v in
                                      results[f"{nodes}_worker_nodes"].items()}}), file=sys.stderr)
    finally:
        cluster.shutdown()
    for kind in ("images", "video"):
        one = results["1_worker_nodes"][kind]["megapixels_out_per_second"]
        two = results["2_worker_nodes"][kind]["megapixels_out_per_second"]
        results[f"{kind}_speedup_1_to_2"] = round(two / one, 3)
    return results


def overhead(work: Path, photos: Path, common: list[str], rounds: int, env: dict) -> dict:
    """Local run against --cluster ray on this one node, alternating so drifting load falls on both."""
    local, cluster = [], []
    for _ in range(rounds):
        local.append(run_lightsr(photos, work / "out-local", common, env))
        cluster.append(run_lightsr(photos, work / "out-cluster", [*common, "--cluster", "ray"], env))
    local_m, cluster_m = median_of(local), median_of(cluster)
    return {"local": local_m, "cluster_one_node": cluster_m,
            "overhead_of_run": round(cluster_m["seconds"] / local_m["seconds"] - 1, 4),
            "overhead_of_command": round(cluster_m["command_seconds"] / local_m["command_seconds"] - 1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bsrn-s-x4")
    parser.add_argument("--images", type=int, default=16, help="images in the folder")
    parser.add_argument("--size", default="160x120", help="image size WxH")
    parser.add_argument("--video-size", default="160x120")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--segment-seconds", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--note", default="", help="said in the results file (e.g. how loaded the machine was)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results-cluster-scaling.json")
    options = parser.parse_args()
    size = tuple(int(v) for v in options.size.split("x"))
    video_size = tuple(int(v) for v in options.video_size.split("x"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    common = ["--model", options.model, "-q"]
    video_args = ["--codec", "ffv1", "--segment-seconds", str(options.segment_seconds)]
    with tempfile.TemporaryDirectory(prefix="lightsr-cluster-bench-") as folder:
        work = Path(folder)
        photos, clip = make_inputs(work, options.images, size, video_size, options.frames)
        results = {
            "command": " ".join(["python", "benchmarks/cluster_scaling.py", *sys.argv[1:]]),
            "note": options.note,
            "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                        "platform": platform.platform(), "python": platform.python_version()},
            "inputs": {"model": options.model, "images": options.images, "size": options.size,
                       "video": f"{options.video_size}, {options.frames} frames, FFV1, segments of "
                                f"{options.segment_seconds} s", "rounds": options.rounds},
            "scaling": scaling(work, photos, clip, common, video_args, options.rounds, env),
            "one_node_overhead": overhead(work, photos, common, options.rounds, env),
        }
        results["machine"]["load_average_at_end"] = os.getloadavg()
    options.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results["scaling"][k] for k in ("images_speedup_1_to_2", "video_speedup_1_to_2")}
                     | {"overhead_of_run": results["one_node_overhead"]["overhead_of_run"]}))


if __name__ == "__main__":
    main()
