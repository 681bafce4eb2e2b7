"""Which backend runs a model: `--backend torch|onnxruntime|auto`.

``auto`` takes the faster backend for the model on that kind of device, as measured by
``benchmarks/backend_speed.py`` (alternating rounds, outputs checked equal) and written to
``benchmarks/results-backend-cpu.json``; :data:`MEASURED_PICKS` adopts picks from that file
(tests/test_onnx_backend.py checks that every adopted pick is the file's). A model or device without
an adopted pick runs on torch, as does anything only torch does (``--compile``, bf16).
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "torch", "onnxruntime")
TORCH_DEVICES = ("auto", "cpu", "cuda", "mps", "xpu", "rocm", "hip")
"""Device kinds torch serves; other --device names (dml, coreml, openvino, tensorrt, ...) only onnxruntime does."""

MEASURED_ON = "CPU (2 vCPU EPYC, quiet), benchmarks/results-backend-cpu.json"
MEASURED_PICKS: dict[str, dict[str, str]] = {
    # Quiet rerun after the allocator fix (320x180 -> 1280x720, 5 alternating rounds): onnxruntime won
    # for EMT (1.54x: its attention kernels) and PlainUSR (1.20x); torch won or tied for BSRN, A2N and
    # PlainUSR-U. Models not measured run on torch.
    "cpu": {"emt-x4": "onnxruntime", "plainusr-x4": "onnxruntime"},
}
"""device kind -> model id -> the faster backend (only models where onnxruntime won are listed)."""


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda'; 'auto' -> what torch would pick here (cuda, mps or cpu)."""
    kind = (device or "auto").strip().lower().partition(":")[0]
    if kind != "auto":
        return kind
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def pick_backend(requested: str, model_id: str, device: str, settings=None) -> str:
    """'torch' or 'onnxruntime' for this model on this device (auto: only where measured faster)."""
    from ..errors import UsageError

    requested = (requested or "torch").strip().lower()
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend '{requested}'", hint=f"choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    kind = (device or "auto").strip().lower().partition(":")[0]
    if kind not in TORCH_DEVICES:
        return "onnxruntime"  # a device only onnxruntime serves
    torch_only = settings is not None and (settings.compile or (settings.precision or "").lower() == "bf16")
    if torch_only or not onnxruntime_installed():
        return "torch"
    return MEASURED_PICKS.get(device_kind(device), {}).get(model_id, "torch")
