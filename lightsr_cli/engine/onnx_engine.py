"""The ONNX Runtime backend of the engine: the tiled engine's contract on an InferenceSession.

Each batch of crops the tiled engine (``tiled.py``) hands over is padded like the torch engine
pads it, run through the session (the graph takes and returns [0,1], see ``onnx_export``), cropped,
guarded against NaN/Inf (an fp16 graph's batch is recomputed with the fp32 graph) and, for uint8
output, rounded. ``--device`` names map onto execution providers (:data:`DEVICE_PROVIDERS`); the CPU
provider is always there as the fallback for operators another provider lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..archs.spec import ArchSpec
from ..errors import DeviceError, LightsrError
from .batching import quantize_uint8
from .tiled import TiledEngine

DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider",),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
    "dml": ("DmlExecutionProvider",),
    "directml": ("DmlExecutionProvider",),
    "coreml": ("CoreMLExecutionProvider",),
    "mps": ("CoreMLExecutionProvider",),
    "openvino": ("OpenVINOExecutionProvider",),
    "xpu": ("OpenVINOExecutionProvider",),
    "rocm": ("ROCMExecutionProvider",),
    "migraphx": ("MIGraphXExecutionProvider",),
}
"""``--device`` name (before any ``:N``) -> the execution providers that serve it, in order of preference."""

AUTO_ORDER = ("tensorrt", "cuda", "rocm", "migraphx", "dml", "coreml")
"""``--device auto``: the first of these whose provider is installed, else the CPU (TensorRT only
when its provider is there; it builds an engine per input shape, slow to start but fastest after)."""

_DEVICE_ID_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider",
                        "ROCMExecutionProvider", "MIGraphXExecutionProvider"}


@dataclass(frozen=True)
class ProviderChoice:
    device: str
    """The device as asked for, e.g. 'cuda:1'."""
    providers: tuple[str, ...]
    options: tuple[dict, ...]


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose_providers(device: str, available: list[str] | None = None) -> ProviderChoice:
    """A ``--device`` name -> the providers (and options) of a session; a clear error when none serves it."""
    available = available_providers() if available is None else available
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = next((kind for kind in AUTO_ORDER if all(p in available for p in DEVICE_PROVIDERS[kind])), "cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICE_PROVIDERS or (index and not index.isdigit()):
        raise DeviceError(f"{{--device {device}}} is not a device onnxruntime knows",
                          hint=f"with {{--backend onnxruntime}} use one of {', '.join(sorted(DEVICE_PROVIDERS))} "
                               "(GPUs as NAME:N)")
    wanted = DEVICE_PROVIDERS[kind]
    missing = [provider for provider in wanted if provider not in available]
    if missing:
        raise DeviceError(f"{{--device {device}}}: the installed onnxruntime has no {', '.join(missing)}",
                          hint=f"it has {', '.join(available)}; install the onnxruntime package for that "
                               "device (onnxruntime-gpu, onnxruntime-directml, onnxruntime-openvino), "
                               "or use {--backend torch}")
    providers = tuple(dict.fromkeys((*wanted, "CPUExecutionProvider")))
    options = tuple({"device_id": int(index)} if index and p in _DEVICE_ID_PROVIDERS else {} for p in providers)
    return ProviderChoice(name, providers, options)


def make_session(path: Path, choice: ProviderChoice, threads: int | None = None):
    """An InferenceSession with every graph optimisation, on the chosen providers."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about provider fallbacks would reach stderr per session
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=list(choice.providers),
                                            provider_options=list(choice.options))
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise LightsrError(f"onnxruntime cannot load {path.name}: {str(error).splitlines()[0][:200]}",
                           hint="delete the file (a cached graph is exported again) or use {--backend torch}") from None


def _is_ort_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return "failed to allocate memory" in text or "out of memory" in text or "bad_alloc" in text


class OnnxEngine(TiledEngine):
    """Runs one exported graph (an ONNX Runtime session) on batches of images, like :class:`Engine`."""

    backend = "onnxruntime"

    def __init__(self, session, spec: ArchSpec, scale: int, *, choice: ProviderChoice, fp16: bool = False,
                 fp32_session=None, tile: int | None = None, batch: int = 1, tta: bool = False) -> None:
        super().__init__(spec, scale, tile=tile, batch=batch, tta=tta)
        self.session = session
        self._fp32_session = fp32_session if fp16 else session
        self.choice = choice
        self.device = torch.device("cpu")
        """Where the engine's tensors live (the host); the provider computes wherever it runs."""
        self.dtype = torch.float16 if fp16 else torch.float32
        self.autotune = False
        self.channels_last = False
        self._input_name = session.get_inputs()[0].name
        self._network_timings: list[float] | None = None
        used = session.get_providers()[0]
        if used != choice.providers[0]:
            self.stats.notes.append(f"onnxruntime runs on {used}, not {choice.providers[0]}")

    @property
    def precision(self) -> str:
        return "fp16" if self.dtype == torch.float16 else "fp32"

    @property
    def compiled(self) -> bool:
        return False

    @property
    def device_description(self) -> str:
        return f"{self.choice.device} (onnxruntime {self.session.get_providers()[0]})"

    def _is_out_of_memory(self, error: BaseException) -> bool:
        return _is_ort_out_of_memory(error)

    def _launch(self, crops: torch.Tensor, quantize: bool, session=None, dtype: torch.dtype | None = None):
        """One batch of equal-size crops through the session; complete on return."""
        session, dtype = session or self.session, dtype or self.dtype
        count, _channels, height, width = crops.shape
        x = crops.to(torch.float32) / 255.0 if crops.dtype == torch.uint8 else crops
        pad_h, pad_w, mode = self._padding(height, width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        feed = np.ascontiguousarray(x.numpy(), dtype=np.float16 if dtype == torch.float16 else np.float32)
        started = time.perf_counter()
        y = session.run(None, {self._input_name: feed})[0]
        if self._network_timings is not None:
            self._network_timings.append(time.perf_counter() - started)
        y = torch.from_numpy(y)[:count, :, : height * self.scale, : width * self.scale].float().contiguous()
        finite = bool(torch.isfinite(y.sum()))
        return crops, (quantize_uint8(y) if quantize and finite else y), finite, quantize, dtype

    def _finish(self, launched) -> torch.Tensor:
        crops, result, finite, quantize, dtype = launched
        if finite:
            return result
        if dtype == torch.float32:
            raise LightsrError("the network produced NaN/Inf values in fp32",
                               hint="the checkpoint may be damaged: run `lightsr models verify`")
        self.stats.fp32_fallbacks += 1
        return self._finish(self._launch(crops, quantize, self._fp32_session, torch.float32))

    def network_seconds(self, work) -> float:
        """Run ``work()`` and return the time spent in the session's runs (model-only time)."""
        self._network_timings = timings = []
        try:
            work()
        finally:
            self._network_timings = None
        return sum(timings)
