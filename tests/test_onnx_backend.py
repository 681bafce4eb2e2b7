"""`--backend onnxruntime`: the engine contract on an ONNX Runtime session, the graph cache, providers.

Parity: the parity fixtures of ../shared/reference/parity (one checkpoint per architecture that ONNX
Runtime runs; GRL does not, see test_grl_is_refused_clearly) within 1e-4 of the torch backend; Set5
PSNR-Y within 0.01 dB on a subset (the 2 smallest images per model, x4 models and A2N x3).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lightsr_cli.cli import app
from lightsr_cli.engine import backends
from lightsr_cli.engine.onnx_engine import OnnxEngine, choose_providers, make_session
from lightsr_cli.errors import DeviceError, UsageError
from lightsr_cli.media.images import read_image
from lightsr_cli.metrics import crop_to_match, psnr_y
from lightsr_cli.pipeline import evaluation, loading, onnx_models, pixels
from lightsr_cli.registry import get_card

from .onnx_graphs import install_cached

pytest.importorskip("onnxruntime", reason="onnxruntime (lightsr[onnx]) is not installed")
REPO = Path(__file__).resolve().parent.parent
PARITY = {"bsrn-s-x4": "BSRN__net_g_BSRN-S", "a2n-x3": "A2N__aan_x3", "emt-x4": "EMT__EMT_LSR_x4",
          "plainusr-u-x4": "PlainUSR__PlainUSRU_Rep_x4"}


@pytest.fixture
def mirror(official_weights, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    return official_weights


def _engines(model_id: str, **settings):
    install_cached(model_id)
    card = get_card(model_id)
    # fp32 asked for: on a CPU with an fp16 matrix unit, auto would run some models in fp16 on torch.
    torch_engine = loading.load_engine(card, loading.EngineSettings(device="cpu", backend="torch", precision="fp32",
                                                                    **settings))
    ort_engine = loading.load_engine(card, loading.EngineSettings(device="cpu", backend="onnxruntime", **settings))
    assert isinstance(ort_engine, OnnxEngine) and ort_engine.backend == "onnxruntime"
    return torch_engine, ort_engine


@pytest.mark.parametrize("model_id", sorted(PARITY))
def test_parity_inputs_match_the_torch_backend(model_id, mirror, parity_dir):
    fixture = np.load(parity_dir / f"{PARITY[model_id]}.npz")
    lr = torch.from_numpy(fixture["lr"])
    torch_engine, ort_engine = _engines(model_id, tile=0)
    ours, theirs = ort_engine.upscale(lr), torch_engine.upscale(lr)
    assert ours.shape == theirs.shape == fixture["sr"].shape
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert np.abs(ours.numpy() - fixture["sr"]).max() <= 1e-4  # and the official code's output


@pytest.mark.parametrize("model_id", sorted(PARITY))
def test_set5_psnr_within_a_hundredth_of_a_db(model_id, mirror, shared_dir):
    card = get_card(model_id)
    torch_engine, ort_engine = _engines(model_id, tile=0)
    root = shared_dir / "data" / "benchmarks" / "Set5" / f"x{card.scale}"
    smallest = sorted(root.joinpath("LR").iterdir(), key=lambda p: np.prod(read_image(p).shape[:2]))[:2]
    for lr_path in smallest:
        lr = evaluation.as_rgb(read_image(lr_path))
        hr = evaluation.as_rgb(read_image(root / "HR" / lr_path.name))
        scores = [psnr_y(sr, crop_to_match(hr, sr), card.scale)
                  for sr in (pixels.upscale_pixels(engine, lr) for engine in (torch_engine, ort_engine))]
        assert abs(scores[0] - scores[1]) <= 0.01, (lr_path.name, scores)


def test_tiles_batches_and_uint8_go_through_the_same_contract(mirror):
    torch_engine, ort_engine = _engines("bsrn-s-x4", tile=32, batch=3)
    images = (torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    ours = ort_engine.upscale(images, to_uint8=True)
    assert ort_engine.stats.tiles > 2 and ort_engine.stats.tile == 32
    theirs = torch_engine.upscale(images, to_uint8=True)
    assert ours.dtype == torch.uint8 and ours.shape == (2, 3, 180, 280)
    assert (ours.int() - theirs.int()).abs().max().item() <= 1  # rounding of values within 1e-4
    single = loading.load_engine(get_card("bsrn-s-x4"), loading.EngineSettings(device="cpu", backend="onnxruntime",
                                                                                tile=32, batch=1))
    torch.testing.assert_close(single.upscale(images[1:]), ort_engine.upscale(images[1:]), atol=1e-5, rtol=0)


def test_nan_output_in_fp32_is_an_error_and_fp16_overflow_recomputes_in_fp32(tmp_path):
    from lightsr_cli.archs.spec import ArchSpec
    from lightsr_cli.errors import LightsrError

    class Overflows(torch.nn.Module):  # x * 70000 is inf in fp16 (then inf - inf = NaN), fine in fp32
        def forward(self, x):
            y = torch.nn.functional.interpolate(x * 70000, scale_factor=2, mode="nearest")
            return (y - y + y) / 70000

    spec = ArchSpec(name="Toy", build=lambda scale: Overflows(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=2, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        torch.onnx.export(Overflows(), (torch.rand(1, 3, 8, 8, dtype=dtype),), str(tmp_path / f"{name}.onnx"),
                          dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    choice = choose_providers("cpu")
    fp32, fp16 = make_session(tmp_path / "fp32.onnx", choice), make_session(tmp_path / "fp16.onnx", choice)
    image = torch.full((1, 3, 8, 8), 0.99)
    engine = OnnxEngine(fp16, spec, 2, choice=choice, fp16=True, fp32_session=fp32, tile=0)
    torch.testing.assert_close(engine.upscale(image), torch.full((1, 3, 16, 16), 0.99))
    assert engine.stats.fp32_fallbacks == 1
    nan = OnnxEngine(fp32, spec, 2, choice=choice, tile=0)
    with pytest.raises(LightsrError, match="NaN"):
        nan.upscale(torch.full((1, 3, 8, 8), float("inf")))


def test_graph_is_cached_once_under_a_lock_and_reexported_when_damaged(monkeypatch):
    card = get_card("bsrn-s-x4")
    calls = []
    real = onnx_models.export_onnx
    monkeypatch.setattr(onnx_models, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(onnx_models.cached_graph(card, None, False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and paths[0].is_file()
    record = json.loads(paths[0].with_name(paths[0].name + ".json").read_text())
    assert any(check["name"] == "natural image" and check["enforced"] for check in record["checks"])
    assert "opset17" in paths[0].name and "fp32" in paths[0].name and card.checkpoint.sha256[:16] in paths[0].name
    with open(paths[0], "r+b") as handle:  # a damaged cached graph is never used
        handle.seek(200)
        handle.write(b"\0" * 16)
    assert onnx_models.cached_graph(card, None, False) == paths[0] and len(calls) == 2


def test_providers_map_devices_and_refuse_missing_ones_naming_what_is_there():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    choice = choose_providers("cuda:1", gpu)
    assert choice.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert choice.options == ({"device_id": 1}, {})
    assert choose_providers("auto", gpu).providers[0] == "TensorrtExecutionProvider"
    assert choose_providers("auto", ["CPUExecutionProvider"]).providers == ("CPUExecutionProvider",)
    with pytest.raises(DeviceError, match="DmlExecutionProvider") as caught:
        choose_providers("dml", ["CPUExecutionProvider"])
    assert "CPUExecutionProvider" in caught.value.for_cli()[1]
    with pytest.raises(DeviceError):
        choose_providers("cuda:x", gpu)


def test_auto_backend_follows_the_committed_measurements():
    results = json.loads((REPO / "benchmarks" / "results-backend-cpu.json").read_text())
    adopted = backends.MEASURED_PICKS["cpu"]
    assert adopted and all(results["picks"][model] == pick for model, pick in adopted.items())
    assert backends.pick_backend("auto", "emt-x4", "cpu") == "onnxruntime"
    assert backends.pick_backend("auto", "bsrn-x4", "dml") == "onnxruntime"  # only onnxruntime serves it
    assert backends.pick_backend("auto", "grl-tiny-x4", "cpu") == "torch"
    assert backends.pick_backend("torch", "emt-x4", "cpu") == "torch"
    with pytest.raises(UsageError):
        backends.pick_backend("tvm", "emt-x4", "cpu")


def test_grl_is_refused_clearly():
    with pytest.raises(UsageError, match="GRL does not run on"):
        loading.load_engine(get_card("grl-tiny-x2"), loading.EngineSettings(device="cpu", backend="onnxruntime"))


def test_video_and_resume_run_through_onnxruntime(tmp_path, mirror):
    import os
    import signal
    import subprocess
    import sys
    import time

    from .test_video_pipeline import decode_all, make_clip

    install_cached("plainusr-u-x2")
    source = make_clip(tmp_path / "clip.mkv", size="96x64", seconds=2, audio=False, subtitles=False)
    common = ["upscale", str(source), "-s", "2", "--model", "plainusr-u-x2", "--device", "cpu", "-q",
              "--segment-seconds", "0.25", "--codec", "ffv1", "--batch", "2"]
    result = CliRunner().invoke(app, [*common, "--backend", "onnxruntime", "-o", str(tmp_path / "a.mkv"), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "onnxruntime"
    assert CliRunner().invoke(app, [*common, "--backend", "torch", "--precision", "fp32",
                                    "-o", str(tmp_path / "t.mkv")]).exit_code == 0
    straight = decode_all(tmp_path / "a.mkv")
    assert straight.shape == (48, 128, 192, 3)
    difference = np.abs(straight.astype(int) - decode_all(tmp_path / "t.mkv").astype(int))
    assert difference.max() <= 4 and difference.mean() < 0.05  # +-1 in RGB, through YUV 4:2:0 and back
    # Interrupted after a few segments, then resumed: the same frames as the straight run.
    target, parts = tmp_path / "b.mkv", tmp_path / ".b.mkv.lightsr-parts"
    process = subprocess.Popen([sys.executable, "-m", "lightsr_cli", *common, "--backend", "onnxruntime", "-o",
                                str(target)], env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (parts / "segment_00002.mkv").exists():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "no segment finished in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    resumed = CliRunner().invoke(app, [*common, "--backend", "onnxruntime", "-o", str(target), "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    np.testing.assert_array_equal(decode_all(target), straight)
    assert not parts.exists()


def test_python_api_and_bench_take_the_backend(mirror):
    from lightsr_cli import Upscaler

    install_cached("bsrn-s-x4")
    image = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    ours = Upscaler("bsrn-s-x4", device="cpu", backend="onnxruntime")
    assert ours.engine.backend == "onnxruntime"
    theirs = Upscaler("bsrn-s-x4", device="cpu", backend="torch", precision="fp32").upscale(image)
    assert np.abs(ours.upscale(image).astype(int) - theirs.astype(int)).max() <= 1
    result = CliRunner().invoke(app, ["bench", "-m", "bsrn-s-x4", "--backend", "onnxruntime", "--device", "cpu",
                                      "--size", "64x48", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)[0]
    assert row["backend"] == "onnxruntime" and row["model_ms"] > 0
