"""The torch backend of the engine: one torch network on one device.

:class:`Engine` decides, once, the device and precision, and computes each batch of crops the
tiled engine (``tiled.py``: tiles, batches, blending, OOM halving, TTA) hands it: pads them to
what the architecture accepts, runs the network (compiled where asked), guards every output
against NaN/Inf (recomputing in fp32 when half precision overflowed) and, on CUDA, copies results
back through pinned buffers on their own stream. It knows nothing of files, terminals or model ids.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..archs.spec import ArchSpec
from ..errors import LightsrError
from .batching import Launched, quantize_uint8
from .compiled import CompiledNetwork
from .devices import (
    describe_device,
    dtype_name,
    is_out_of_memory,
    math_mode,
    resolve_device,
    resolve_precision,
    tf32_capable,
)
from .tiled import EngineStats, TiledEngine

__all__ = ["Engine", "EngineStats"]


class Engine(TiledEngine):
    """Runs one torch network on batches of images (N x 3 x H x W RGB: float in [0,1], or uint8)."""

    backend = "torch"

    def __init__(self, network: nn.Module, spec: ArchSpec, scale: int, *, device: str = "auto",
                 precision: str = "auto", tile: int | None = None, batch: int = 1, tta: bool = False,
                 compile: bool = False, autotune: bool = False) -> None:
        super().__init__(spec, scale, tile=tile, batch=batch, tta=tta)
        self.device = resolve_device(device)
        self.dtype, precision_note = resolve_precision(precision, self.device, spec)
        # TF32 only when asked for by name: fp32 means IEEE fp32, also in the NaN recomputation.
        self.allow_tf32 = (precision or "").lower() == "tf32" and tf32_capable(self.device)
        if (precision or "").lower() == "tf32" and not self.allow_tf32:
            precision_note = "tf32 needs an NVIDIA GPU of compute capability 8.0 or later; using fp32"
        self.autotune = autotune
        """cuDNN autotuning (fastest algorithm per shape, measured at each new shape; may differ
        between processes). Off by default: results then do not depend on which process ran them."""
        if precision_note:
            self.stats.notes.insert(0, precision_note)
        self._cuda = self.device.type == "cuda"
        self.in_flight = 2 if self._cuda else 1
        self._network_timings: list | None = None
        self._pinned = True
        # NHWC suits convolutions on CUDA and in oneDNN on CPUs (measured on a 2-vCPU EPYC, 320x180
        # input: BSRN x4 1.29x, PlainUSR x4 1.11x faster than NCHW).
        self.channels_last = spec.channels_last
        # torch.compile traces the network as built; the CPU inference form is for eager runs.
        self._will_compile = compile
        # Module.to() casts in place: keep the fp32 original for the NaN fallback.
        self._fp32_master = network
        own_copy = copy.deepcopy(network) if self.dtype != torch.float32 else network
        self._eager_network = self._place(own_copy, self.dtype)
        self._fp32_network: nn.Module | None = self._eager_network if self.dtype == torch.float32 else None
        # One graph per input shape: tiles of an image come in at most four shapes, video frames
        # in one; a short last batch runs at its own size (one more graph) rather than padded
        # with copies of its last image (which would cost the whole batch's compute).
        self._compiled = CompiledNetwork(self._eager_network) if compile else None
        # On CUDA, results come back through pinned buffers on their own stream, so the copy of one
        # batch overlaps the computation of the next.
        self._copy_stream = torch.cuda.Stream(self.device) if self._cuda else None

    @property
    def precision(self) -> str:
        return "tf32" if self.allow_tf32 else dtype_name(self.dtype)

    @property
    def device_description(self) -> str:
        """The device with its hardware, e.g. 'cuda:1 (NVIDIA H200)': results depend on both."""
        return describe_device(self.device)

    @property
    def compiled(self) -> bool:
        """Whether the last forward ran a compiled graph (False without --compile, after the
        compiler failed, or for shapes past torch.compile's graph limit)."""
        return self._compiled is not None and self._compiled.failure is None and self._compiled.last_ran_compiled

    def _place(self, network: nn.Module, dtype: torch.dtype) -> nn.Module:
        network = network.to(self.device, dtype)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        network = network.eval()
        cpu_form = self.spec.cpu_inference_form
        if cpu_form is not None and self.device.type == "cpu" and not self._will_compile:
            network = cpu_form(network)
        return network

    # -- what the tiled engine asks of a backend --------------------------------------------------

    def _device_scope(self):
        # Pinned buffers, events and streams made without a device belong to the current one:
        # make it this engine's, or cuda:1 work would open a context on GPU 0.
        return torch.cuda.device(self.device) if self._cuda else super()._device_scope()

    def _memory_budget(self) -> int:
        if not self._cuda:
            return super()._memory_budget()
        free, _total = torch.cuda.mem_get_info(self.device)
        # Memory torch has cached but not handed out is free to this engine too; without it,
        # the tile would shrink after every large image and depend on what ran before.
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int((free + max(cached, 0)) * 0.6)

    def _is_out_of_memory(self, error: BaseException) -> bool:
        return is_out_of_memory(error)

    def _out_of_memory_hint(self) -> str:
        # On the CPU the whole input and result must fit in RAM: only a smaller job helps there.
        if self.device.type == "cpu":
            return super()._out_of_memory_hint()
        return "use {--device cpu} (main memory) or a smaller {--batch}"

    def _after_out_of_memory(self) -> None:
        if self._cuda:
            torch.cuda.empty_cache()

    # -- forward --------------------------------------------------------------------------------

    @torch.inference_mode()
    def _launch(self, crops: torch.Tensor, quantize: bool, network: nn.Module | None = None,
                dtype: torch.dtype | None = None) -> Launched:
        """Send one batch of equal-size crops through the network (padded, scaled back, cropped).

        On the CPU the result is complete on return; on CUDA the work is queued and the result is
        on its way into a pinned host buffer: `_finish` waits for it.
        """
        dtype = dtype or self.dtype
        count, _channels, height, width = crops.shape
        if self._copy_stream is not None:
            crops = self._pin(crops)
        x = self._to_network_range(crops.to(self.device, non_blocking=self._pinned), dtype)
        pad_h, pad_w, mode = self._padding(height, width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=memory_format)
        y = self._run(network, x)[:count, :, : height * self.scale, : width * self.scale].float()
        if self.spec.input_range != 1.0:
            y = y / self.spec.input_range
        # A cropped fp32 output is a view with gaps: copied to the host as it is, it would go
        # through a hidden synchronous staging copy. Dense, it goes straight into the pinned buffer.
        if not (y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last)):
            y = y.contiguous(memory_format=memory_format)
        finite = torch.isfinite(y.sum())  # one pass: any NaN or Inf makes the sum NaN or Inf
        if quantize:
            y = quantize_uint8(y)
        if self._copy_stream is None:
            return Launched(crops, y, finite, None, quantize, dtype)
        return self._copy_to_host(crops, y, finite, quantize, dtype)

    def _to_network_range(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 (0-255) or float (0-1) crops -> ``dtype`` in the network's input range.

        uint8 is divided (not multiplied by 1/255) so it matches the host's float conversion exactly.
        """
        if x.dtype == torch.uint8:
            if self.spec.input_range == 255.0:
                return x.to(dtype)
            x = x.to(torch.float32) / 255.0
        return (x * self.spec.input_range if self.spec.input_range != 1.0 else x).to(dtype)

    def _pin(self, crops: torch.Tensor) -> torch.Tensor:
        """Page-locked copy of the crops, or the crops as they are when pinned memory runs out."""
        if self._pinned:
            try:
                return crops.pin_memory()
            except RuntimeError:
                self._no_pinned_memory()
        return crops

    def _no_pinned_memory(self) -> None:
        # Page-locked host memory is limited by the OS, not the GPU: smaller tiles would not help.
        self._pinned = False
        self.stats.notes.append("page-locked host memory is exhausted; copying through pageable memory (slower)")

    def _copy_to_host(self, crops: torch.Tensor, y: torch.Tensor, finite: torch.Tensor, quantize: bool,
                      dtype: torch.dtype) -> Launched:
        if self._pinned:
            try:
                host = torch.empty_like(y, device="cpu", pin_memory=True)
                host_finite = torch.empty((), dtype=torch.bool, pin_memory=True)
            except RuntimeError:
                self._no_pinned_memory()
        if not self._pinned:  # synchronous copies into pageable memory
            return Launched(crops, y.to("cpu"), finite.to("cpu"), None, quantize, dtype)
        # blocking: waiting for an event sleeps instead of spinning a CPU core the decoder and
        # encoder threads need.
        computed = torch.cuda.Event()
        computed.record(torch.cuda.current_stream(self.device))
        stream = self._copy_stream
        stream.wait_event(computed)
        with torch.cuda.stream(stream):
            host.copy_(y, non_blocking=True)
            host_finite.copy_(finite, non_blocking=True)
            copied = torch.cuda.Event(blocking=True)
            copied.record(stream)
        # The caching allocator must not hand these to the next batch before the copy has read them.
        y.record_stream(stream)
        finite.record_stream(stream)
        return Launched(crops, host, host_finite, copied, quantize, dtype)

    def _run(self, network: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        """One forward pass (``network`` None: this engine's own, compiled where asked)."""
        with math_mode(self.allow_tf32, self.autotune):
            if self._network_timings is None:
                return self._forward(network, x)
            if self._cuda:  # device time of the network alone, on the stream it runs on
                stream = torch.cuda.current_stream(self.device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(stream)
                y = self._forward(network, x)
                end.record(stream)
                self._network_timings.append((start, end))
                return y
            started = time.perf_counter()
            y = self._forward(network, x)
            self._network_timings.append(time.perf_counter() - started)
            return y

    def _forward(self, network: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        if network is not None:
            return network(x)
        if self._compiled is None:
            return self._eager_network(x)
        y = self._compiled(x, self.stats.notes)
        self.stats.compiled_graphs = len(self._compiled.shapes)
        self.stats.eager_shapes = len(self._compiled.eager_shapes)
        self.stats.graph_breaks = self._compiled.graph_breaks
        return y

    def network_seconds(self, work) -> float:
        """Run ``work()`` and return the time the network itself ran during it (device time on CUDA).

        Uploads, pinning, downloads, blending and conversions are left out: this is what
        "model-only" means in `lightsr bench`.
        """
        self._network_timings = timings = []
        try:
            work()
        finally:
            self._network_timings = None
        if self._cuda:
            torch.cuda.synchronize(self.device)
            return sum(start.elapsed_time(end) for start, end in timings) / 1000
        return sum(timings)

    def _finish(self, launched: Launched) -> torch.Tensor:
        """Wait for a launched batch; recompute it in fp32 when half precision overflowed."""
        if launched.copied is not None:
            launched.copied.synchronize()
        if bool(launched.finite):
            return launched.result
        if launched.dtype == torch.float32:
            raise LightsrError("the network produced NaN/Inf values in fp32",
                               hint="the checkpoint may be damaged: run `lightsr models verify`")
        self.stats.fp32_fallbacks += 1
        return self._finish(self._launch(launched.crops, launched.quantized, self._fp32(), torch.float32))

    def _fp32(self) -> nn.Module:
        if self._fp32_network is None:
            self._fp32_network = self._place(self._fp32_master, torch.float32)
        return self._fp32_network
