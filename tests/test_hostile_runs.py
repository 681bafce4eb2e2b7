"""Issue 11: what an adversarial run found. Bad files, odd paths, concurrent runs, huge sizes.

Most tests run the pipeline with a toy nearest-neighbour x2 network (fast, exact); a few go
through the CLI to check exit codes, stderr and --json.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lightsr_cli import fs
from lightsr_cli.archs.spec import ArchSpec
from lightsr_cli.cli import app
from lightsr_cli.engine import Engine, EnginePool
from lightsr_cli.errors import LightsrError, LimitError, OutputError, TargetBusyError, UsageError, VideoEncodeError
from lightsr_cli.media import headers, images, video
from lightsr_cli.media.video.writer import encode_error
from lightsr_cli.pipeline import image_flow
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind, NamingSettings, plan_jobs
from lightsr_cli.pipeline.limits import PixelLimits
from lightsr_cli.pipeline.run import run_jobs
from lightsr_cli.pipeline.video import VideoSettings, run_video_job

REPO = Path(__file__).resolve().parent.parent


class Nearest(nn.Module):
    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def toy_pool() -> EnginePool:
    spec = ArchSpec(name="Toy", build=lambda scale: Nearest(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    return EnginePool([Engine(Nearest(), spec, 2, device="cpu")], model_id="toy")


class Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.failures: list[tuple[str, LightsrError]] = []

    def task(self, description, total, unit=""):
        class Task:
            def advance(self, amount=1):
                pass

            def close(self):
                pass
        return Task()

    def note(self, message: str) -> None:
        self.notes.append(message)

    def failed(self, subject: str, error: LightsrError) -> None:
        self.failures.append((subject, error))


def png(path: Path, height=12, width=10, channels=3) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, size=(height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def image_jobs(folder: Path, out: Path, **rule) -> list[Job]:
    return plan_jobs([str(folder)], out, NamingSettings(rule.get("suffix", "_x2"), None), False, False,
                     rule.get("skip_existing", False)).jobs


def huge_header_png(path: Path, width=60000, height=60000) -> Path:
    """A tiny PNG whose header claims a giant image (the issue's 74-byte file)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def hold_lock_in_child(target: Path) -> subprocess.Popen:
    """Another process holding the target's lock, as a concurrent lightsr run would."""
    code = ("import sys, time; from pathlib import Path; from lightsr_cli import fs\n"
            "lock = fs.TargetLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "held"
    return child


# -- 1. one target, two runs --------------------------------------------------------------------

def test_target_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    target = tmp_path / "out" / "clip_x2.mp4"
    child = hold_lock_in_child(target)
    try:
        with pytest.raises(TargetBusyError, match="another lightsr run is writing"):
            fs.TargetLock(target).acquire()
    finally:
        child.kill()
        child.wait()
    with fs.TargetLock(target), pytest.raises(TargetBusyError):  # the dead holder left no stale lock,
        fs.TargetLock(target).acquire()  # and a second holder in this process is refused too
    assert not fs.lock_path_of(target).exists()


def make_clip(path: Path, frames=12, rate=6) -> Path:
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=32x24:rate={rate}:duration={frames / rate}", "-pix_fmt", "yuv444p", str(path)],
                   check=True, capture_output=True)
    return path


def test_second_run_on_a_video_target_is_refused_while_the_first_holds_it(tmp_path):
    clip = make_clip(tmp_path / "clip.mkv")
    job = Job(clip, tmp_path / "clip_x2.mkv", MediaKind.VIDEO)
    child = hold_lock_in_child(job.target)
    try:
        with pytest.raises(TargetBusyError):
            run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(segment_seconds=1), Recorder())
    finally:
        child.kill()
        child.wait()
    assert not job.target.exists()
    run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(segment_seconds=1), Recorder())
    assert video.probe_video(job.target).frame_count == 12


def test_a_joined_video_missing_frames_never_reaches_the_target(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mkv")
    job = Job(clip, tmp_path / "clip_x2.mkv", MediaKind.VIDEO)
    join = video.concat_segments
    monkeypatch.setattr(video, "concat_segments", lambda segments, info, out, **_: join(segments[:1], info, out))
    with pytest.raises(VideoEncodeError, match="6 frames .* the source 12"):
        run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(segment_seconds=1), Recorder())
    assert not job.target.exists()


