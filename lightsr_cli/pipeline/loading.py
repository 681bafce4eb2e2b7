"""A model card -> a verified checkpoint -> a network -> an Engine (or one per device)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from .. import archs, checkpoints, weights
from ..engine import Engine, EnginePool, parse_devices
from ..engine.allocator import tune_for_cpu_inference
from ..errors import UsageError
from ..progress import NullReporter, Reporter
from ..registry import ModelCard
from ..settings import read_settings


@dataclass(frozen=True)
class EngineSettings:
    """How the user wants inference run (validated by the engine)."""

    device: str = "auto"
    """One device, or for `upscale` several GPUs: "cuda:0,cuda:1" or "cuda:all"."""
    precision: str = "auto"
    tile: int | None = None
    batch: int = 1
    tta: bool = False
    compile: bool = False
    backend: str = "torch"
    """torch, onnxruntime, or auto (the faster one for this model and device, from benchmarks/; see
    engine.backends)."""


def load_network(card: ModelCard, reporter: Reporter, weights_path: Path | None) -> nn.Module:
    """Resolve the card's checkpoint (embedded, cache, mirror or download) and build the net from it."""
    path = weights_path or weights.ensure_weights(card, reporter).path
    state_dict = checkpoints.load_state_dict(path)
    try:
        return archs.build_network(card.arch, card.scale, card.hyperparameters, state_dict)
    except RuntimeError as error:  # strict load: wrong keys or shapes
        raise checkpoints.damaged_checkpoint_error(card, path, error) from None


def _engine(network: nn.Module, card: ModelCard, settings: EngineSettings, device: str) -> Engine:
    engine = Engine(network, archs.get_spec(card.arch), card.scale, device=device, precision=settings.precision,
                    tile=settings.tile, batch=settings.batch, tta=settings.tta, compile=settings.compile)
    if engine.device.type == "cpu":  # every CLI command, the Python API and video jobs come through here
        tune_for_cpu_inference(read_settings().tune_allocator)
    return engine


def _tuned_for_host(engine: Engine) -> Engine:
    """An onnxruntime engine on the CPU provider: its arena does not fault, but the padding, crops and
    8-bit rounding around each run are torch tensors on the host, so the heap is tuned as for torch."""
    if engine.session.get_providers()[0] == "CPUExecutionProvider":
        tune_for_cpu_inference(read_settings().tune_allocator)
    return engine


def _uses_onnxruntime(card: ModelCard, settings: EngineSettings, device: str) -> bool:
    from ..engine.backends import pick_backend

    return pick_backend(settings.backend, card.id, device, settings) == "onnxruntime"


def _with_auto_precision(card: ModelCard, settings: EngineSettings, device: str) -> EngineSettings:
    """--precision auto made concrete where it depends on the model and this CPU (fp16 on an fp16 matrix
    unit for the models measured faster and as faithful there: engine.backends.MEASURED_CPU_HALF)."""
    from ..engine.backends import auto_precision

    return replace(settings, precision=auto_precision(settings.precision, settings.backend, card.id, device))


def load_engine(card: ModelCard, settings: EngineSettings, reporter: Reporter | None = None,
                weights_path: Path | None = None) -> Engine:
    """One engine on one device (bench, eval and the Python API measure or run one device)."""
    devices = parse_devices(settings.device)
    if len(devices) > 1:
        raise UsageError(f"{{--device {settings.device}}}: this command runs on one device",
                         hint="several GPUs share the work of `lightsr upscale`; pick one here, e.g. cuda:0")
    settings = _with_auto_precision(card, settings, devices[0])
    if _uses_onnxruntime(card, settings, devices[0]):
        from .onnx_models import load_onnx_engine

        return _tuned_for_host(load_onnx_engine(card, settings, reporter, weights_path, devices[0]))
    return _engine(load_network(card, reporter or NullReporter(), weights_path), card, settings, devices[0])


def load_pool(card: ModelCard, settings: EngineSettings, reporter: Reporter | None = None,
              weights_path: Path | None = None) -> EnginePool:
    """One engine per device of ``settings.device`` (each with its own copy of the network)."""
    devices = parse_devices(settings.device)
    settings = _with_auto_precision(card, settings, devices[0])
    if _uses_onnxruntime(card, settings, devices[0]):
        from .onnx_models import load_onnx_engine

        engines = [_tuned_for_host(load_onnx_engine(card, settings, reporter, weights_path, device))
                   for device in devices]
        return EnginePool(engines, model_id=card.id)
    network = load_network(card, reporter or NullReporter(), weights_path)
    networks = [network] + [copy.deepcopy(network) for _ in devices[1:]]
    return EnginePool((_engine(net, card, settings, device) for net, device in zip(networks, devices, strict=False)),
                      model_id=card.id)
