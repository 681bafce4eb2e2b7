"""`--precision auto` on a CPU with an fp16 matrix unit (Intel AMX-FP16, issue #15).

There the models in engine.backends.MEASURED_CPU_HALF run in fp16 on torch: measured faster than both
backends in fp32 (benchmarks/results-backend-cpu-amx-fp16.json) and within 0.05 dB of fp32 on Set5 and
Set14 (benchmarks/results-quality-cpu-fp16.json). Everywhere else auto stays fp32 on the CPU. Which CPU
the tests run on does not matter: the unit is stood in for where a test needs one (fp16 also computes,
slowly, on CPUs without it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lightsr_cli.archs import get_spec
from lightsr_cli.cli import app
from lightsr_cli.engine import backends, devices
from lightsr_cli.pipeline import loading
from lightsr_cli.pipeline.bench import synthetic_frame
from lightsr_cli.pipeline.pixels import upscale_pixels
from lightsr_cli.registry import get_card

REPO = Path(__file__).resolve().parent.parent
SPEED = REPO / "benchmarks" / "results-backend-cpu-amx-fp16.json"
QUALITY = REPO / "benchmarks" / "results-quality-cpu-fp16.json"
EMBEDDED = "bsrn-s-x4"  # ships in weights/: no download, no ../shared


@pytest.fixture
def fp16_cpu(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fp16_matrix_unit", lambda: True)


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fp16_matrix_unit", lambda: False)


def test_the_adopted_models_are_exactly_the_measured_faster_and_faithful_ones():
    speed = json.loads(SPEED.read_text())
    assert speed["cpu_has_fp16_matrix_unit"] is True  # measured on a CPU that has the unit
    assert all(row["half_precision_ran"] == "fp16" for row in speed["rows"])
    faster = {model for model, pick in speed["half_picks"].items() if pick == "torch fp16"}
    scores: dict[str, dict[str, float]] = {}
    for row in json.loads(QUALITY.read_text()):
        assert row["precision"] == "fp16" and not row["tta"]
        scores.setdefault(row["model"], {})[row["dataset"]] = row["diff_vs_torch_db"]
    faithful = {model for model, diffs in scores.items()
                if set(diffs) == {"Set5", "Set14"} and min(diffs.values()) >= -0.05}
    assert faster & faithful == backends.MEASURED_CPU_HALF
    assert EMBEDDED in backends.MEASURED_CPU_HALF and "emt-x4" not in backends.MEASURED_CPU_HALF
    assert all(get_spec(get_card(model).arch).fp16_safe for model in backends.MEASURED_CPU_HALF)


def test_auto_means_fp16_only_for_measured_models_on_a_cpu_with_the_unit(monkeypatch):
    for has_unit in (True, False):
        monkeypatch.setattr(devices, "cpu_has_fp16_matrix_unit", lambda has_unit=has_unit: has_unit)
        expected = "fp16" if has_unit else "auto"
        assert backends.auto_precision("auto", "auto", EMBEDDED, "cpu") == expected
        assert backends.auto_precision("AUTO", "torch", EMBEDDED, "cpu") == expected
        assert backends.auto_precision("fp32", "auto", EMBEDDED, "cpu") == "fp32"  # asked for: kept
        assert backends.auto_precision("bf16", "auto", EMBEDDED, "cpu") == "bf16"
        assert backends.auto_precision("auto", "onnxruntime", EMBEDDED, "cpu") == "auto"  # no fast fp16 there
        assert backends.auto_precision("auto", "auto", "emt-x4", "cpu") == "auto"  # fp16 measured slower
        assert backends.auto_precision("auto", "auto", EMBEDDED, "cuda:1") == "auto"  # the engine decides GPUs


def test_fp16_on_the_cpu_runs_on_torch_even_where_onnxruntime_is_the_fp32_pick():
    assert backends.MEASURED_PICKS["cpu"]["emt-x4"] == "onnxruntime"
    if backends.onnxruntime_installed():
        assert backends.pick_backend("auto", "emt-x4", "cpu", loading.EngineSettings(precision="fp32")) == "onnxruntime"
    assert backends.pick_backend("auto", "emt-x4", "cpu", loading.EngineSettings(precision="fp16")) == "torch"


def test_an_engine_loaded_with_auto_runs_fp16_there_and_fp32_elsewhere(monkeypatch):
    frame = synthetic_frame(24, 40)
    fp32 = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", precision="fp32", tile=0))
    reference = upscale_pixels(fp32, frame).astype(int)

    monkeypatch.setattr(devices, "cpu_has_fp16_matrix_unit", lambda: False)
    plain = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0, backend="auto"))
    assert plain.precision == "fp32"
    assert np.array_equal(upscale_pixels(plain, frame).astype(int), reference)

    monkeypatch.setattr(devices, "cpu_has_fp16_matrix_unit", lambda: True)
    half = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0, backend="auto"))
    assert half.precision == "fp16" and getattr(half, "backend", "torch") == "torch"
    difference = np.abs(upscale_pixels(half, frame).astype(int) - reference)
    assert 0 < difference.max() <= 2  # really fp16, and within rounding of fp32
    pool = loading.load_pool(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0))
    assert pool.engines[0].precision == "fp16"


def test_the_cli_says_which_precision_ran(tmp_path, fp16_cpu):
    import cv2

    source = tmp_path / "in.png"
    assert cv2.imwrite(str(source), synthetic_frame(20, 28))
    result = CliRunner().invoke(app, ["upscale", str(source), "-m", EMBEDDED, "--device", "cpu", "--json",
                                      "-o", str(tmp_path / "auto.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == "fp16"
    result = CliRunner().invoke(app, ["upscale", str(source), "-m", EMBEDDED, "--device", "cpu", "--json",
                                      "--precision", "fp32", "-o", str(tmp_path / "fp32.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == "fp32"


def test_a_plain_cpu_keeps_fp32(tmp_path, plain_cpu):
    engine = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu"))
    assert engine.precision == "fp32"