def test_an_image_target_locked_by_another_run_fails_that_file_only(tmp_path):
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "b.png")
    jobs = image_jobs(tmp_path / "in", tmp_path / "out")
    child = hold_lock_in_child(jobs[0].target)
    try:
        summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    finally:
        child.kill()
        child.wait()
    assert [j.source.name for j in summary.done] == ["b.png"]
    assert isinstance(summary.failed[0][1], TargetBusyError) and not jobs[0].target.exists()


# -- 2. no exception escapes a file -------------------------------------------------------------

def test_any_library_exception_fails_one_file_and_the_rest_run(tmp_path, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        png(tmp_path / "in" / name)
    real = image_flow.upscale_image_job

    def flaky(engine, decoded, output, reporter):
        if decoded.job.source.name == "b.png":
            raise ZeroDivisionError("deep inside some library")
        return real(engine, decoded, output, reporter)

    monkeypatch.setattr(image_flow, "upscale_image_job", flaky)
    summary = run_jobs(toy_pool(), image_jobs(tmp_path / "in", tmp_path / "out"), OutputSettings(), reporter=Recorder())
    assert [j.source.name for j in summary.done] == ["a.png", "c.png"]
    (job, error), = summary.failed
    assert job.source.name == "b.png" and "unexpected ZeroDivisionError: deep inside some library" in error.message


def test_keyboard_interrupt_still_stops_the_run(tmp_path, monkeypatch):
    png(tmp_path / "in" / "a.png")
    monkeypatch.setattr(image_flow, "upscale_image_job", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_jobs(toy_pool(), image_jobs(tmp_path / "in", tmp_path / "out"), OutputSettings(), reporter=Recorder())


def test_opencv_assertion_on_a_giant_header_is_a_clear_per_file_failure(tmp_path):
    """The issue's 74-byte PNG claiming 60000x60000: decoded with the limits raised, OpenCV asserts."""
    png(tmp_path / "in" / "a.png")
    huge_header_png(tmp_path / "in" / "b.png")
    png(tmp_path / "in" / "c.png")
    settings = OutputSettings(limits=PixelLimits(1e6, 1e9))
    summary = run_jobs(toy_pool(), image_jobs(tmp_path / "in", tmp_path / "out"), settings, reporter=Recorder())
    assert [j.source.name for j in summary.done] == ["a.png", "c.png"]
    (job, error), = summary.failed
    assert job.source.name == "b.png" and error.message.startswith("cannot decode")


def test_cli_folder_with_a_giant_header_prints_json_and_exits_1(tmp_path):
    png(tmp_path / "in" / "a.png")
    huge_header_png(tmp_path / "in" / "b.png")
    png(tmp_path / "in" / "c.png")
    code, out, err = cli("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["files"] == 2 and [f["input"] for f in report["failed"]] == [str(tmp_path / "in" / "b.png")]
    assert "60000x60000" in report["failed"][0]["error"] and "[ WARN" not in err


# -- 3. limits ------------------------------------------------------------------------------------

def test_giant_header_is_refused_before_decoding_with_sizes_and_the_way_on(tmp_path, monkeypatch):
    source = huge_header_png(tmp_path / "bomb.png", 30000, 30000)
    monkeypatch.setattr(images, "decode_image", lambda *a: pytest.fail("decoded despite the limit"))
    job = Job(source, tmp_path / "bomb_x2.png", MediaKind.IMAGE)
    summary = run_jobs(toy_pool(), [job], OutputSettings(), reporter=Recorder())
    error = summary.failed[0][1]
    assert isinstance(error, LimitError)
    message, hint = error.for_cli()
    assert "30000x30000 = 900.0 megapixels, above the input limit of 100 megapixels" in message
    assert "--max-input-megapixels 900" in hint and "LIGHTSR_MAX_INPUT_MEGAPIXELS" in hint and "--device" not in hint


def test_huge_outscale_is_refused_before_any_work(tmp_path, monkeypatch):
    source = png(tmp_path / "small.png", 64, 64)
    code, _, err = cli("upscale", str(source), "--outscale", "1000", "--device", "cpu")
    assert code == 1 and "64000x64000 = 4096.0 megapixels, above the output limit of 400" in err
    assert "--outscale" in err and "--max-output-megapixels 4096" in err and not (tmp_path / "small_x1000.png").exists()


def test_limits_are_raised_by_option_and_environment(tmp_path, monkeypatch):
    source = png(tmp_path / "a.png", 20, 20)  # 0.0004 MP in, 0.0064 MP out at x4
    code, _, err = cli("upscale", str(source), "--max-output-megapixels", "0.001", "--device", "cpu")
    assert code == 1 and "above the output limit of 0.001" in err
    monkeypatch.setenv("LIGHTSR_MAX_INPUT_MEGAPIXELS", "0.0001")
    code, _, err = cli("upscale", str(source), "--device", "cpu")
    assert code == 1 and "above the input limit of 0.0001" in err
    code, _, err = cli("upscale", str(source), "--max-input-megapixels", "1", "--device", "cpu", "-q")
    assert code == 0, err
    monkeypatch.setenv("LIGHTSR_MAX_INPUT_MEGAPIXELS", "lots")
    code, _, err = cli("upscale", str(source), "--device", "cpu", "--overwrite")
    assert code == 2 and "LIGHTSR_MAX_INPUT_MEGAPIXELS=lots" in err


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "bmp", "tif"])
def test_header_sizes_match_the_decoder(tmp_path, fmt):
    path = png(tmp_path / f"x.{fmt}", 37, 53)
    header = headers.read_header(path.read_bytes())
    assert (header.width, header.height, header.frames) == (53, 37, 1)


# -- 5. an output that would replace its input --------------------------------------------------

@pytest.mark.parametrize("case", ["same-path", "overwrite", "symlink", "empty-suffix", "video", "hard-link"])
def test_output_that_would_replace_its_input_is_an_error(tmp_path, case):
    source = png(tmp_path / "a.png") if case != "video" else make_clip(tmp_path / "a.mkv")
    output, suffix, overwrite = source, "_x2", case == "overwrite"
    if case == "symlink":
        output = tmp_path / "link.png"
        output.symlink_to(source)
    if case == "hard-link":
        output = tmp_path / "other.png"
        os.link(source, output)
        overwrite = True
    if case == "empty-suffix":
        output, suffix = None, ""
    with pytest.raises(OutputError, match="would replace its input"):
        plan_jobs([str(source)], output, NamingSettings(suffix, None), False, overwrite, False)


def test_cli_output_onto_input_exits_non_zero(tmp_path):
    source = png(tmp_path / "a.png")
    before = source.read_bytes()
    code, _, err = cli("upscale", str(source), "-o", str(source), "--overwrite", "--device", "cpu")
    assert code == 1 and "would replace its input" in err and source.read_bytes() == before


# -- 6. globs and link loops --------------------------------------------------------------------

def test_recursive_glob_does_not_follow_a_link_loop(tmp_path):
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "sub" / "up").symlink_to("..")
    (tmp_path / "in" / "same.png").symlink_to(tmp_path / "in" / "a.png")
    plan = plan_jobs([str(tmp_path / "in" / "**" / "*.png")], tmp_path / "out", NamingSettings("_x2", None), False,
                     False, False)
    assert sorted(str(j.source.relative_to(tmp_path / "in")) for j in plan.jobs) == ["a.png", "sub/b.png"]
    as_folder = plan_jobs([str(tmp_path / "in")], tmp_path / "out", NamingSettings("_x2", None), True, False, False)
    assert [j.source for j in as_folder.jobs] == [j.source for j in plan.jobs]


