"""--device xpu (Intel GPUs through torch's XPU backend) and rocm/hip (AMD GPUs, 'cuda' on ROCm builds).

No Intel or AMD GPU here: torch.xpu and torch.version.hip are replaced by stand-ins that say what
such a machine's torch would say; the CPU-only build's real answers are checked too.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from lightsr_cli.archs import get_spec
from lightsr_cli.cli import app
from lightsr_cli.engine import resolve_device, resolve_precision
from lightsr_cli.engine.devices import describe_device
from lightsr_cli.errors import DeviceError, UsageError


@pytest.fixture
def two_intel_gpus(monkeypatch):
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 2)
    monkeypatch.setattr(torch.xpu, "current_device", lambda: 1)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda device=None: "Intel(R) Arc(TM) A770 Graphics")


def test_xpu_is_numbered_and_checked_against_the_visible_devices(two_intel_gpus):
    assert resolve_device("xpu") == torch.device("xpu", 1)  # the current device, as for cuda
    assert resolve_device("XPU:0") == torch.device("xpu", 0)
    with pytest.raises(DeviceError, match="only 2 Intel GPU"):
        resolve_device("xpu:2")
    assert describe_device(torch.device("xpu", 0)) == "xpu:0 (Intel(R) Arc(TM) A770 Graphics)"


def test_auto_does_not_pick_an_intel_gpu(two_intel_gpus):
    assert resolve_device("auto").type != "xpu"


def test_xpu_precision_follows_the_gpu_rules(two_intel_gpus):
    device = resolve_device("xpu")
    assert resolve_precision("auto", device, get_spec("BSRN"))[0] in (torch.float16, torch.bfloat16)
    assert resolve_precision("fp32", device, get_spec("BSRN"))[0] == torch.float32


def test_xpu_without_a_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    with pytest.raises(DeviceError) as caught:
        resolve_device("xpu")
    assert "no Intel GPU" in caught.value.message and "whl/xpu" in caught.value.hint


def test_xpu_on_a_torch_without_the_backend(monkeypatch):
    monkeypatch.delattr(torch, "xpu")
    with pytest.raises(DeviceError, match="has no XPU support"):
        resolve_device("xpu:0")


def test_cli_names_the_missing_intel_gpu_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    import cv2
    import numpy as np

    source = tmp_path / "a.png"
    cv2.imwrite(str(source), np.zeros((8, 8, 3), np.uint8))
    result = CliRunner().invoke(app, ["upscale", str(source), "--model", "bsrn-x2", "--device", "xpu"])
    assert result.exit_code == 1
    assert "error: --device xpu was requested but no Intel GPU is available" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a_x2.png").exists()


def test_rocm_names_map_to_cuda_on_rocm_builds(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("rocm") == torch.device("cuda", 0)
    assert resolve_device("hip:1") == torch.device("cuda", 1)


def test_rocm_names_on_other_builds_say_what_to_install(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(DeviceError) as caught:
        resolve_device("rocm")
    assert "ROCm build of torch" in caught.value.message and "appear as" in caught.value.hint


def test_unknown_device_lists_xpu():
    with pytest.raises(UsageError) as caught:
        resolve_device("tpu")
    assert "xpu" in caught.value.hint
