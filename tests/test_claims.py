"""README claims that had no test (issue 17): each test names the claim it checks.

Inputs are tiny generated images and clips; the network is the embedded bsrn-x2 unless a claim
needs a download (then ../shared's official weights serve as the mirror, skipped when absent).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lightsr_cli import Upscaler
from lightsr_cli.cli import app
from lightsr_cli.errors import ExitCode
from lightsr_cli.media import video
from tests.test_mutation_gaps import decode, make_clip

REPO = Path(__file__).resolve().parent.parent
MODEL = "bsrn-x2"


def run_cli(*args: str, **kwargs):
    result = CliRunner().invoke(app, list(args), **kwargs)
    return result.exit_code, result.stdout, result.stderr


def _image(path: Path, height=12, width=16, seed=0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler(MODEL, device="cpu")


def _fingerprint(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under folder: (sha256 of its bytes, mtime_ns, mode)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns,
                                         p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- inputs -------------------------------------------------------------------------------------------

def test_a_folder_may_mix_images_and_videos_and_inputs_are_never_touched(tmp_path, upscaler):
    """README: 'images ... and videos ... may be mixed'; 'inputs are never touched'."""
    source = tmp_path / "in"
    photo = _image(source / "photo.png")
    _image(source / "sub" / "scan.jpg", seed=1)
    make_clip(source / "sub" / "clip.mp4", seconds=0.5)
    before = _fingerprint(source)
    code, out, err = run_cli("upscale", str(source), "-o", str(tmp_path / "out"), "-r", "--model", MODEL,
                             "--device", "cpu", "--json")
    assert code == 0, err
    assert sorted(json.loads(out)["outputs"]) == sorted(
        str(tmp_path / "out" / name) for name in ("photo_x2.png", "sub/scan_x2.jpg", "sub/clip_x2.mp4"))
    np.testing.assert_array_equal(_read_rgb(tmp_path / "out" / "photo_x2.png"), upscaler.upscale(photo))
    assert _read_rgb(tmp_path / "out" / "sub" / "scan_x2.jpg").shape == (24, 32, 3)
    result = video.probe_video(tmp_path / "out" / "sub" / "clip_x2.mp4")
    assert (result.width, result.height, result.frame_count) == (64, 48, 6)
    assert _fingerprint(source) == before


# -- errors and --debug ---------------------------------------------------------------------------------

def test_a_crash_gets_its_own_exit_code_and_never_passes_for_a_user_error(tmp_path, monkeypatch):
    """An unexpected exception: exit 70 (ExitCode.INTERNAL), 'unexpected failure', not 1 or 2."""
    from lightsr_cli.pipeline import jobs  # the upscale command imports plan_jobs from here when it runs

    def crash(*args, **kwargs):
        raise ZeroDivisionError("forced for the test")

    monkeypatch.setattr(jobs, "plan_jobs", crash)
    _image(tmp_path / "a.png")
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "--device", "cpu")
    assert code == ExitCode.INTERNAL == 70
    assert "error: unexpected failure: ZeroDivisionError: forced for the test" in err
    assert "Traceback" not in err
    result = CliRunner().invoke(app, ["--debug", "upscale", str(tmp_path / "a.png"), "--device", "cpu"])
    assert isinstance(result.exception, ZeroDivisionError)  # --debug lets the crash through, traceback and all


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    """README: '`lightsr --debug ...` shows tracebacks'."""
    command = [sys.executable, "-m", "lightsr_cli"]
    missing = str(tmp_path / "missing.png")
    plain = subprocess.run([*command, "upscale", missing], capture_output=True, text=True, cwd=REPO, timeout=120)
    debug = subprocess.run([*command, "--debug", "upscale", missing], capture_output=True, text=True, cwd=REPO,
                           timeout=120)
    for result in (plain, debug):
        assert result.returncode == 1 and f"error: no such file or folder: {missing}" in result.stderr, result.stderr
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "InputError" in debug.stderr


# -- image output options ------------------------------------------------------------------------------

def _jpeg_luma_table(data: bytes) -> list[int]:
    """The first quantization table (DQT, 8-bit precision) of a JPEG file, in zigzag order."""
    at = data.index(b"\xff\xdb")
    assert data[at + 4] >> 4 == 0  # 8-bit precision
    return list(data[at + 5:at + 5 + 64])


def _libjpeg_luma_table(quality: int) -> list[int]:
    """What libjpeg's jpeg_set_quality writes for the standard luminance table (first zigzag values)."""
    base = [16, 11, 12, 14, 12, 10, 16, 14]  # Annex K table, zigzag order
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (value * scale + 50) // 100)) for value in base]


