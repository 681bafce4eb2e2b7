"""`--precision auto` on a CPU that multiplies a half precision in hardware (issue #15).

fp16 where the CPU has an fp16 matrix unit (Intel AMX-FP16), else bf16 where it has bf16 dot products
(AVX512-BF16, AMX-BF16): there the models in engine.backends.MEASURED_CPU_HALF[that precision] run in it on
torch, measured faster than both backends in fp32 (benchmarks/results-backend-cpu-amx-fp16.json,
results-backend-cpu-avx512-bf16.json) and within 0.05 dB of fp32 on Set5 and Set14
(results-quality-cpu-fp16.json, results-quality-cpu-avx512-bf16.json). Everywhere else auto stays fp32 on
the CPU. Which CPU the tests run on does not matter: the CPU's half precision is stood in for where a test
needs one (both also compute, slowly, on CPUs without the instructions).
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
MEASURED = {  # half precision -> (speed file, quality file)
    "fp16": (REPO / "benchmarks" / "results-backend-cpu-amx-fp16.json",
             REPO / "benchmarks" / "results-quality-cpu-fp16.json"),
    "bf16": (REPO / "benchmarks" / "results-backend-cpu-avx512-bf16.json",
             REPO / "benchmarks" / "results-quality-cpu-avx512-bf16.json"),
}
EMBEDDED = "bsrn-s-x4"  # ships in weights/: no download, no ../shared
LEVELS_FROM_FP32 = {"fp16": 2, "bf16": 6}  # what rounding alone moves the embedded model's output by


def _cpu_with(monkeypatch, half: str | None) -> None:
    monkeypatch.setattr(devices, "cpu_half_precision", lambda: half)


@pytest.mark.parametrize("half", sorted(MEASURED))
def test_the_adopted_models_are_exactly_the_measured_faster_and_faithful_ones(half):
    speed_file, quality_file = MEASURED[half]
    speed = json.loads(speed_file.read_text())
    # measured on a CPU that multiplies it in hardware (the fp16 file predates the field that names it)
    assert speed.get("cpu_half_precision", "fp16" if speed.get("cpu_has_fp16_matrix_unit") else None) == half
    safe = (lambda spec: spec.fp16_safe) if half == "fp16" else (lambda spec: spec.bf16_safe)
    for row in speed["rows"]:  # a model not safe in the half ran fp32 in its place, and is not picked
        in_half = safe(get_spec(get_card(row["model"]).arch))
        assert row["half_precision_ran"] == (half if in_half else "fp32"), row["model"]
        assert in_half or row["half_pick"] != f"torch {half}"
    faster = {model for model, pick in speed["half_picks"].items() if pick == f"torch {half}"}
    scores: dict[str, dict[str, float]] = {}
    for row in json.loads(quality_file.read_text()):
        assert row["precision"] == half and not row["tta"]
        scores.setdefault(row["model"], {})[row["dataset"]] = row["diff_vs_torch_db"]
    faithful = {model for model, diffs in scores.items()
                if set(diffs) == {"Set5", "Set14"} and min(diffs.values()) >= -0.05}
    assert faster & faithful == backends.MEASURED_CPU_HALF[half]
    assert EMBEDDED in backends.MEASURED_CPU_HALF[half] and "emt-x4" not in backends.MEASURED_CPU_HALF[half]
    assert all(safe(get_spec(get_card(model).arch)) for model in backends.MEASURED_CPU_HALF[half])


def test_bf16_is_not_adopted_where_it_costs_quality():
    """bf16 keeps 8 mantissa bits: the x2 models it moves past 0.05 dB stay fp32 even where it is faster."""
    speed_file, quality_file = MEASURED["bf16"]
    costly = {row["model"] for row in json.loads(quality_file.read_text()) if row["diff_vs_torch_db"] < -0.05}
    assert "bsrn-x2" in costly  # -0.08 dB on Set5
    assert not costly & backends.MEASURED_CPU_HALF["bf16"]


@pytest.mark.parametrize("half", [*sorted(MEASURED), None])
def test_auto_means_the_cpus_half_only_for_models_measured_in_it(monkeypatch, half):
    _cpu_with(monkeypatch, half)
    expected = half or "auto"
    assert backends.auto_precision("auto", "auto", EMBEDDED, "cpu") == expected
    assert backends.auto_precision("AUTO", "torch", EMBEDDED, "cpu") == expected
    assert backends.auto_precision("fp32", "auto", EMBEDDED, "cpu") == "fp32"  # asked for: kept
    assert backends.auto_precision("bf16", "auto", EMBEDDED, "cpu") == "bf16"
    assert backends.auto_precision("auto", "onnxruntime", EMBEDDED, "cpu") == "auto"  # no fast half there
    assert backends.auto_precision("auto", "auto", "emt-x4", "cpu") == "auto"  # measured slower / not safe
    assert backends.auto_precision("auto", "auto", EMBEDDED, "cuda:1") == "auto"  # the engine decides GPUs
    if half:  # a model adopted in the other precision only stays fp32 here
        other = backends.MEASURED_CPU_HALF["fp16" if half == "bf16" else "bf16"]
        for model in sorted(other - backends.MEASURED_CPU_HALF[half]):
            assert backends.auto_precision("auto", "auto", model, "cpu") == "auto", model


def test_the_cpus_half_precision_follows_its_instructions(monkeypatch):
    cases = [({"amx_tile": True, "amx_fp16": True, "amx_bf16": True, "avx512_bf16": True}, "fp16"),
             ({"amx_tile": True, "amx_bf16": True, "avx512_bf16": True}, "bf16"),  # Sapphire Rapids
             ({"avx512_bf16": True}, "bf16"),  # Zen 4/5, Cooper Lake
             ({"amx_tile": False, "amx_fp16": True, "avx2": True}, None),
             ({}, None)]
    for capabilities, expected in cases:
        monkeypatch.setattr(devices, "_cpu_capabilities", lambda capabilities=capabilities: capabilities)
        assert devices.cpu_half_precision() == expected, capabilities


def test_a_half_precision_on_the_cpu_runs_on_torch_even_where_onnxruntime_is_the_fp32_pick():
    assert backends.MEASURED_PICKS["cpu"]["emt-x4"] == "onnxruntime"
    if backends.onnxruntime_installed():
        assert backends.pick_backend("auto", "emt-x4", "cpu", loading.EngineSettings(precision="fp32")) == "onnxruntime"
    for half in MEASURED:
        assert backends.pick_backend("auto", "emt-x4", "cpu", loading.EngineSettings(precision=half)) == "torch"


@pytest.mark.parametrize("half", sorted(MEASURED))
def test_an_engine_loaded_with_auto_runs_the_half_there_and_fp32_elsewhere(monkeypatch, half):
    frame = synthetic_frame(24, 40)
    fp32 = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", precision="fp32", tile=0))
    reference = upscale_pixels(fp32, frame).astype(int)

    _cpu_with(monkeypatch, None)
    plain = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0, backend="auto"))
    assert plain.precision == "fp32"
    assert np.array_equal(upscale_pixels(plain, frame).astype(int), reference)

    _cpu_with(monkeypatch, half)
    engine = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0, backend="auto"))
    assert engine.precision == half and getattr(engine, "backend", "torch") == "torch"
    difference = np.abs(upscale_pixels(engine, frame).astype(int) - reference)
    assert 0 < difference.max() <= LEVELS_FROM_FP32[half]  # really the half, and within its rounding of fp32
    pool = loading.load_pool(get_card(EMBEDDED), loading.EngineSettings(device="cpu", tile=0))
    assert pool.engines[0].precision == half


@pytest.mark.parametrize("half", sorted(MEASURED))
def test_the_cli_says_which_precision_ran(tmp_path, monkeypatch, half):
    import cv2

    _cpu_with(monkeypatch, half)
    source = tmp_path / "in.png"
    assert cv2.imwrite(str(source), synthetic_frame(20, 28))
    result = CliRunner().invoke(app, ["upscale", str(source), "-m", EMBEDDED, "--device", "cpu", "--json",
                                      "-o", str(tmp_path / "auto.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == half
    result = CliRunner().invoke(app, ["upscale", str(source), "-m", EMBEDDED, "--device", "cpu", "--json",
                                      "--precision", "fp32", "-o", str(tmp_path / "fp32.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == "fp32"


def test_a_cpu_without_a_half_keeps_fp32(monkeypatch):
    _cpu_with(monkeypatch, None)
    engine = loading.load_engine(get_card(EMBEDDED), loading.EngineSettings(device="cpu"))
    assert engine.precision == "fp32"


def test_eval_scores_in_fp32_on_the_cpu_unless_asked(tmp_path, monkeypatch):
    """`lightsr eval` reproduces the papers' (fp32) scores: auto does not take the CPU's half precision there."""
    import cv2

    dataset = tmp_path / "Tiny" / "x4"
    for kind, side in (("HR", 4), ("LR", 1)):
        (dataset / kind).mkdir(parents=True)
        assert cv2.imwrite(str(dataset / kind / "a.png"), synthetic_frame(20 * side, 24 * side))
    _cpu_with(monkeypatch, "bf16")
    scores = {}
    for asked in ("auto", "bf16"):
        result = CliRunner().invoke(app, ["eval", str(tmp_path / "Tiny"), "-m", EMBEDDED, "--device", "cpu",
                                          "--precision", asked, "--json"])
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)
        scores[row["precision"]] = row["psnr_y"]
    assert set(scores) == {"fp32", "bf16"} and scores["fp32"] != scores["bf16"]