def test_globs_keep_their_meaning(tmp_path):
    for name in ("a.png", "b.jpg", "sub/c.png", "sub/deep/d.png", ".hidden/e.png"):
        png(tmp_path / name)
    def found(pattern):
        return sorted(str(j.source.relative_to(tmp_path)) for j in plan_jobs(
            [str(tmp_path / pattern)], tmp_path / "out", NamingSettings("_x2", None), False, False, False).jobs)
    assert found("*.png") == ["a.png"]
    assert found("*/*.png") == ["sub/c.png"]
    assert found("**/*.png") == ["a.png", "sub/c.png", "sub/deep/d.png"]
    assert found("[ab].*") == ["a.png", "b.jpg"]


# -- 7. concurrent --skip-existing runs ---------------------------------------------------------

def test_outputs_finished_or_claimed_by_another_run_count_as_skipped(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        png(tmp_path / "in" / name)
    jobs = image_jobs(tmp_path / "in", tmp_path / "out", skip_existing=True)
    png(jobs[0].target)  # finished by another run after this one planned
    child = hold_lock_in_child(jobs[1].target)  # being written by another run right now
    try:
        summary = run_jobs(toy_pool(), jobs, OutputSettings(skip_existing=True), reporter=Recorder())
    finally:
        child.kill()
        child.wait()
    assert not summary.failed
    assert [j.source.name for j in summary.skipped] == ["a.png", "b.png"]
    assert [j.source.name for j in summary.done] == ["c.png"]


def test_three_concurrent_skip_existing_runs_share_a_folder(tmp_path):
    for index in range(6):
        png(tmp_path / "in" / f"{index}.png", 48, 48)
    command = [sys.executable, "-m", "lightsr_cli", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--skip-existing", "--device", "cpu", "--json", "-m", "bsrn-x2"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(3)]
    reports = []
    for process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["files"] for r in reports) == 6  # each file upscaled once, by one of the runs
    assert all(r["files"] + len(r["skipped"]) == 6 for r in reports)
    assert len(list((tmp_path / "out").iterdir())) == 6


# -- 8. animations and pages --------------------------------------------------------------------

def apng(path: Path) -> Path:
    """A two-frame animated PNG (acTL before the image data)."""
    frame = cv2.imencode(".png", np.full((6, 5, 3), 200, np.uint8))[1].tobytes()
    ihdr_end = 8 + 25
    actl = struct.pack(">I4sII", 8, b"acTL", 2, 0)
    actl += struct.pack(">I", zlib.crc32(actl[4:]))
    path.write_bytes(frame[:ihdr_end] + actl + frame[ihdr_end:])
    return path


def test_every_page_is_upscaled_and_a_broken_animation_says_what_was_decoded(tmp_path):
    (tmp_path / "in").mkdir()
    apng(tmp_path / "in" / "anim.png")  # acTL claims frames that are not in the file
    pages = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    assert cv2.imwritemulti(str(tmp_path / "in" / "pages.tif"), pages)
    recorder = Recorder()
    summary = run_jobs(toy_pool(), image_jobs(tmp_path / "in", tmp_path / "out"), OutputSettings(), reporter=recorder)
    assert len(summary.done) == 2
    assert [note for note in recorder.notes if "anim.png" in note] == [
        "warning: only 1 of the 3 frames of anim.png could be decoded; that one is upscaled"]
    ok, written = cv2.imreadmulti(str(tmp_path / "out" / "pages_x2.tif"), flags=cv2.IMREAD_UNCHANGED)
    assert ok and [page.shape for page in written] == [(16, 16, 3)] * 3
    assert [int(page.mean()) for page in written] == [10, 20, 30]


def test_animated_webp_header_is_recognised():
    canvas = (99).to_bytes(3, "little") + (49).to_bytes(3, "little")  # width - 1, height - 1
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x02, 0, 0, 0]) + canvas
    anmf = (b"ANMF" + struct.pack("<I", 16) + bytes(16)) * 3
    data = b"RIFF" + struct.pack("<I", 4 + len(vp8x) + len(anmf)) + b"WEBP" + vp8x + anmf
    header = headers.read_header(data)
    assert (header.width, header.height, header.frames) == (100, 50, 3)