def test_quality_sets_the_jpeg_quantization(tmp_path):
    """README: '--quality Q' is the JPEG/WebP quality (default 95)."""
    _image(tmp_path / "a.png", 32, 32)
    sizes = {}
    for quality in (30, 95):
        out = tmp_path / f"q{quality}.jpg"
        code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "-o", str(out), "--model", MODEL,
                               "--device", "cpu", "-q", "--format", "jpeg", "--quality", str(quality))
        assert code == 0, err
        assert _jpeg_luma_table(out.read_bytes())[:8] == _libjpeg_luma_table(quality)
        sizes[quality] = out.stat().st_size
    assert sizes[30] < sizes[95]
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "default.jpg"), "--model", MODEL,
                           "--device", "cpu", "-q")
    assert code == 0, err
    assert _jpeg_luma_table((tmp_path / "default.jpg").read_bytes())[:8] == _libjpeg_luma_table(95)
    webp = {}
    for quality in (30, 95):
        out = tmp_path / f"q{quality}.webp"
        code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "-o", str(out), "--model", MODEL,
                               "--device", "cpu", "-q", "--quality", str(quality))
        assert code == 0, err
        webp[quality] = out.stat().st_size
    assert webp[30] < webp[95]


# -- choosing the network ---------------------------------------------------------------------------------

def _embedded(model_id: str) -> Path:
    code, out, err = run_cli("models", "path", model_id)
    assert code == 0, err
    return Path(out.strip())


def test_weights_file_on_the_cli_and_in_the_api(tmp_path, upscaler):
    """README: '--weights FILE' and 'Upscaler(weights="model.pth")' use that checkpoint."""
    pixels = _image(tmp_path / "a.png")
    # A .pth (plain tensors) of bsrn-x3's weights under a name that says nothing: detected as BSRN x3.
    from safetensors.torch import load_file

    checkpoint = tmp_path / "mystery.pth"
    torch.save(load_file(str(_embedded("bsrn-x3"))), checkpoint)
    # fp32 throughout: auto may run the model id in fp16 on a CPU with an fp16 matrix unit (measured per model
    # id), while a weights file of its own always runs fp32 there.
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "--weights", str(checkpoint), "--device", "cpu", "-q")
    assert code == 0, err
    reference = Upscaler("bsrn-x3", device="cpu", precision="fp32")
    np.testing.assert_array_equal(_read_rgb(tmp_path / "a_x3.png"), reference.upscale(pixels))
    from_file = Upscaler(weights=checkpoint, device="cpu")
    assert from_file.scale == 3
    np.testing.assert_array_equal(from_file.upscale(pixels), reference.upscale(pixels))
    assert not np.array_equal(upscaler.upscale(pixels)[:24, :32], reference.upscale(pixels)[:24, :32])


def test_api_preset_and_scale_pick_the_readme_table_model(tmp_path):
    """README: Upscaler(preset=..., scale=...) and the preset table (balanced x2 = bsrn-x2, x3 = bsrn-x3)."""
    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    balanced = Upscaler(preset="balanced", scale=2, device="cpu")
    assert balanced.card.id == "bsrn-x2"
    np.testing.assert_array_equal(balanced.upscale(pixels), Upscaler("bsrn-x2", device="cpu").upscale(pixels))
    assert Upscaler(preset="fast", scale=3, device="cpu").card.id == "bsrn-x3"


# -- models ---------------------------------------------------------------------------------------------

