"""Tests that fail when a feature breaks: the gaps a mutation audit found (issue 17).

Each test checks a feature against an independent reference, so the breakage named in its
docstring cannot leave it green (tools/mutation_check.py applies each breakage and runs these):
TTA against the 8 transforms averaged by hand with a network that is not flip/rotation
equivariant; 16-bit pixels against a network whose output is known exactly; video frames against
the decoded input frames upscaled one by one through the Python API; --resume by counting the
frames it upscales and checking the finished segments are not rewritten; the .avi refusal by its
own message and exit code; audio by packet checksums before and after; alpha against the
network's own output on the alpha plane.

Everything runs on the embedded bsrn-x2 (no download, no ../shared) and tiny generated inputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lightsr_cli import Upscaler
from lightsr_cli.archs.spec import ArchSpec
from lightsr_cli.cli import app
from lightsr_cli.engine import Engine
from lightsr_cli.errors import ExitCode
from lightsr_cli.media import video
from lightsr_cli.pipeline import pixels as pixel_pipeline

MODEL = "bsrn-x2"  # embedded: works with no network and no ../shared


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def ffmpeg(*args: str) -> str:
    done = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)
    return done.stdout.decode()


def make_clip(path: Path, *, size="32x24", rate="12", seconds=2.0, audio=False, subtitles=False,
              codec="libx264") -> Path:
    """A testsrc clip (every frame differs: a moving pattern and a frame counter)."""
    inputs = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    maps = ["-map", "0:v"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        maps += ["-map", "1:a"]
    if subtitles:
        srt = path.with_name(path.stem + "-subs.srt")
        srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello there\n\n2\n00:00:01,000 --> 00:00:01,900\n"
                       "second line\n\n")
        inputs += ["-i", str(srt)]
        maps += ["-map", f"{2 if audio else 1}:s"]
    ffmpeg(*inputs, *maps, "-c:v", codec, "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt", str(path))
    return path


def decode(path: Path) -> np.ndarray:
    with video.FrameReader(path) as reader:
        return np.stack(list(reader))


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler(MODEL, device="cpu")


# -- TTA ----------------------------------------------------------------------------------------------

class Lopsided(nn.Module):
    """A x2 network that is not equivariant to flips or rotations: each output depends on the pixel
    to its right and below, weighted differently per channel and position."""

    def forward(self, x):
        right = torch.roll(x, shifts=-1, dims=-1)
        below = torch.roll(x, shifts=-2, dims=-2)
        rows = torch.linspace(0, 1, x.shape[-2]).view(1, 1, -1, 1)
        y = 0.5 * x + 0.3 * right - 0.2 * below + 0.1 * rows
        return nn.functional.interpolate(y, scale_factor=2, mode="nearest")


def _toy_spec() -> ArchSpec:
    return ArchSpec(name="Lopsided", build=lambda scale: Lopsided(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)


def _by_hand_ensemble(engine: Engine, image: torch.Tensor) -> torch.Tensor:
    """The 8 flips/rotations, each upscaled by the plain engine and undone, averaged."""
    outputs = []
    for k in range(4):
        for flip in (False, True):
            view = torch.rot90(image, k, dims=(-2, -1))
            view = torch.flip(view, dims=(-1,)) if flip else view
            out = engine.upscale(view.contiguous())
            out = torch.flip(out, dims=(-1,)) if flip else out
            outputs.append(torch.rot90(out, -k, dims=(-2, -1)))
    return torch.stack(outputs).mean(0)


def test_tta_averages_the_eight_transforms_of_a_non_equivariant_network():
    """Breaks if the engine ignores tta (or averages fewer/wrong transforms)."""
    image = torch.rand(1, 3, 9, 14, generator=torch.Generator().manual_seed(5))
    plain_engine = Engine(Lopsided(), _toy_spec(), 2, device="cpu")
    plain = plain_engine.upscale(image)
    expected = _by_hand_ensemble(plain_engine, image)
    assert (expected - plain).abs().max() > 0.05  # the network really is not equivariant
    ensemble = Engine(Lopsided(), _toy_spec(), 2, device="cpu", tta=True).upscale(image)
    torch.testing.assert_close(ensemble, expected, atol=1e-6, rtol=0)


def test_tta_flag_reaches_the_engine_from_the_cli(tmp_path, upscaler):
    """Breaks if `--tta` is dropped between the CLI and the engine."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (14, 18, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), rgb[..., ::-1])
    code, _, err = run_cli("upscale", str(tmp_path / "a.png"), "--model", MODEL, "--tta", "--device", "cpu", "-q")
    assert code == 0, err
    written = cv2.imread(str(tmp_path / "a_x2.png"))[..., ::-1].astype(int)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    expected = _by_hand_ensemble(upscaler.engine, image)[0].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    plain = upscaler.upscale(rgb).astype(int)
    assert np.abs(expected - plain).max() >= 3  # bsrn is not equivariant: the ensemble is visible
    assert np.abs(written - expected).max() <= 1


