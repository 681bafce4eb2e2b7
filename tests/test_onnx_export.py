"""`lightsr models export --onnx`: every architecture verified against torch, metadata, safe writes.

Real checkpoints come from ../shared (skipped without it), except BSRN-S, which ships with lightsr,
and GRL, whose official checkpoints are not in ../shared: a small GRL with seeded random weights
(the same code paths) stands in for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lightsr_cli import archs
from lightsr_cli.cli import app
from lightsr_cli.engine.onnx_export import ExportSettings, export_onnx, natural_image, parse_static
from lightsr_cli.errors import ModelError, UsageError
from lightsr_cli.registry import get_card

from .onnx_graphs import exported

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (lightsr[onnx]) is not installed")
onnx = pytest.importorskip("onnx", reason="onnx (lightsr[onnx]) is not installed")

# One checkpoint per architecture that exports with a dynamic size (x4 where ../shared has it).
DYNAMIC = ["bsrn-s-x4", "a2n-x3", "emt-x4", "plainusr-u-x4", "plainusr-x4"]


@pytest.fixture
def mirror(official_weights, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    return official_weights


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _set5_crop(shared_dir: Path, scale: int, size: int = 48) -> np.ndarray:
    """A real LR crop (Set5 'bird' at this scale), H x W x 3 float32 RGB in [0,1]."""
    bgr = cv2.imread(str(shared_dir / "data" / "benchmarks" / "Set5" / f"x{scale}" / "LR" / "img_002.png"))
    return bgr[:size, 3:size + 3, ::-1].astype(np.float32) / 255.0


def _torch_network(model_id: str, shared_dir: Path):
    from lightsr_cli.pipeline.loading import load_network
    from lightsr_cli.progress import NullReporter

    return load_network(get_card(model_id), NullReporter(), None)


@pytest.mark.parametrize("model_id", DYNAMIC)
def test_export_matches_torch_on_noise_smooth_natural_and_a_set5_crop(model_id, mirror, shared_dir):
    result = exported(model_id)
    for check in result.checks:
        assert check.shape[0] >= 1 and len(check.shape) == 4
        if check.enforced:
            assert check.max_abs_diff <= 1e-4, check
    assert [c.name for c in result.checks] == ["uniform noise", "smooth random", "natural image"]
    assert sum(c.enforced for c in result.checks) >= 2  # smooth and natural always count
    # A real photo crop, at a size the export never saw, through a fresh session.
    card = get_card(model_id)
    crop = _set5_crop(shared_dir, card.scale)
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    spec = archs.get_spec(card.arch)
    with torch.no_grad():
        want = _torch_network(model_id, shared_dir)(torch.from_numpy(x) * spec.input_range).numpy() / spec.input_range
    assert got.shape == (1, 3, 48 * card.scale, 48 * card.scale)
    assert np.abs(got - want).max() <= 1e-4


def test_emt_noise_check_is_reported_not_enforced_because_emt_runs_away_on_noise(mirror):
    noise = exported("emt-x4").checks[0]
    assert noise.name == "uniform noise" and not noise.enforced and "runs away" in noise.note


def test_metadata_tells_a_consumer_how_to_run_the_graph(mirror):
    model = onnx.load(str(exported("emt-x4").path))
    meta = {entry.key: entry.value for entry in model.metadata_props}
    assert meta["lightsr.architecture"] == "EMT" and meta["lightsr.scale"] == "4"
    assert meta["lightsr.input"].endswith("range 0-1") and meta["lightsr.network_input_range"].startswith("0-255")
    assert meta["lightsr.min_size"] == "17" and meta["lightsr.size_multiple"] == "1"
    assert "reflect" in meta["lightsr.padding"] and meta["lightsr.license"].startswith("MIT")
    assert meta["lightsr.version"] and len(meta["lightsr.weights_sha256"]) == 64
    assert meta["lightsr.dynamic_size"] == "yes" and model.producer_name == "lightsr"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_plainusr_exports_without_scatternd(mirror):
    model = onnx.load(str(exported("plainusr-x4").path))
    assert "ScatterND" not in {node.op_type for node in model.graph.node}


def test_cli_export_static_fp16_json_and_no_overwrite(tmp_path):
    target = tmp_path / "bsrn.onnx"
    code, out, err = run_cli("models", "export", "bsrn-s-x4", "--onnx", "-o", str(target), "--static", "40x24",
                             "--json")
    assert code == 0, err
    report = json.loads(out)
    assert all(c["max_abs_diff"] <= 1e-4 for c in report["checks"] if c["enforced"])
    assert [c["shape"] for c in report["checks"]] == [[1, 3, 24, 40]] * 3
    dims = onnx.load(str(target)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 24, 40]
    before = target.read_bytes()
    code, _, err = run_cli("models", "export", "bsrn-s-x4", "--onnx", "-o", str(target))
    assert code == 1 and "exists" in err and target.read_bytes() == before
    code, out, err = run_cli("models", "export", "bsrn-s-x4", "--onnx", "-o", str(target), "--overwrite", "--fp16")
    assert code == 0, err
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bsrn.onnx"]  # no temp files left


def test_cli_export_needs_a_model_and_a_format(tmp_path):
    assert run_cli("models", "export", "bsrn-s-x4", "-o", str(tmp_path / "a.onnx"))[0] == 2
    code, _, err = run_cli("models", "export", "--onnx", "-o", str(tmp_path / "a.onnx"))
    assert code == 2 and "model id" in err
    code, _, err = run_cli("models", "export", "bsrn-s-x4", "--onnx", "--static", "big")
    assert code == 2 and "WIDTHxHEIGHT" in err
    assert not list(tmp_path.iterdir())


def test_parse_static():
    assert parse_static("640x360") == (640, 360) and parse_static(None) is None
    with pytest.raises(UsageError):
        parse_static("0x10")


# -- GRL: static sizes only --------------------------------------------------------------------

MICRO_GRL = {"in_channels": 3, "embed_dim": 36, "depths": [4, 2], "num_heads_window": [2, 3],
             "num_heads_stripe": [3, 2], "window_size": 8, "stripe_size": [16, 32], "stripe_shift": True,
             "mlp_ratio": 2.0, "qkv_bias": True, "qkv_proj_type": "linear", "anchor_proj_type": "avgpool",
             "anchor_window_down_factor": 4, "local_connection": True, "upsampler": "pixelshuffledirect"}


def _micro_grl():
    torch.manual_seed(0)
    spec = archs.get_spec("GRL")
    return spec.build(scale=2, **MICRO_GRL).eval(), spec


def test_grl_exports_a_static_size_that_matches_torch(tmp_path):
    network, spec = _micro_grl()
    result = export_onnx(network, spec, 2, tmp_path / "grl.onnx", ExportSettings(static=(45, 37)), {})
    assert all(check.enforced and check.max_abs_diff <= 1e-4 for check in result.checks), result.checks
    x = natural_image(37, 45, seed=5).transpose(2, 0, 1)[None].copy()
    got = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.abs(got - network(torch.from_numpy(x)).numpy()).max() <= 1e-4


def test_grl_dynamic_export_names_what_stops_it(tmp_path):
    network, spec = _micro_grl()
    with pytest.raises(ModelError, match="aten::nonzero") as caught:
        export_onnx(network, spec, 2, tmp_path / "grl.onnx", ExportSettings(), {})
    assert "--static" in caught.value.for_cli()[1] and not list(tmp_path.iterdir())
