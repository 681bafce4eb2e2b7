"""The inference engine: tensors in, tensors out; nothing of files, terminals or model cards.

- ``devices``: which device and precision a network runs in;
- ``tiled``: the contract every backend shares (tiles, batches, blending, OOM halving, TTA);
- ``torch_engine``: :class:`Engine`, one torch network on one device (padding, NaN guard, CUDA copies);
- ``onnx_engine``: :class:`OnnxEngine`, the same contract on an ONNX Runtime session (imported lazily);
- ``pool``: :class:`EnginePool`, one engine per GPU sharing the work in order.
"""

from .devices import resolve_device, resolve_precision
from .pool import EnginePool, parse_devices
from .torch_engine import Engine, EngineStats

__all__ = ["Engine", "EnginePool", "EngineStats", "parse_devices", "resolve_device", "resolve_precision"]