# -- 16-bit pixels ------------------------------------------------------------------------------------

class HalfNearest(nn.Module):
    """x2 nearest neighbour at 0.7 times the brightness: its output is known exactly for any depth."""

    def forward(self, x):
        return nn.functional.interpolate(0.7 * x, scale_factor=2, mode="nearest")


def test_sixteen_bit_pixels_are_scaled_by_65535():
    """Breaks if 16-bit pixels are scaled by 1/255 (or any factor but 1/65535) on the way in or out."""
    spec = ArchSpec(name="HalfNearest", build=lambda scale: HalfNearest(), input_range=1.0, min_size=1,
                    size_multiple=1, tile_overlap=0, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    engine = Engine(HalfNearest(), spec, 2, device="cpu")
    rng = np.random.default_rng(7)
    rgb16 = rng.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    out = pixel_pipeline.upscale_pixels(engine, rgb16)
    expected = np.round(rgb16.astype(np.float64) * 0.7).repeat(2, axis=0).repeat(2, axis=1)
    assert out.dtype == np.uint16 and out.shape == (12, 10, 3)
    # Rounded, not truncated: float32 arithmetic may land a value just across a .5 now and then.
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    assert np.mean(out != expected) < 0.05
    gray16 = rgb16[..., 0]
    out_gray = pixel_pipeline.upscale_pixels(engine, gray16)
    assert np.abs(out_gray.astype(np.int64) - expected[..., 0]).max() <= 1
    assert np.mean(out_gray != expected[..., 0]) < 0.05


def test_sixteen_bit_png_matches_its_eight_bit_twin_through_the_cli(tmp_path):
    """A real network on a 16-bit PNG gives the 8-bit result x 257 (within rounding)."""
    rng = np.random.default_rng(3)
    eight = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "deep.png"), eight.astype(np.uint16) * 257)
    assert cv2.imwrite(str(tmp_path / "flat.png"), eight)
    code, _, err = run_cli("upscale", str(tmp_path / "deep.png"), str(tmp_path / "flat.png"), "--model", MODEL,
                           "--device", "cpu", "-q")
    assert code == 0, err
    deep = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    flat = cv2.imread(str(tmp_path / "flat_x2.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and flat.dtype == np.uint8
    assert np.abs(deep.astype(np.int64) / 257 - flat.astype(np.int64)).max() <= 1.0


# -- alpha ------------------------------------------------------------------------------------------

def test_alpha_goes_through_the_network_not_a_resize(tmp_path, upscaler):
    """Breaks if alpha is resized (Lanczos, bicubic...) instead of upscaled by the network as gray."""
    yy, xx = np.mgrid[:16, :20]
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(4).integers(0, 256, (16, 20, 3))
    rgba[..., 3] = np.where((yy - 8) ** 2 + (xx - 10) ** 2 < 30, 255, 0)  # a hard-edged cut-out
    rgba[2:5, 2:6, 3] = 128
    assert cv2.imwrite(str(tmp_path / "cut.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    code, _, err = run_cli("upscale", str(tmp_path / "cut.png"), "--model", MODEL, "--device", "cpu", "-q")
    assert code == 0, err
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "cut_x2.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    # The reference: the network's own output on the alpha plane as a gray (3 equal channels) image.
    alpha_as_rgb = np.repeat(rgba[..., 3:4], 3, axis=2)
    through_network = np.round(upscaler.upscale(alpha_as_rgb).astype(np.float64).mean(axis=2))
    assert np.abs(written[..., 3].astype(int) - through_network).max() <= 1
    lanczos = cv2.resize(rgba[..., 3], (40, 32), interpolation=cv2.INTER_LANCZOS4)
    assert np.abs(lanczos.astype(int) - through_network).max() > 10  # the reference can tell them apart
    np.testing.assert_array_equal(written[..., :3], upscaler.upscale(rgba[..., :3]))


# -- video frames ------------------------------------------------------------------------------------

LOSSLESS_RGB = ["--codec", "ffv1", "--pix-fmt", "bgr0"]  # ffv1 in RGB: the written frames are exact


def _expected_frames(source: Path, upscaler: Upscaler) -> np.ndarray:
    """The decoded input frames, upscaled one by one through the Python API."""
    return np.stack([upscaler.upscale(frame) for frame in decode(source)])


def test_video_frames_are_the_input_frames_upscaled_in_order(tmp_path):
    """Breaks if frames of a batch (or batches) are reordered, dropped or duplicated."""
    # fp32 asked for: in fp16 (auto on a CPU with AMX-FP16) a batch of 4 and single frames round apart
    # more often (0.17% of values by one level, measured), past this test's tight bound.
    source = make_clip(tmp_path / "clip.mkv", seconds=1.5)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "--batch", "4", "-q",
                           "--precision", "fp32", *LOSSLESS_RGB)
    assert code == 0, err
    written = decode(tmp_path / "clip_x2.mkv")
    expected = _expected_frames(source, Upscaler(MODEL, device="cpu", precision="fp32"))
    assert written.shape == expected.shape == (18, 48, 64, 3)
    assert all(np.abs(expected[i].astype(int) - expected[i + 1]).max() > 20 for i in range(len(expected) - 1))
    # Batches of 4 against frames one by one: float sums in another order may round one value differently.
    assert np.abs(written.astype(int) - expected).max() <= 1
    assert np.mean(written != expected) < 1e-3


# -- resume ------------------------------------------------------------------------------------------

def test_resume_reuses_finished_segments(tmp_path, monkeypatch, upscaler):
    """Breaks if --resume ignores finished segments and starts over (or skips unfinished ones)."""
    from lightsr_cli.pipeline import video as video_pipeline

    source = make_clip(tmp_path / "clip.mkv", seconds=1)  # 12 frames: 4 segments of 3
    target = tmp_path / "out.mkv"
    parts = tmp_path / ".out.mkv.lightsr-parts"
    common = ["upscale", str(source), "-o", str(target), "--model", MODEL, "--device", "cpu", "-q",
              "--segment-seconds", "0.25", *LOSSLESS_RGB]
    real_upscale_rgb = video_pipeline.upscale_rgb
    upscaled: list[int] = []

    def interrupted_at_the_eighth_frame(engine, frames, reporter=None):
        if sum(upscaled) >= 7:
            # Frames 0-5 are upscaled, so segments 0 and 1 can finish; wait for them, then "Ctrl-C".
            deadline = time.monotonic() + 60
            while not (parts / "segment_00001.mkv").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt
        upscaled.append(len(frames))
        return real_upscale_rgb(engine, frames, reporter)

    monkeypatch.setattr(video_pipeline, "upscale_rgb", interrupted_at_the_eighth_frame)
    code, _, err = run_cli(*common)
    assert code == ExitCode.INTERRUPTED, err
    assert not target.exists()
    finished = sorted(parts.glob("segment_?????.mkv"))
    assert [p.name for p in finished] == ["segment_00000.mkv", "segment_00001.mkv"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished}

    def counting(engine, frames, reporter=None):
        upscaled.append(len(frames))
        return real_upscale_rgb(engine, frames, reporter)

    seen_at_join: dict[str, tuple[int, int]] = {}
    real_concat = video.concat_segments

    def snapshot_then_join(segments, *args, **kwargs):
        for segment in map(Path, segments):
            seen_at_join[segment.name] = (segment.stat().st_ino, segment.stat().st_mtime_ns)
        return real_concat(segments, *args, **kwargs)

    upscaled.clear()
    monkeypatch.setattr(video_pipeline, "upscale_rgb", counting)
    monkeypatch.setattr(video, "concat_segments", snapshot_then_join)
    code, out, err = run_cli(*common, "--resume", "--json")
    assert code == 0, err
    assert sum(upscaled) == 6  # only the frames of the two unfinished segments were upscaled
    assert json.loads(out)["video"]["resumed_from_frame"] == [6]
    assert all(seen_at_join[name] == stat for name, stat in before.items())  # the finished files were kept
    assert not parts.exists()
    assert np.abs(decode(target).astype(int) - _expected_frames(source, upscaler)).max() <= 1


# -- streams -----------------------------------------------------------------------------------------

def _packet_hashes(path: Path, selector: str) -> list[tuple[str, str]]:
    """(size, md5) of every packet of the selected streams, copied out without decoding."""
    lines = ffmpeg("-i", str(path), "-map", selector, "-c", "copy", "-f", "framemd5", "-").splitlines()
    rows = [[field.strip() for field in line.split(",")] for line in lines if line and not line.startswith("#")]
    return [(row[4], row[5]) for row in rows]


def test_audio_is_stream_copied_packet_for_packet(tmp_path):
    """Breaks if audio is re-encoded (even to the same codec) instead of copied."""
    source = make_clip(tmp_path / "clip.mkv", seconds=1, audio=True)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-q")
    assert code == 0, err
    before = _packet_hashes(source, "0:a")
    assert len(before) > 10
    assert _packet_hashes(tmp_path / "clip_x2.mkv", "0:a") == before


def _subtitle_text(path: Path) -> str:
    return ffmpeg("-i", str(path), "-map", "0:s:0", "-f", "srt", "-")


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_subtitle_text_and_timing_are_preserved(tmp_path, suffix):
    """SRT in mkv is copied; in mp4 it becomes mov_text. Either way the text and times survive."""
    source = make_clip(tmp_path / "clip.mkv", seconds=1.5, subtitles=True)
    target = tmp_path / f"out{suffix}"
    code, _, err = run_cli("upscale", str(source), "-o", str(target), "--model", MODEL, "--device", "cpu", "-q")
    assert code == 0, err
    original = _subtitle_text(source)
    assert "hello there" in original and "second line" in original
    assert _subtitle_text(target) == original


def test_avi_refuses_subtitles_with_its_own_message(tmp_path):
    """Breaks if the refusal is replaced by any other failure: a crash exits 70, not 1."""
    source = make_clip(tmp_path / "clip.mkv", seconds=0.5, subtitles=True)
    code, _, err = run_cli("upscale", str(source), "--model", MODEL, "--device", "cpu", "-o", str(tmp_path / "out.avi"))
    assert code == ExitCode.FAILURE, err
    assert re.search(r"error: .*\.avi output cannot hold subtitles \(stream #1, subrip\)", err), err
    assert "hint: write a .mkv or .mp4 output" in err
    assert "unexpected failure" not in err
    assert not (tmp_path / "out.avi").exists()


def test_gray_is_the_mean_of_the_networks_three_channels(upscaler):
    """Gray goes through the network as three equal channels and comes back as their mean."""
    gray = np.random.default_rng(8).integers(0, 256, (12, 14), dtype=np.uint8)
    as_rgb = upscaler.upscale(np.repeat(gray[:, :, None], 3, axis=2)).astype(np.float64)
    assert np.abs(as_rgb[..., 0] - as_rgb[..., 1]).max() >= 1  # the channels do differ a little
    result = upscaler.upscale(gray)
    assert result.shape == (24, 28) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, np.round(as_rgb.mean(axis=2)))
