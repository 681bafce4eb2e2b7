"""The CLI end to end on tiny generated images: outputs, naming, and every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lightsr_cli.cli import app
from tests.markers import needs_c_compiler

REPO = Path(__file__).resolve().parent.parent


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _png(path: Path, height=20, width=24, channels=3, dtype=np.uint8) -> Path:
    rng = np.random.default_rng(0)
    maximum = np.iinfo(dtype).max
    pixels = rng.integers(0, maximum, size=(height, width, channels) if channels > 1 else (height, width)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_single_image_default_name_and_size(tmp_path):
    source = _png(tmp_path / "photo.png")
    code, _, err = run("upscale", str(source), "--device", "cpu", "-q")
    assert code == 0, err
    out = cv2.imread(str(tmp_path / "photo_x4.png"))
    assert out.shape == (80, 96, 3)


def test_folder_recursive_mirrors_tree_and_json_summary(tmp_path):
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "in" / "sub" / "b.jpg")
    code, out, err = run("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "big"), "-s", "2", "-r",
                         "--device", "cpu", "--json")
    assert code == 0, err
    assert _files(tmp_path / "big") == ["a_x2.png", "sub/b_x2.jpg"]
    summary = json.loads(out)
    assert summary["files"] == 2 and summary["model"] == "bsrn-x2" and summary["scale"] == 2
    assert summary["megapixels_out"] == pytest.approx(4 * summary["megapixels_in"], rel=1e-3)
    assert sorted(summary["outputs"]) == sorted(str(tmp_path / "big" / n) for n in ("a_x2.png", "sub/b_x2.jpg"))
    assert cv2.imread(str(tmp_path / "big" / "sub" / "b_x2.jpg")).shape == (40, 48, 3)


def test_files_lightsr_does_not_read_are_reported_and_left_alone(tmp_path):
    _png(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.txt").write_text("shot list")
    netpbm = tmp_path / "in" / "scan.ppm"
    assert cv2.imwrite(str(netpbm), np.zeros((20, 24, 3), np.uint8))
    (tmp_path / "in" / "README").write_text("no extension")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    code, out, err = run("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "big"), "-s", "2", "--device", "cpu",
                         "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["files"] == 1 and summary["failed"] == []
    assert sorted(summary["ignored"]) == sorted(str(tmp_path / "in" / n) for n in ("README", "notes.txt", "scan.ppm"))
    assert _files(tmp_path / "big") == ["a_x2.png"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before
    code, _, err = run("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "again"), "-s", "2", "--device", "cpu")
    assert code == 0, err
    assert "left alone: 3 files that lightsr does not read" in " ".join(err.split())
    assert "(no extension) 1, .ppm 1, .txt 1" in " ".join(err.split())


def test_a_folder_of_only_other_files_says_what_it_found(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.ppm", "b.ppm", "c.txt"):
        (tmp_path / "in" / name).write_bytes(b"x")
    code, _, err = run("upscale", str(tmp_path / "in"), "--device", "cpu")
    assert code != 0
    assert "error: no images or videos found" in err
    assert "found only other files (.ppm 2, .txt 1)" in " ".join(err.split())
    assert "Traceback" not in err


def test_glob_with_model_tile_batch_and_format(tmp_path):
    for name in ("x.png", "y.png", "z.bmp"):
        _png(tmp_path / "scans" / name, 60, 70)
    code, out, err = run("upscale", str(tmp_path / "scans" / "*.png"), "--model", "bsrn-x4", "--tile", "16",
                         "--batch", "4", "--precision", "fp32", "--device", "cpu", "--format", "webp", "--json")
    assert code == 0, err
    assert _files(tmp_path / "scans") == ["x.png", "x_x4.webp", "y.png", "y_x4.webp", "z.bmp"]
    assert json.loads(out)["tile"] > 0


def test_outscale_resizes_to_the_final_factor(tmp_path):
    source = _png(tmp_path / "a.png", 20, 30)
    code, _, err = run("upscale", str(source), "--outscale", "3", "--device", "cpu", "-q")
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "a_x3.png")).shape == (60, 90, 3)


def test_in_place_folder_run_does_not_feed_outputs_back(tmp_path):
    _png(tmp_path / "a.png")
    assert run("upscale", str(tmp_path), "-s", "2", "--device", "cpu", "-q")[0] == 0
    code, _, err = run("upscale", str(tmp_path), "-s", "2", "--device", "cpu", "-q", "--skip-existing")
    assert code == 0, err
    assert _files(tmp_path) == ["a.png", "a_x2.png"]


@pytest.mark.parametrize("args,message,exit_code", [
    (["upscale", "{tmp}/missing.png"], "no such file or folder", 1),
    (["upscale", "{tmp}/notes.txt"], "unsupported file type", 1),
    (["upscale", "{tmp}/a.png", "--model", "bsrn-x5"], "model 'bsrn' has no x5 checkpoint", 1),
    (["upscale", "{tmp}/a.png", "--model", "nonsense"], "unknown model", 1),
    (["upscale", "{tmp}/a.png", "--model", "bsrn-x2", "-s", "4"], "upscales x2, not x4", 1),
    (["upscale", "{tmp}/a.png", "--model", "plainusr-s-x3"], "has no x3 checkpoint", 1),
    (["upscale", "{tmp}/a.png", "--device", "cuda"], "CUDA is not available", 1),
    (["upscale", "{tmp}/a.png", "--device", "cuda:0,cuda:1"], "CUDA is not available", 1),
    (["upscale", "{tmp}/a.png", "--device", "cpu,cpu"], "must all be numbered GPUs", 2),
    (["upscale", "{tmp}/a.png", "--device", "cuda:0,cuda:0"], "names a GPU twice", 2),
    (["bench", "--model", "bsrn-x4", "--device", "cuda:0,cuda:1"], "runs on one device", 2),
    (["upscale", "{tmp}/a.png", "-s", "5"], "--scale must be 2, 3 or 4", 2),
    (["upscale", "{tmp}/a.png", "--model", "bsrn-x4", "--preset", "fast"], "cannot be used together", 2),
    (["upscale", "{tmp}/a.png", "-o", "{tmp}/blocker/out/"], "cannot write", 1),
])
def test_errors_are_one_line_with_exit_code_and_no_output(tmp_path, args, message, exit_code):
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    before = _files(tmp_path)
    code, out, err = run(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--device", "cpu") \
        if "--device" not in args else run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == exit_code, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert _files(tmp_path) == before


def test_unknown_model_lists_valid_ids(tmp_path):
    _png(tmp_path / "a.png")
    code, _, err = run("upscale", str(tmp_path / "a.png"), "--model", "nonsense")
    assert code == 1 and "hint:" in err and "bsrn-x4" in err and "emt-x2" in err


def test_existing_output_is_refused_naming_the_file(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a_x4.png").write_bytes(b"keep me")
    code, _, err = run("upscale", str(tmp_path / "a.png"), "--device", "cpu")
    assert code == 1 and f"output exists: {tmp_path / 'a_x4.png'}" in err and "--overwrite" in err
    assert (tmp_path / "a_x4.png").read_bytes() == b"keep me"
    code, _, err = run("upscale", str(tmp_path / "a.png"), "--device", "cpu", "--overwrite", "-q")
    assert code == 0 and cv2.imread(str(tmp_path / "a_x4.png")).shape == (80, 96, 3)


def test_corrupt_image_gives_error_and_no_partial_output(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run("upscale", str(tmp_path / "bad.png"), "--device", "cpu")
    assert code == 1 and "cannot decode" in err
    assert _files(tmp_path) == ["bad.png"]


def test_folder_with_bad_files_finishes_the_rest_and_reports(tmp_path):
    _png(tmp_path / "in" / "good1.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    _png(tmp_path / "in" / "good2.png")
    code, _, err = run("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert code == 1
    assert _files(tmp_path / "out") == ["good1_x4.png", "good2_x4.png"]
    assert "broken.jpg" in err and "1 failed" in err


def test_help_does_not_import_torch():
    code = ("import sys, runpy; sys.argv = ['lightsr', '--help']\n"
            "try:\n    runpy.run_module('lightsr_cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = [name for name in ('torch', 'cv2', 'numpy', 'PIL', 'pillow_heif', 'pillow_jxl') if name in sys.modules]\n"
            "assert not heavy, f'imported {heavy}'\nprint('torch-free')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "torch-free" in result.stdout, result.stderr
    assert "upscale" in result.stdout


def test_importing_the_package_writes_nothing(tmp_path):
    env = {**os.environ, "LIGHTSR_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    code = "import lightsr_cli, lightsr_cli.cli, lightsr_cli.weights, lightsr_cli.registry; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_python_api_upscales_numpy_images():
    from lightsr_cli import Upscaler

    upscaler = Upscaler("bsrn-x2", device="cpu")
    gray16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500)
    out = upscaler.upscale(gray16)
    assert out.shape == (24, 20) and out.dtype == np.uint16 and out.max() > 255
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = 200
    rgba[2:8, 3:9, 3] = 0  # a transparent hole
    result = upscaler.upscale(rgba)
    assert result.shape == (20, 24, 4) and result[10, 12, 3] < 30 and result[0, 0, 3] > 170


@needs_c_compiler
def test_compile_flag_reaches_the_engine_and_the_summary(tmp_path):
    source = _png(tmp_path / "a.png", height=12, width=10)
    code, out, err = run("upscale", str(source), "--model", "bsrn-s-x4", "--device", "cpu", "--compile", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["compiled"] is True and report["files"] == 1
    assert cv2.imread(str(tmp_path / "a_x4.png")).shape == (48, 40, 3)