def test_models_list_info_path_and_convert(tmp_path):
    """README: `lightsr models` lists every model; `models info ID` shows a card; path; convert."""
    from lightsr_cli.registry import CARDS

    code, out, err = run_cli("models", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [row["id"] for row in rows] == [card.id for card in CARDS]
    assert next(row for row in rows if row["id"] == "bsrn-x4")["weights"] == "embedded"
    code, out, err = run_cli("models", "info", "emt-x3", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["arch"], info["scale"], info["params"], info["license"]) == ("EMT", 3, 749991, "MIT")
    code, _, err = run_cli("models", "info", "emt-x5")
    assert code == 1 and "error: model 'emt' has no x5 checkpoint" in err
    embedded = _embedded("bsrn-x4")
    assert embedded.is_file() and embedded.parent == REPO / "weights"
    assert _embedded("emt-x3") == Path(info["cache_path"])  # not downloaded: where it will be cached

    from safetensors.torch import load_file

    state = load_file(str(_embedded("bsrn-x2")))
    torch.save({"params": state}, tmp_path / "wrapped.pth")  # the official files nest the weights like this
    converted = tmp_path / "bsrn.safetensors"
    code, out, err = run_cli("models", "convert", str(tmp_path / "wrapped.pth"), str(converted))
    assert code == 0, err
    assert out.strip() == f"{converted}: BSRN x2"
    back = load_file(str(converted))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    code, _, err = run_cli("models", "convert", str(tmp_path / "wrapped.pth"), str(converted))
    assert code == 1 and f"error: output exists: {converted}" in err


def test_models_download_verify_and_rm(tmp_path, official_weights, monkeypatch):
    """README: download (mirror, verified), verify (re-hash), rm (cache only), path."""
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    model = "plainusr-u-x2"
    code, out, err = run_cli("models", "download", model, "--json")
    assert code == 0, err
    [row] = json.loads(out)
    cached = Path(row["path"])
    assert row["source"] == "mirror" and cached.is_file() and row["pinned"] is True
    assert cached.read_bytes() == (official_weights / "PlainUSR" / cached.name).read_bytes()
    assert _embedded(model) == cached
    code, out, err = run_cli("models", "verify", model)
    assert code == 0 and out.strip() == f"{model}: ok", err
    original = cached.read_bytes()
    cached.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one flipped bit
    code, out, err = run_cli("models", "verify", model)
    assert code == 1 and out.strip() == f"{model}: mismatch", err
    code, out, err = run_cli("models", "rm", model)
    assert code == 0 and out.strip() == f"removed {model}" and not cached.exists(), err
    code, out, err = run_cli("models", "rm", "bsrn-x2")
    assert code == 0 and out.strip() == "bsrn-x2: not cached" and _embedded("bsrn-x2").is_file()


# -- eval and bench ---------------------------------------------------------------------------------------

def _psnr_y_by_hand(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """BT.601 luma (MATLAB rgb2ycbcr, 0-255 scale), border cropped: the papers' protocol."""
    def luma(rgb):
        return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
    diff = (luma(sr.astype(np.float64)) - luma(hr.astype(np.float64)))[border:-border, border:-border]
    return 10 * np.log10(255 ** 2 / np.mean(diff ** 2))


def test_eval_command_scores_a_dataset(tmp_path, upscaler):
    """README: `lightsr eval DATASET --model ID` gives PSNR-Y/SSIM-Y as the papers measure."""
    dataset = tmp_path / "Tiny" / "x2"
    scores = []
    for index in range(2):
        yy, xx = np.mgrid[:40, :48]
        hr = np.stack([(xx * 5 + index * 40) % 256, (yy * 6) % 256, (xx + yy) * 2 % 256], axis=2).astype(np.uint8)
        lr = cv2.resize(hr, (24, 20), interpolation=cv2.INTER_AREA)
        for kind, pixels in (("HR", hr), ("LR", lr)):
            (dataset / kind).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(dataset / kind / f"img{index}.png"), pixels[..., ::-1])
        scores.append(_psnr_y_by_hand(upscaler.upscale(lr), hr, 2))
    code, out, err = run_cli("eval", str(tmp_path / "Tiny"), "--model", MODEL, "--device", "cpu", "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["dataset"], row["images"], row["scale"]) == ("Tiny", 2, 2)
    assert row["psnr_y"] == pytest.approx(np.mean(scores), abs=1e-4)
    assert 0 < row["ssim_y"] <= 1
    code, _, err = run_cli("eval", str(tmp_path / "nowhere"), "--model", MODEL)
    assert code == 1 and f"error: no such dataset folder: {tmp_path / 'nowhere'}" in err


def test_bench_command_times_a_model():
    """README: `lightsr bench` reports ms per frame on the device and end to end, MP/s, peak memory."""
    code, out, err = run_cli("bench", "--model", MODEL, "--size", "64x48", "--repeats", "1", "--device", "cpu",
                             "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["model"] == MODEL and row["output"] == "64x48" and row["device"] == "cpu"
    assert row["model_ms"] > 0 and row["end_to_end_ms"] > 0  # timed separately: no order between them on a busy CPU
    assert row["end_to_end_mp_s"] == pytest.approx(64 * 48 / 1e6 / (row["end_to_end_ms"] / 1000), rel=0.05)
    assert row["peak_memory_mb"] > 0


# -- video options --------------------------------------------------------------------------------------

def _x264_settings(path: Path) -> str:
    """The options string libx264 writes into the stream (its SEI user data)."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_encoder_options_reach_ffmpeg(tmp_path):
    """README: --crf, --video-preset, --pix-fmt and --ffmpeg-arg reach the encoder."""
    source = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q", "-o",
                           str(tmp_path / "default.mp4"))
    assert code == 0, err
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q", "-o",
                           str(tmp_path / "tuned.mp4"), "--crf", "31", "--video-preset", "ultrafast",
                           "--pix-fmt", "yuv444p", "--ffmpeg-arg=-x264-params", "--ffmpeg-arg=keyint=7")
    assert code == 0, err
    default, tuned = _x264_settings(tmp_path / "default.mp4"), _x264_settings(tmp_path / "tuned.mp4")
    assert "crf=18.0" in default and "cabac=1" in default and "keyint=250" in default
    assert "crf=31.0" in tuned and "cabac=0" in tuned and "keyint=7" in tuned  # ultrafast turns CABAC off
    assert video.probe_video(tmp_path / "default.mp4").pix_fmt == "yuv420p"
    assert video.probe_video(tmp_path / "tuned.mp4").pix_fmt == "yuv444p"


def test_libx265_and_outscale_for_video(tmp_path, upscaler):
    """README: '--codec ... also libx265'; '--outscale F' resizes video frames too."""
    source = make_clip(tmp_path / "clip.mkv", seconds=0.5)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q", "--codec", "libx265")
    assert code == 0, err
    result = video.probe_video(tmp_path / "clip_x2.mkv")
    assert (result.codec, result.width, result.height, result.frame_count) == ("hevc", 64, 48, 6)
    # --outscale 3 with a x2 model: the network's frames resized to 3x (lossless RGB output: exact).
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q", "--outscale", "3",
                           "--codec", "ffv1", "--pix-fmt", "bgr0")
    assert code == 0, err
    written = decode(tmp_path / "clip_x3.mkv").astype(int)
    expected = np.stack([cv2.resize(upscaler.upscale(frame), (96, 72), interpolation=cv2.INTER_LANCZOS4)
                         for frame in decode(source)])
    assert written.shape == (6, 72, 96, 3)
    assert np.abs(written - expected).max() <= 1


def test_memory_stays_bounded_for_long_videos(tmp_path, monkeypatch):
    """README: 'bounded queues keep memory flat whatever the length': frames decoded but not yet
    encoded never exceed a bound that does not grow with the clip (here: 72 frames, a slow network)."""
    from lightsr_cli.pipeline import video as video_pipeline

    lock = threading.Lock()
    counts = {"decoded": 0, "written": 0, "peak": 0}
    real_next, real_write = video.FrameReader.__next__, video.FrameWriter.write
    real_upscale = video_pipeline.upscale_rgb

    def counted_next(self):
        frame = real_next(self)
        with lock:
            counts["decoded"] += 1
            counts["peak"] = max(counts["peak"], counts["decoded"] - counts["written"])
        return frame

    def counted_write(self, frame):
        real_write(self, frame)
        with lock:
            counts["written"] += 1

    def slow_upscale(engine, frames, reporter=None):
        threading.Event().wait(0.005)  # inference slower than decoding: an unbounded reader would run ahead
        return real_upscale(engine, frames, reporter)

    monkeypatch.setattr(video.FrameReader, "__next__", counted_next)
    monkeypatch.setattr(video.FrameWriter, "write", counted_write)
    monkeypatch.setattr(video_pipeline, "upscale_rgb", slow_upscale)
    source = make_clip(tmp_path / "long.mkv", size="16x16", rate="24", seconds=3)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q", "--batch", "2")
    assert code == 0, err
    assert counts["decoded"] == counts["written"] == 72
    # Two queues of 2 x batch + 2 frames, a batch in the engine and one frame in each thread's hands.
    assert counts["peak"] <= 2 * (2 * 2 + 2) + 2 + 2, counts


def test_suffix_names_outputs(tmp_path):
    """README: '--suffix S' is appended to output names (default _x{scale}; {scale} is filled in)."""
    _image(tmp_path / "a.png")
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "--model", MODEL, "--device", "cpu", "-q",
                           "--suffix", "-big{scale}")
    assert code == 0, err
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "--model", MODEL, "--device", "cpu", "-q",
                           "--suffix", "_up", "--outscale", "1.5")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-big2.png", "a.png", "a_up.png"]
    assert _read_rgb(tmp_path / "a_up.png").shape == (18, 24, 3)
