"""Where and how a network runs: the device, the compute precision, and what memory is there.

Asked once per engine; the rest of the engine reads the answers.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

from ..archs.spec import ArchSpec
from ..errors import DeviceError, UsageError
from .allocator import kept_free_bytes

PRECISIONS = ("auto", "fp32", "tf32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA, then MPS, then CPU; an explicit device must exist.

    'xpu' (Intel GPUs) is used when asked for by name only: it has not been measured against the
    CPU on any machine yet. 'rocm'/'hip' are accepted on ROCm builds, where AMD GPUs are 'cuda'.

    A GPU always comes back with its index ('cuda' -> 'cuda:N', N the current device now): an
    unnumbered device binds to whatever device is current when each tensor is made, so the
    network and a later call's inputs could land on different GPUs.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith(("rocm", "hip")):
        name = _rocm_as_cuda(name)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'", hint="use auto, cpu, cuda, cuda:N, xpu, xpu:N or mps") from None
    if device.type == "xpu":
        return _xpu_device(device, name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
            raise DeviceError(f"{{--device {name}}} was requested but CUDA is not available ({build})",
                              hint="use {--device cpu}, or install a CUDA build of torch "
                                   "on a machine with an NVIDIA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{{--device {name}}}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                              hint="use {--device cuda:0}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("{--device mps} was requested but Metal is not available", hint="use {--device cpu}")
    return device


def _rocm_as_cuda(name: str) -> str:
    """ROCm builds of torch drive AMD GPUs through the cuda device type: 'rocm:1' means 'cuda:1' there."""
    if not torch.version.hip:
        raise DeviceError(f"{{--device {name}}} needs a ROCm build of torch (this one is not)",
                          hint="install torch's ROCm build on Linux (pytorch.org); AMD GPUs then appear as "
                               "{--device cuda}")
    return "cuda" + name[name.index(":"):] if ":" in name else "cuda"


def _xpu_device(device: torch.device, name: str) -> torch.device:
    """An Intel GPU through torch's XPU backend (torch >= 2.4 built for XPU), always numbered."""
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        raise DeviceError(f"{{--device {name}}} was requested but no Intel GPU is available to torch "
                          f"(torch {torch.__version__} {'has no XPU support' if xpu is None else 'sees no XPU device'})",
                          hint="use {--device cpu}, or install torch's XPU build "
                               "(pip install torch --index-url https://download.pytorch.org/whl/xpu) "
                               "and Intel's GPU driver")
    if device.index is not None and device.index >= xpu.device_count():
        raise DeviceError(f"{{--device {name}}}: only {xpu.device_count()} Intel GPU(s) are visible",
                          hint="use {--device xpu:0}")
    return device if device.index is not None else torch.device("xpu", xpu.current_device())


def resolve_precision(requested: str, device: torch.device, spec: ArchSpec) -> tuple[torch.dtype, str | None]:
    """Pick the compute dtype; returns (dtype, note for the user or None).

    auto: fp32 on CPU (loading makes auto fp16 or bf16 beforehand for the models measured faster and
    as faithful on CPUs that multiply that type in hardware: engine.backends.auto_precision); on GPUs fp16 where
    the architecture is proven safe, else bf16 where safe and supported natively, else fp32. An
    explicit half precision the architecture is not safe in is replaced by the safe choice, with a
    note, rather than risking black or NaN output. fp32 is
    IEEE fp32 everywhere; tf32 is fp32 storage with TensorFloat-32 convolutions and matmuls on
    GPUs that have it (see `math_mode`), and plain fp32 elsewhere.
    """
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision '{requested}'", hint=f"choose one of {', '.join(PRECISIONS)}")
    bf16_ok = spec.bf16_safe and (device.type != "cuda" or bf16_native(device))
    if requested in ("fp32", "tf32") or (requested == "auto" and device.type == "cpu"):
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


def _cpu_capabilities() -> dict:
    try:
        return torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # a torch without the query, or an unknown CPU
        return {}


def cpu_has_fp16_matrix_unit() -> bool:
    """Whether this CPU multiplies fp16 matrices in hardware: Intel AMX-FP16 (Xeon 6 "Granite Rapids" and
    later), which oneDNN uses for fp16 convolutions and matmuls.

    There the convolutional networks run about twice as fast in fp16 as in fp32
    (benchmarks/results-backend-cpu-amx-fp16.json); on other CPUs fp16 is converted on the fly and slower
    than fp32, so ``--precision auto`` only considers fp16 on the CPU where this holds.
    """
    capabilities = _cpu_capabilities()
    return bool(capabilities.get("amx_tile") and capabilities.get("amx_fp16")) and torch.backends.mkldnn.is_available()


