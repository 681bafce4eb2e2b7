"""Where and how a network runs: the device, the compute precision, and what memory is there.

Asked once per engine; the rest of the engine reads the answers.
"""

from __future__ import annotations

import os

import torch

from ..archs.spec import ArchSpec
from ..errors import DeviceError, UsageError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA, then MPS, then CPU; an explicit device must exist."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
            raise DeviceError(f"{{--device {name}}} was requested but CUDA is not available ({build})",
                              hint="use {--device cpu}, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{{--device {name}}}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                              hint="use {--device cuda:0}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("{--device mps} was requested but Metal is not available", hint="use {--device cpu}")
    return device


def resolve_precision(requested: str, device: torch.device, spec: ArchSpec) -> tuple[torch.dtype, str | None]:
    """Pick the compute dtype; returns (dtype, note for the user or None).

    auto: fp32 on CPU; on GPUs fp16 where the architecture is proven safe, else bf16 where safe
    and supported, else fp32. An explicit half precision the architecture is not safe in is
    replaced by the safe choice, with a note, rather than risking black or NaN output.
    """
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision '{requested}'", hint=f"choose one of {', '.join(PRECISIONS)}")
    bf16_ok = spec.bf16_safe and (device.type != "cuda" or torch.cuda.is_bf16_supported())
    if requested == "fp32" or (requested == "auto" and device.type == "cpu"):
        return torch.float32, None
    if requested == "auto":
        if spec.fp16_safe:
            return torch.float16, None
        return (torch.bfloat16, None) if bf16_ok else (torch.float32, None)
    if requested == "fp16" and not spec.fp16_safe:
        fallback = torch.bfloat16 if bf16_ok else torch.float32
        return fallback, f"{spec.name} is not proven safe in fp16; using {dtype_name(fallback)} instead"
    if requested == "bf16" and not bf16_ok:
        return torch.float32, f"{spec.name} is not proven safe in bf16 on this device; using fp32 instead"
    return DTYPES[requested], None


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def available_host_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
