"""Which backend runs a model: `--backend torch|onnxruntime|auto`.

``auto`` takes the faster backend for the model on that kind of device, as measured by
``benchmarks/backend_speed.py`` (alternating rounds, outputs checked equal) and written to
``benchmarks/results-backend-cpu.json``; :data:`MEASURED_PICKS` adopts picks from that file
(tests/test_onnx_backend.py checks that every adopted pick is the file's). A model or device without
an adopted pick runs on torch, as does anything only torch does (``--compile``, bf16, fp16 on the CPU).

``--precision auto`` is fp32 on the CPU, except on CPUs that multiply a half precision in hardware
(``devices.cpu_half_precision``: fp16 with Intel AMX-FP16, else bf16 with AVX512-BF16 or AMX-BF16) for
the models in :data:`MEASURED_CPU_HALF` under that precision: there torch in that precision was measured
faster than both backends in fp32 (``benchmarks/backend_speed.py --half fp16|bf16``) and as faithful
(Set5/Set14 PSNR-Y within 0.05 dB of fp32: ``benchmarks/quality.py --precision fp16|bf16``);
tests/test_cpu_half.py keeps the files and this table in agreement.
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


MEASURED_CPU_HALF: dict[str, frozenset[str]] = {
    # Xeon 6 with AMX-FP16 (benchmarks/results-backend-cpu-amx-fp16.json, results-quality-cpu-fp16.json),
    # 1280x720 output, 5 alternating rounds: fp16 1.10x (plainusr-u-x2) to 3.1x (a2n-x2) faster than the faster
    # fp32 backend, one 8-bit level from fp32 at most, Set5/Set14 PSNR-Y within 0.002 dB. Not adopted: emt-x4
    # (fp16 0.67x: its attention runs in fp32 either way), plainusr-u-x4 and plainusr-s-x4 (0.78x, 0.90x:
    # too little work per conversion); models not measured (a2n-x4, GRL: not fp16-safe) stay fp32.
    "fp16": frozenset({
        "a2n-x2", "a2n-x3", "bsrn-s-x4", "bsrn-x2", "bsrn-x3", "bsrn-x4", "plainusr-l-x2", "plainusr-l-x4",
        "plainusr-m-x2", "plainusr-m-x4", "plainusr-s-x2", "plainusr-t-x2", "plainusr-t-x4", "plainusr-u-x2",
        "plainusr-x2", "plainusr-x4",
    }),
    # Zen 5 EPYC with AVX512-BF16 (benchmarks/results-backend-cpu-avx512-bf16.json,
    # results-quality-cpu-avx512-bf16.json), 1280x720 output, 5 alternating rounds: bf16 1.05x (plainusr-u-x4)
    # to 1.95x (a2n-x3) faster than the faster fp32 backend (bsrn-x4 1.43x), up to 4 8-bit levels from fp32,
    # Set5/Set14 PSNR-Y within 0.043 dB. Faster but not adopted, past 0.05 dB: bsrn-x2 (-0.084 dB),
    # plainusr-t-x2 and plainusr-l-x2 (-0.062). Not 5% faster: plainusr-u-x2, -s-x2, -s-x4, -m-x4; emt-x4 and
    # GRL stay fp32 (EMT is not bf16-safe; GRL not measured).
    "bf16": frozenset({
        "a2n-x2", "a2n-x3", "bsrn-s-x4", "bsrn-x3", "bsrn-x4", "plainusr-l-x4", "plainusr-m-x2", "plainusr-t-x4",
        "plainusr-u-x4", "plainusr-x2", "plainusr-x4",
    }),
}
"""half precision -> the models ``--precision auto`` runs in it on a CPU that multiplies it in hardware
(torch backend)."""


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


def auto_precision(requested: str, backend: str, model_id: str, device: str) -> str:
    """What ``--precision`` means for this model here: ``auto`` becomes fp16 or bf16 on a CPU that
    multiplies that precision in hardware, for the models measured faster and as faithful in it there;
    anything else is kept as asked (the engine resolves the rest of ``auto``)."""
    requested = (requested or "auto").strip().lower()
    if (requested != "auto" or (backend or "auto").strip().lower() == "onnxruntime"
            or not any(model_id in models for models in MEASURED_CPU_HALF.values())):
        return requested
    if device_kind(device) != "cpu":
        return requested
    from . import devices

    half = devices.cpu_half_precision()
    return half if half is not None and model_id in MEASURED_CPU_HALF[half] else requested


def pick_backend(requested: str, model_id: str, device: str, settings=None) -> str:
    """'torch' or 'onnxruntime' for this model on this device (auto: only where measured faster).

    ``settings`` (optional) carries what only torch does: --compile, bf16, and fp16 on the CPU (where
    onnxruntime has no fast fp16 kernels).
    """
    from ..errors import UsageError

    requested = (requested or "torch").strip().lower()
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend '{requested}'", hint=f"choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    if (device or "auto").strip().lower().partition(":")[0] not in TORCH_DEVICES:
        return "onnxruntime"  # a device only onnxruntime serves
    kind = device_kind(device)
    precision = (settings.precision or "").lower() if settings is not None else ""
    torch_only = settings is not None and (settings.compile or precision == "bf16"
                                           or (precision == "fp16" and kind == "cpu"))
    if torch_only or not onnxruntime_installed():
        return "torch"
    return MEASURED_PICKS.get(kind, {}).get(model_id, "torch")