# -- 9. file modes ------------------------------------------------------------------------------

@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_new_images_follow_the_umask_and_overwritten_ones_keep_their_mode(tmp_path, umask_027):
    source = png(tmp_path / "a.png")
    job = Job(source, tmp_path / "a_x2.png", MediaKind.IMAGE)
    run_jobs(toy_pool(), [job], OutputSettings(), reporter=Recorder())
    assert (job.target.stat().st_mode & 0o777) == 0o640
    job.target.chmod(0o604)
    assert not run_jobs(toy_pool(), [job], OutputSettings(overwrite=True), reporter=Recorder()).failed
    assert (job.target.stat().st_mode & 0o777) == 0o604


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_new_videos_follow_the_umask_and_overwritten_ones_keep_their_mode(tmp_path, umask_027):
    job = Job(make_clip(tmp_path / "clip.mkv", frames=4), tmp_path / "clip_x2.mkv", MediaKind.VIDEO)
    run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(), Recorder())
    assert (job.target.stat().st_mode & 0o777) == 0o640
    job.target.chmod(0o600)
    run_video_job(toy_pool(), job, OutputSettings(overwrite=True), VideoSettings(), Recorder())
    assert (job.target.stat().st_mode & 0o777) == 0o600


# -- 11. gray + alpha ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_alpha_png_stays_gray_alpha(tmp_path, dtype):
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(3)
    gray_alpha = np.dstack([rng.integers(0, top, (9, 7)), rng.integers(0, top, (9, 7))]).astype(dtype)
    source = tmp_path / "ga.png"
    source.write_bytes(images.encode_image(gray_alpha, images.ImageEncodeSettings("png")))
    assert headers.read_header(source.read_bytes()).gray_alpha
    np.testing.assert_array_equal(images.read_image(source), gray_alpha)
    job = Job(source, tmp_path / "ga_x2.png", MediaKind.IMAGE)
    assert not run_jobs(toy_pool(), [job], OutputSettings(), reporter=Recorder()).failed
    data = job.target.read_bytes()
    assert data[25] == 4  # PNG colour type 4: gray + alpha
    result = images.read_image(job.target)
    np.testing.assert_array_equal(result, gray_alpha.repeat(2, axis=0).repeat(2, axis=1))


