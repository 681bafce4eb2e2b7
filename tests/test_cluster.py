"""`lightsr upscale --cluster` on a real two-node Ray cluster started here (one CPU per node).

One cluster serves the whole module (starting one takes about ten seconds). Runs go through the
CLI in subprocesses that join it with RAY_ADDRESS, as a user's run joins a cluster, and are checked
against local runs of the same command: images pixel for pixel, videos frame for frame (framemd5
of a lossless FFV1 encode). Both sides use one thread per replica (OMP_NUM_THREADS=1), since
float sums taken in another order can round one 8-bit level differently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lightsr_cli.media import images, video

REPO = Path(__file__).resolve().parent.parent
MODEL = "bsrn-s-x4"  # embedded in the package: nothing to download, and the cheapest x4 network


@pytest.fixture(scope="module")
def ray_address():
    pytest.importorskip("ray", reason="ray is not installed (pip install 'lightsr[ray]')")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def _env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


def lightsr(*args: str, address: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    cluster = ["--cluster", "auto"] if address else []
    env = _env(RAY_ADDRESS=address) if address else _env()
    return subprocess.run([sys.executable, "-m", "lightsr_cli", "upscale", *args, "--model", MODEL, *cluster],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def start_lightsr(*args: str, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lightsr_cli", "upscale", *args, "--model", MODEL,
                             "--cluster", "auto"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(RAY_ADDRESS=address), cwd=REPO)


def make_photos(folder: Path) -> Path:
    import cv2

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "rgb.png"), rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "alpha.png"), rng.integers(0, 256, (16, 18, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65536, (12, 14, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "photo.jpg"), rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    return folder


def make_clip(path: Path, size: str = "64x48", seconds: float = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,500\nhello\n\n")
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size={size}:rate=24000/1001:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-i", str(srt),
                    "-map", "0:v", "-map", "1:a", "-map", "2:s", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-c:s", "srt", str(path)], check=True, capture_output=True)
    return path


def framemd5(path: Path) -> list[str]:
    """Per-frame hashes of the decoded video (timestamps, sizes and pixel hashes)."""
    result = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                            capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if not line.startswith("#")]


def pixels(path: Path) -> np.ndarray:
    return images.read_image(path)


VIDEO_ARGS = ("--codec", "ffv1", "--segment-seconds", "0.25")


def test_folder_of_images_and_a_video_match_a_local_run(tmp_path, ray_address):
    photos = make_photos(tmp_path / "photos")
    clip = make_clip(photos / "clip.mkv")
    local = lightsr(str(photos), "-o", str(tmp_path / "local"), *VIDEO_ARGS)
    assert local.returncode == 0, local.stderr
    for files in ("transfer", "shared"):
        out = tmp_path / files
        run = lightsr(str(photos), "-o", str(out), *VIDEO_ARGS, "--cluster-files", files, "--json", address=ray_address)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["files"] == 5 and not report["failed"]
        for name in ("rgb_x4.png", "alpha_x4.png", "deep_x4.png", "photo_x4.jpg"):
            expected, got = pixels(tmp_path / "local" / name), pixels(out / name)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (files, name)
        assert framemd5(out / "clip_x4.mkv") == framemd5(tmp_path / "local" / "clip_x4.mkv")
        joined = video.probe_video(out / "clip_x4.mkv")
        assert sorted(s.kind for s in joined.other_streams) == ["audio", "subtitle"]
        assert joined.frame_rate == video.probe_video(clip).frame_rate
        cluster = report["cluster"]
        assert cluster["files"] == files and cluster["workers"] == 2 and len(cluster["nodes"]) == 2
        assert sum(n["images"] for n in cluster["nodes"]) == 4
        assert sum(n["segments"] for n in cluster["nodes"]) == 4  # 24 frames in segments of 6
        assert sum(n["megapixels_out"] for n in cluster["nodes"]) == pytest.approx(report["megapixels_out"], abs=1e-5)
        assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "local"))  # no temp, lock or parts left


def test_bad_file_is_reported_and_the_rest_complete_then_skip_existing(tmp_path, ray_address):
    photos = make_photos(tmp_path / "photos")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    out = tmp_path / "out"
    run = lightsr(str(photos), "-o", str(out), "--cluster-files", "transfer", "--json", address=ray_address)
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert [Path(f["input"]).name for f in report["failed"]] == ["broken.png"]
    assert report["files"] == 4
    assert "broken.png" in run.stderr
    assert sorted(os.listdir(out)) == ["alpha_x4.png", "deep_x4.png", "photo_x4.jpg", "rgb_x4.png"]
    again = lightsr(str(photos), "-o", str(out), "--skip-existing", "--json", address=ray_address)
    assert again.returncode == 1  # the broken file fails again; the finished ones are skipped, not redone
    report = json.loads(again.stdout)
    assert report["files"] == 0 and len(report["skipped"]) == 4


def _worker_pids(busy_with: str) -> list[int]:
    """Ray worker processes of our actor busy with a method (Ray titles them ray::UpscaleWorker.<method>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if title.startswith(f"ray::UpscaleWorker.{busy_with}"):
            pids.append(int(entry.name))
    return pids


def _wait_for(condition, timeout: float, process: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"the run ended before the test could act: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"nothing happened in {timeout} s")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker processes through /proc")
def test_worker_killed_mid_run_loses_nothing(tmp_path, ray_address):
    clip = make_clip(tmp_path / "in" / "clip.mkv", seconds=1.5)
    local = lightsr(str(clip), "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS)
    assert local.returncode == 0, local.stderr
    run = start_lightsr(str(clip), "-o", str(tmp_path / "out.mkv"), *VIDEO_ARGS, "--cluster-files", "transfer",
                        "--json", address=ray_address)
    victim = _wait_for(lambda: _worker_pids("segment"), 120, run)[0]
    os.kill(victim, signal.SIGKILL)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    report = json.loads(out)
    assert report["cluster"]["resent_units"] >= 1
    assert "sending it again" in err
    assert framemd5(tmp_path / "out.mkv") == framemd5(tmp_path / "local.mkv")


def test_ctrl_c_leaves_no_partial_targets_and_resume_finishes(tmp_path, ray_address):
    photos = make_photos(tmp_path / "photos")
    clip = make_clip(photos / "clip.mkv", seconds=2)
    out = tmp_path / "out"
    run = start_lightsr(str(photos), "-o", str(out), *VIDEO_ARGS, address=ray_address)
    parts = out / ".clip_x4.mkv.lightsr-parts"
    _wait_for(lambda: (parts / "segment_00000.mkv").is_file(), 120, run)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "interrupted" in err
    assert not (out / "clip_x4.mkv").exists()
    for path in out.iterdir():  # whatever reached a target name is whole; no temp or lock file is left
        assert not path.name.endswith((".part", ".lightsr-lock")), path
        if path.is_file():
            assert pixels(path).size > 0
    deadline = time.monotonic() + 20
    while _worker_pids("") and time.monotonic() < deadline:  # the workers were stopped
        time.sleep(0.2)
    assert not _worker_pids("")
    resumed = lightsr(str(photos), "-o", str(out), *VIDEO_ARGS, "--resume", "--json", address=ray_address)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["video"]["resumed_from_frame"][0] > 0
    local = lightsr(str(clip), "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS)
    assert local.returncode == 0, local.stderr
    assert framemd5(out / "clip_x4.mkv") == framemd5(tmp_path / "local.mkv")


def make_clip_with_repeats(path: Path) -> Path:
    """24 frames at 24000/1001 fps showing 6 pictures a second, each about four times in a row (FFV1:
    the repeats decode bit for bit the same, so --dedup exact reuses them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=64x48:rate=6:duration=1,fps=24000/1001", "-frames:v", "24",
                    "-c:v", "ffv1", str(path)], check=True, capture_output=True)
    return path


def test_video_with_dedup_matches_a_local_run(tmp_path, ray_address):
    clip = make_clip_with_repeats(tmp_path / "in" / "still.mkv")
    local = lightsr(str(clip), "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS, "--dedup", "exact", "--json")
    assert local.returncode == 0, local.stderr
    run = lightsr(str(clip), "-o", str(tmp_path / "cluster.mkv"), *VIDEO_ARGS, "--dedup", "exact",
                  "--cluster-files", "transfer", "--json", address=ray_address)
    assert run.returncode == 0, run.stderr
    assert framemd5(tmp_path / "cluster.mkv") == framemd5(tmp_path / "local.mkv")
    expected, got = json.loads(local.stdout)["video"], json.loads(run.stdout)["video"]
    assert got["frames_upscaled"] == expected["frames_upscaled"] < 24  # each segment's repeats were reused
    assert got["frames_reused"] == expected["frames_reused"]


def test_video_with_a_target_width_matches_a_local_run(tmp_path, ray_address):
    clip = make_clip(tmp_path / "in" / "clip.mkv", seconds=0.5)
    local = lightsr(str(clip), "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS, "--width", "100")
    assert local.returncode == 0, local.stderr
    run = lightsr(str(clip), "-o", str(tmp_path / "cluster.mkv"), *VIDEO_ARGS, "--width", "100", address=ray_address)
    assert run.returncode == 0, run.stderr
    expected, got = video.probe_video(tmp_path / "local.mkv"), video.probe_video(tmp_path / "cluster.mkv")
    assert (got.width, got.height) == (expected.width, expected.height) == (100, 76)  # even for 4:2:0
    assert framemd5(tmp_path / "cluster.mkv") == framemd5(tmp_path / "local.mkv")


def test_frame_sequence_input_on_shared_paths_matches_a_local_run(tmp_path, ray_address):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(11)
    for number in range(1, 13):
        cv2.imwrite(str(frames / f"{number:06d}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    pattern = str(frames / "%06d.png")
    local = lightsr(pattern, "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS, "--fps", "24")
    assert local.returncode == 0, local.stderr
    run = lightsr(pattern, "-o", str(tmp_path / "shared.mkv"), *VIDEO_ARGS, "--fps", "24",
                  "--cluster-files", "shared", address=ray_address)
    assert run.returncode == 0, run.stderr
    assert framemd5(tmp_path / "shared.mkv") == framemd5(tmp_path / "local.mkv")
    refused = lightsr(pattern, "-o", str(tmp_path / "transfer.mkv"), *VIDEO_ARGS, "--fps", "24",
                      "--cluster-files", "transfer", address=ray_address)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--cluster-files shared" in refused.stderr
    assert not (tmp_path / "transfer.mkv").exists()


def test_frame_pattern_target_is_a_usage_error(tmp_path, ray_address):
    clip = make_clip(tmp_path / "in" / "clip.mkv", seconds=0.5)
    run = lightsr(str(clip), "-o", str(tmp_path / "out" / "%06d.png"), address=ray_address)
    assert run.returncode == 2, run.stderr
    assert "error: -o" in run.stderr and "numbered-frames pattern" in run.stderr
    assert "hint: run without --cluster" in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.glob("out/*.png"))


# -- without a cluster ---------------------------------------------------------------------------

def _run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          timeout=180)


def test_cluster_without_ray_says_how_to_install_it(tmp_path):
    make_photos(tmp_path / "photos")
    code = ("import sys, runpy\nsys.modules['ray'] = None  # as if ray were not installed\n"
            f"sys.argv = ['lightsr', 'upscale', 'photos', '--model', '{MODEL}', '--cluster', 'ray']\n"
            "runpy.run_module('lightsr_cli', run_name='__main__')")
    result = _run_python(code, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error: --cluster needs Ray, which is not installed" in result.stderr
    assert "pip install 'lightsr[ray]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "photos").glob("*_x4*"))


def test_help_and_local_runs_never_import_ray(tmp_path):
    make_photos(tmp_path / "photos")
    code = ("import sys, runpy\n"
            "for argv in (['lightsr', '--help'], ['lightsr', 'upscale', '--help'],\n"
            f"             ['lightsr', 'upscale', 'photos', '-o', 'out', '--model', '{MODEL}', '-q']):\n"
            "    sys.argv = argv\n"
            "    try:\n        runpy.run_module('lightsr_cli', run_name='__main__')\n"
            "    except SystemExit as exit:\n        assert not exit.code, exit.code\n"
            "assert 'ray' not in sys.modules, 'imported ray'\nprint('ray-free')")
    result = _run_python(code, tmp_path)
    assert result.returncode == 0 and "ray-free" in result.stdout, result.stderr
    assert "--cluster" in result.stdout and "--gpus-per-worker" in result.stdout
    assert len(list((tmp_path / "out").glob("*_x4*"))) == 4


def test_bad_cluster_values_are_usage_errors(tmp_path):
    make_photos(tmp_path / "photos")
    result = subprocess.run([sys.executable, "-m", "lightsr_cli", "upscale", "photos", "--model", MODEL,
                             "--cluster", "spark://x"], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 2
    assert "error: --cluster spark://x: expected ray, ray://HOST:PORT or auto" in result.stderr


def test_workers_are_planned_per_gpu_or_per_cpus():
    from lightsr_cli.errors import DeviceError
    from lightsr_cli.pipeline.cluster import ClusterSettings
    from lightsr_cli.pipeline.cluster.connect import plan_workers

    nodes = [{"NodeID": "gpu", "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"NodeID": "cpu", "Alive": True, "Resources": {"CPU": 8.0}},
             {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 64.0}},
             {"NodeID": "head", "Alive": True, "Resources": {"CPU": 0.0}}]
    placed = plan_workers(nodes, ClusterSettings(), "auto")
    assert [(p.node_id, p.device, p.gpus, p.cpus) for p in placed] == [
        ("gpu", "cuda", 1.0, 1.0), ("gpu", "cuda", 1.0, 1.0), ("cpu", "cpu", 0.0, 8.0)]
    placed = plan_workers(nodes, ClusterSettings(cpus_per_worker=3), "cpu")
    assert [(p.node_id, p.cpus) for p in placed] == [("gpu", 3.0)] * 5 + [("cpu", 3.0)] * 2
    assert len(plan_workers(nodes, ClusterSettings(gpus_per_worker=2), "auto")) == 2
    with pytest.raises(DeviceError, match="no worker fits"):
        plan_workers(nodes, ClusterSettings(cpus_per_worker=32), "cpu")


def test_workers_whose_cpus_resolve_auto_differently_are_reported_and_recorded_alike():
    """--precision auto resolves on each worker (bf16 where the CPU has bf16 dot products): the summary and a
    video's resume plan name every precision that ran, in the same order whichever worker answers first."""
    from lightsr_cli.pipeline.cluster.summary import ClusterPool, precisions_of
    from lightsr_cli.pipeline.cluster.units import WorkerFacts

    def worker(node: str, precision: str) -> WorkerFacts:
        return WorkerFacts(node_id=node, host=node, version="0", device="cpu", device_description="cpu",
                           precision=precision, batch=1, tta=False, tile=None, autotune=False, notes=())

    mixed = [worker("a", "fp32"), worker("b", "bf16"), worker("c", "bf16")]
    assert precisions_of(mixed) == precisions_of(mixed[::-1]) == "bf16+fp32"
    assert precisions_of(mixed[1:]) == "bf16"
    assert ClusterPool.of(mixed, MODEL, 0, 0).primary.precision == "bf16+fp32"


def test_a_video_that_changes_frame_size_matches_a_local_run_and_is_warned_about(tmp_path, ray_address):
    from tests.test_video_timing import size_changing_clip

    (tmp_path / "in").mkdir()
    clip = size_changing_clip(tmp_path / "in")
    local = lightsr(str(clip), "-o", str(tmp_path / "local.mkv"), *VIDEO_ARGS)
    assert local.returncode == 0, local.stderr
    run = lightsr(str(clip), "-o", str(tmp_path / "cluster.mkv"), *VIDEO_ARGS, "--cluster-files", "transfer",
                  address=ray_address)
    assert run.returncode == 0, run.stderr
    assert framemd5(tmp_path / "cluster.mkv") == framemd5(tmp_path / "local.mkv")
    for stderr in (local.stderr, run.stderr):
        assert "turned.ts changes frame size mid-stream (64x48, then 48x64)" in " ".join(stderr.split())
