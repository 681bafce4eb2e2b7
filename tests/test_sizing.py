"""Target sizes: --fit, --fill, --width, --height exact for images and videos, anamorphic video included."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lightsr_cli.cli import app
from lightsr_cli.errors import UsageError
from lightsr_cli.media import video
from lightsr_cli.pipeline.sizing import TargetSize, final_size, pick_network_scale, target_from_options


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("target", "size", "sar", "even", "expected"), [
    (TargetSize("fit", 100, 50), (33, 21), None, False, (79, 50)),      # height limits; 33*50/21 = 78.57
    (TargetSize("fit", 101, 1000), (33, 21), None, False, (101, 64)),   # width limits; 21*101/33 = 64.27
    (TargetSize("fill", 100, 50), (33, 21), None, False, (100, 64)),    # covers both: 63.6 -> 64
    (TargetSize("fill", 101, 51), (33, 21), None, True, (102, 64)),     # even: 101 -> 102, 21*102/33 = 64.9 -> 64
    (TargetSize("fit", 51, 51), (40, 30), Fraction(2), True, (50, 18)),  # 80x30 on screen; 18.75 -> 18
    (TargetSize("width", 641), (64, 48), None, False, (641, 481)),      # 480.75 -> 481
    (TargetSize("width", 641), (64, 48), None, True, (640, 480)),
    (TargetSize("height", height=99), (64, 48), Fraction(4, 3), False, (176, 99)),  # 85.33 wide on screen
])
def test_final_size_rules(target, size, sar, even, expected):
    assert final_size(target, *size, sar, even) == expected


def test_final_size_never_leaves_or_misses_the_box():
    rng = np.random.default_rng(3)
    for _ in range(300):
        width, height, box_w, box_h = (int(v) for v in rng.integers(1, 400, 4))
        fit = final_size(TargetSize("fit", box_w, box_h), width, height)
        fill = final_size(TargetSize("fill", box_w, box_h), width, height)
        assert fit[0] <= box_w and fit[1] <= box_h and (box_w in fit or box_h in fit)
        assert fill[0] >= box_w and fill[1] >= box_h and (box_w in fill or box_h in fill)
        even = final_size(TargetSize("fit", box_w + 2, box_h + 2), width, height, even=True)
        assert even[0] % 2 == 0 and even[1] % 2 == 0 and even[0] <= box_w + 2 and even[1] <= box_h + 2


def test_network_scale_is_the_smallest_that_reaches_the_factor():
    assert [pick_network_scale([f]) for f in (0.5, 1.9, 2.0, 2.01, 3.0, 3.5, 9.0)] == [2, 2, 2, 3, 3, 4, 4]
    assert pick_network_scale([1.5, 3.2]) == 4 and pick_network_scale([]) == 4


@pytest.mark.parametrize("options", [
    dict(fit="10x10", fill=None, width=None, height=None, outscale=2.0),
    dict(fit="10x10", fill="10x10", width=None, height=None, outscale=None),
    dict(fit=None, fill=None, width=10, height=10, outscale=None),
    dict(fit="10", fill=None, width=None, height=None, outscale=None),
    dict(fit="0x10", fill=None, width=None, height=None, outscale=None),
])
def test_conflicting_or_malformed_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        target_from_options(**options)


def test_outscale_with_fit_exits_2_on_the_command_line(tmp_path):
    source = tmp_path / "a.png"
    assert cv2.imwrite(str(source), np.zeros((8, 8, 3), np.uint8))
    code, _, err = run("upscale", str(source), "--fit", "20x20", "--outscale", "2")
    assert code == 2 and "--outscale" in err


@pytest.mark.parametrize(("option", "value", "shape", "model", "name"), [
    ("--fit", "101x51", (51, 80), "bsrn-x3", "a_fit101x51.png"),    # 33x21 -> factor 2.43: x3
    ("--fill", "101x51", (64, 101), "bsrn-x4", "a_fill101x51.png"),  # factor 3.06: x4
    ("--width", "57", (36, 57), "bsrn-x2", "a_w57.png"),             # 21*57/33 = 36.27
    ("--height", "83", (83, 130), "bsrn-x4", "a_h83.png"),           # 33*83/21 = 130.43; factor 3.95
])
def test_image_sizes_are_exact_and_the_scale_is_picked(tmp_path, option, value, shape, model, name):
    source = tmp_path / "a.png"
    rng = np.random.default_rng(4)
    assert cv2.imwrite(str(source), rng.integers(0, 255, (21, 33, 3)).astype(np.uint8))
    code, out, err = run("upscale", str(source), option, value, "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == model
    assert cv2.imread(str(tmp_path / name)).shape == (*shape, 3)


def test_an_explicit_model_is_kept_and_resized_down_with_area(tmp_path):
    source = tmp_path / "a.png"
    assert cv2.imwrite(str(source), np.full((20, 30, 3), 128, np.uint8))
    code, out, err = run("upscale", str(source), "--model", "bsrn-x4", "--fit", "45x45", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "bsrn-x4"
    result = cv2.imread(str(tmp_path / "a_fit45x45.png"))
    assert result.shape == (30, 45, 3) and abs(int(result.mean()) - 128) <= 2


def _clip(path: Path, size: str, sar: str | None = None) -> Path:
    filters = ["-vf", f"setsar={sar}"] if sar else []
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate=25:duration=0.12", *filters, "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    str(path)], check=True, capture_output=True)
    return path


def test_video_sizes_are_exact_and_even_for_yuv420p(tmp_path):
    clip = _clip(tmp_path / "c.mp4", "34x20")
    code, _, err = run("upscale", str(clip), "--fit", "61x61", "--model", "bsrn-x2", "--device", "cpu", "-q")
    assert code == 0, err
    info = video.probe_video(tmp_path / "c_fit61x61.mp4")
    assert (info.width, info.height) == (60, 36)  # 61 -> 60 (even, inside); 20*60/34 = 35.3 -> 36
    assert info.frame_count == 3
    code, _, err = run("upscale", str(clip), "--width", "51", "--model", "bsrn-x2", "--device", "cpu", "-q",
                       "--pix-fmt", "yuv444p")
    assert code == 0, err
    info = video.probe_video(tmp_path / "c_w51.mp4")
    assert (info.width, info.height) == (51, 30)  # 4:4:4 holds odd sizes: exact


def test_anamorphic_video_is_sized_in_display_pixels_with_square_samples(tmp_path):
    # 40x30 stored, SAR 2:1: shown 80x30. --height 45: width 80*45/30 = 120, height 45 -> 44 (even), width 117.3 -> 118.
    clip = _clip(tmp_path / "wide.mkv", "40x30", "2/1")
    assert video.probe_video(clip).sample_aspect_ratio == Fraction(2)
    code, _, err = run("upscale", str(clip), "--height", "45", "--model", "bsrn-x2", "--device", "cpu", "-q")
    assert code == 0, err
    info = video.probe_video(tmp_path / "wide_h45.mkv")
    assert (info.width, info.height) == (118, 44)
    assert info.sample_aspect_ratio in (None, Fraction(1))