def cpu_has_bf16_dot_product() -> bool:
    """Whether this CPU multiplies bf16 in hardware: AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake,
    Sapphire Rapids and later) or AMX-BF16, which oneDNN uses for bf16 convolutions (fp32 accumulation).

    On a Zen 5 EPYC most convolutional networks run 1.05-1.95x as fast in bf16 as in fp32
    (benchmarks/results-backend-cpu-avx512-bf16.json); without these instructions bf16 is converted on the fly.
    """
    capabilities = _cpu_capabilities()
    native = capabilities.get("avx512_bf16") or (capabilities.get("amx_tile") and capabilities.get("amx_bf16"))
    return bool(native) and torch.backends.mkldnn.is_available()


def cpu_half_precision() -> str | None:
    """The half precision ``--precision auto`` may use on this CPU: 'fp16' with an fp16 matrix unit (the
    closer to fp32 of the two), else 'bf16' with bf16 dot products, else None. Which models use it is
    measured per precision (engine.backends.MEASURED_CPU_HALF)."""
    if cpu_has_fp16_matrix_unit():
        return "fp16"
    return "bf16" if cpu_has_bf16_dot_product() else None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "xpu":
        return f"{device} ({torch.xpu.get_device_name(device)})"
    return str(device)


def bf16_native(device: torch.device) -> bool:
    """Whether this GPU computes bf16 in hardware (Ampere, compute capability 8.0, and later).

    ``torch.cuda.is_bf16_supported()`` asks about the current device (not necessarily this one)
    and by default counts emulation, which on older GPUs is slower than fp32. ROCm builds report
    their own support.
    """
    if device.type != "cuda":
        return True
    if torch.version.hip:
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cuda.get_device_capability(device)[0] >= 8


def tf32_capable(device: torch.device) -> bool:
    return device.type == "cuda" and not torch.version.hip and torch.cuda.get_device_capability(device)[0] >= 8


class _MathMode:
    """torch's process-wide cuDNN/cuBLAS switches, saved by the first forward pass that enters and
    restored by the last that leaves (engines of a pool run their passes in threads at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: tuple | None = None

    @staticmethod
    def read() -> tuple:
        backends = torch.backends
        if _NEW_TF32_API:
            tf32 = (backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision)
        else:
            tf32 = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
        return (*tf32, backends.cudnn.benchmark, backends.cudnn.deterministic)

    @staticmethod
    def write(conv, matmul, benchmark: bool, deterministic: bool) -> None:
        backends = torch.backends
        if _NEW_TF32_API:
            backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision = conv, matmul
        else:  # torch < 2.9: the legacy switches
            backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = conv, matmul
        backends.cudnn.benchmark, backends.cudnn.deterministic = benchmark, deterministic


_NEW_TF32_API = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cuda.matmul, "fp32_precision")
_MATH_MODE = _MathMode()


@contextlib.contextmanager
def math_mode(allow_tf32: bool, autotune: bool):
    """The process-wide cuDNN/cuBLAS switches, set for one forward pass and restored after it.

    torch keeps them per process, not per module: setting them around each forward lets engines of
    different precisions share a process (one at a time; engines that run side by side in a pool
    share one precision). TF32 off means fp32 really is fp32 (torch's default runs convolutions in
    TF32); ``autotune`` False keeps cuDNN's heuristic algorithm choice, the same in every process
    on one GPU and cuDNN version, so a resumed video gets the same pixels; ``deterministic`` asks
    for algorithms whose result does not depend on scheduling.
    """
    tf32 = ("tf32" if allow_tf32 else "ieee") if _NEW_TF32_API else allow_tf32
    with _MATH_MODE.lock:
        if _MATH_MODE.users == 0:
            _MATH_MODE.saved = _MATH_MODE.read()
        _MATH_MODE.users += 1
        _MATH_MODE.write(tf32, tf32, autotune, not autotune)
    try:
        yield
    finally:
        with _MATH_MODE.lock:
            _MATH_MODE.users -= 1
            if _MATH_MODE.users == 0:
                _MATH_MODE.write(*_MATH_MODE.saved)


def available_host_bytes() -> int:
    """Free memory, counting what the tuned heap keeps free for the next pass (engine/allocator.py)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + kept_free_bytes()
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# Allocation failures inside cuDNN, cuBLAS and cuFFT do not say "out of memory".
_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "cudnn_status_alloc_failed",
                        "cublas_status_alloc_failed", "cufft_alloc_failed", "hipblas_status_alloc_failed",
                        "miopenstatusallocfailed")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(marker in text for marker in _OUT_OF_MEMORY_TEXTS)