# -- 13. suffix with a path in it ---------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/../../x", "a/b", "..", "x\\y"])
def test_suffix_with_a_path_separator_is_a_usage_error(tmp_path, suffix):
    source = png(tmp_path / "a.png")
    with pytest.raises(UsageError):
        plan_jobs([str(source)], None, NamingSettings(suffix, None), False, False, False)
    code, _, err = cli("upscale", str(source), "--suffix", suffix, "--device", "cpu")
    assert code == 2 and "--suffix" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png"]


# -- 14. the tile asked for ----------------------------------------------------------------------

def test_summary_and_json_report_the_tile_asked_for(tmp_path):
    source = png(tmp_path / "a.png", 80, 80)
    code, out, err = cli("upscale", str(source), "--tile", "32", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["tile"] == 32
    code, _, err = cli("upscale", str(source), "--tile", "32", "--device", "cpu", "--overwrite")
    assert code == 0 and "tile 32 px" in err


# -- cosmetic ------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_is_named_for_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    code, _, err = cli("upscale", str(tmp_path / "pipe.png"), "--device", "cpu")
    assert code == 1 and "is a named pipe (FIFO)" in err and "no such" not in err


def test_recursive_hint_only_when_there_are_subfolders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.txt").write_text("x")
    code, _, err = cli("upscale", str(tmp_path / "flat"), "--device", "cpu")
    assert code == 1 and "no images or videos" in err and "--recursive" not in err
    (tmp_path / "flat" / "sub").mkdir()
    code, _, err = cli("upscale", str(tmp_path / "flat"), "--device", "cpu")
    assert code == 1 and "--recursive" in err


def test_failures_in_a_folder_run_name_the_path_once(tmp_path):
    png(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    code, out, err = cli("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu", "--json")
    assert code == 1
    bad = str(tmp_path / "in" / "bad.png")
    assert json.loads(out)["failed"][0]["error"].startswith("cannot decode:")
    assert err.count(bad) == 1 and "[ WARN" not in err, err


def test_waiting_lock_holder_is_not_a_stale_lock(tmp_path):
    """The lock file removed on release never lets two holders in (unlink/reopen race)."""
    target = tmp_path / "t.png"
    first = fs.TargetLock(target)
    first.acquire()
    with open(fs.lock_path_of(target), "a+b") as opened_early:  # a racer that opened the old lock file
        first.release()
        with fs.TargetLock(target):  # a new holder locks the new lock file ...
            assert fs.try_lock(opened_early)  # ... so the racer's lock on the removed file is no claim:
            assert os.fstat(opened_early.fileno()).st_ino != fs.lock_path_of(target).stat().st_ino


def test_out_of_memory_on_the_cpu_does_not_suggest_the_cpu():
    class AlwaysOutOfMemory(nn.Module):
        def forward(self, x):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    spec = ArchSpec(name="Toy", build=lambda scale: AlwaysOutOfMemory(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    engine = Engine(AlwaysOutOfMemory(), spec, 2, device="cpu")
    with pytest.raises(LightsrError, match="out of memory") as caught:
        engine.upscale(torch.rand(1, 3, 40, 40))
    assert "--device cpu" not in caught.value.for_cli()[1] and "--batch" in caught.value.for_cli()[1]


def test_a_failed_video_says_where_its_finished_segments_are(tmp_path, monkeypatch):
    job = Job(make_clip(tmp_path / "clip.mkv"), tmp_path / "clip_x2.mkv", MediaKind.VIDEO)

    def disk_full(segments, info, out, **_):
        raise VideoEncodeError("joining failed: No space left on device")

    monkeypatch.setattr(video, "concat_segments", disk_full)
    with pytest.raises(VideoEncodeError) as caught:
        run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(segment_seconds=1), Recorder())
    hint = caught.value.for_cli()[1]
    assert "2 finished segment(s) are kept in" in hint and ".clip_x2.mkv.lightsr-parts" in hint and "--resume" in hint
    assert not job.target.exists()


# -- 10. ffmpeg failures name their cause ---------------------------------------------------------

def test_encode_failures_name_the_real_cause(tmp_path):
    frame = np.zeros((16, 16, 3), np.uint8)
    options = video.VideoEncodeSettings(extra_args=("-no_such_option", "1"))
    writer = video.FrameWriter(tmp_path / "o.mkv", 10, options=options)
    with pytest.raises(VideoEncodeError) as caught, writer:
        for _ in range(30):
            writer.write(frame)
    assert "codec options" in caught.value.for_cli()[1]
    full = encode_error("encoding failed", "av_interleaved_write_frame(): No space left on device",
                               tmp_path / "o.mkv")
    assert "the disk is full" in full.hint and "codec" not in full.hint
    gone = encode_error("encoding failed", "Error writing trailer", tmp_path / "deleted" / "o.mkv")
    assert "was removed or renamed" in gone.hint and "codec" not in gone.hint


# -- 12. sample aspect ratio ---------------------------------------------------------------------

def test_sample_aspect_ratio_188_189_is_kept_exactly(tmp_path):
    clip = tmp_path / "sar.mp4"
    source = ["-f", "lavfi", "-i", "testsrc=size=32x24:rate=5:duration=1", "-vf", "setsar=188/189:max=1000"]
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", *source, "-pix_fmt", "yuv420p", str(clip)],
                   check=True, capture_output=True)
    assert video.probe_video(clip).sample_aspect_ratio == Fraction(188, 189)
    job = Job(clip, tmp_path / "sar_x2.mp4", MediaKind.VIDEO)
    run_video_job(toy_pool(), job, OutputSettings(), VideoSettings(), Recorder())
    assert video.probe_video(job.target).sample_aspect_ratio == Fraction(188, 189)


def test_read_only_pixels_raise_no_torch_warning():
    from lightsr_cli.pipeline.pixels import upscale_pixels

    frozen = np.zeros((8, 8, 3), np.uint8)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert upscale_pixels(toy_pool().primary, frozen).shape == (16, 16, 3)


def test_a_failed_file_leaves_no_lock_file_and_no_empty_output_folder(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out", NamingSettings("_x2", None), True, False, False).jobs
    summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    assert len(summary.failed) == 1 and not (tmp_path / "out" / "sub").exists()
