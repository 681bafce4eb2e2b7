"""The inference engine: tensors in, tensors out.

Engine owns one network and decides, once, the device and precision; then for every batch of
images it plans tiles, pads them to what the architecture accepts, runs them in batches, guards
every output against NaN/Inf (recomputing in fp32 when half precision overflowed), and blends the
tiles back together. It knows nothing of files, terminals or model ids.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..archs.spec import ArchSpec
from ..errors import LightsrError, UsageError
from ..progress import NullReporter, Reporter
from ..tiling import Span, blend_ramp, pick_tile_size, plan_spans
from .batching import Launched, quantize_uint8, split_by_shape
from .compiled import CompiledNetwork
from .devices import (
    available_host_bytes,
    describe_device,
    dtype_name,
    is_out_of_memory,
    math_mode,
    resolve_device,
    resolve_precision,
    tf32_capable,
)

_SMALLEST_TILE = 32
# Many CUDA kernels index with 32-bit integers: no tensor of a pass may reach 2^31 elements.
_MAX_ELEMENTS = 2**31 - 1


@dataclass
class EngineStats:
    """What the last calls did, for summaries."""

    tiles: int = 0
    tile: int = 0
    """Tile side (input pixels, without context) used last; 0 = the whole image in one pass."""
    patch_size: int = 0
    """Side of the padded patch the network saw last (the tile plus context on both sides, aligned)."""
    fp32_fallbacks: int = 0
    oom_retries: int = 0
    compiled_graphs: int = 0
    """--compile: input shapes with a compiled graph (each one compiled once)."""
    eager_shapes: int = 0
    """--compile: input shapes past torch.compile's graph limit, run eager."""
    graph_breaks: int = 0
    notes: list[str] = field(default_factory=list)


class Engine:
    """Runs one network on batches of images (N x 3 x H x W RGB: float in [0,1], or uint8)."""

    def __init__(self, network: nn.Module, spec: ArchSpec, scale: int, *, device: str = "auto",
                 precision: str = "auto", tile: int | None = None, batch: int = 1, tta: bool = False,
                 compile: bool = False, autotune: bool = False) -> None:
        if batch < 1:
            raise UsageError(f"{{--batch}} must be at least 1, not {batch}")
        if tile is not None and tile < 0:
            raise UsageError(f"{{--tile}} must be 0 (whole image) or a positive size, not {tile}")
        self.spec = spec
        self.scale = scale
        self.device = resolve_device(device)
        self.dtype, precision_note = resolve_precision(precision, self.device, spec)
        # TF32 only when asked for by name: fp32 means IEEE fp32, also in the NaN recomputation.
        self.allow_tf32 = (precision or "").lower() == "tf32" and tf32_capable(self.device)
        if (precision or "").lower() == "tf32" and not self.allow_tf32:
            precision_note = "tf32 needs an NVIDIA GPU of compute capability 8.0 or later; using fp32"
        self.autotune = autotune
        """cuDNN autotuning (fastest algorithm per shape, measured at each new shape; may differ
        between processes). Off by default: results then do not depend on which process ran them."""
        self.tile = tile
        self.batch = batch
        self.tta = tta
        self.stats = EngineStats(notes=[precision_note] if precision_note else [])
        self._cuda = self.device.type == "cuda"
        self._tiles_by_size: dict[tuple[int, int], int] = {}
        self._network_timings: list | None = None
        self._pinned = True
        if tile and tile < spec.min_tile:
            self.stats.notes.append(f"{spec.name} needs tiles of at least {spec.min_tile} px to match whole-image "
                                    f"quality; using {spec.min_tile} instead of {tile}")
        # NHWC suits convolutions on CUDA and in oneDNN on CPUs (measured on a 2-vCPU EPYC, 320x180
        # input: BSRN x4 1.29x, PlainUSR x4 1.11x faster than NCHW).
        self.channels_last = spec.channels_last
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
        self._last_blend_weights: tuple[tuple | None, dict] = (None, {})

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
        return network.eval()

    # -- public ---------------------------------------------------------------------------------

    def upscale(self, images: torch.Tensor, reporter: Reporter | None = None, *,
                to_uint8: bool = False) -> torch.Tensor:
        """N x 3 x H x W (float in [0,1], or uint8) -> N x 3 x sH x sW on the CPU.

        The result is float32 (not clamped), or with ``to_uint8`` clamped, rounded uint8: converted
        on the device where the image is one tile, so a quarter of the bytes cross back to the host.
        """
        if images.ndim == 3:
            return self.upscale(images.unsqueeze(0), reporter, to_uint8=to_uint8)[0]
        if images.ndim != 4 or images.shape[1] != 3:
            raise LightsrError(f"expected an N x 3 x H x W RGB batch, got shape {tuple(images.shape)}")
        reporter = reporter or NullReporter()
        images = images.detach().to("cpu")
        if images.dtype != torch.uint8:
            images = images.to(torch.float32)
        # Pinned buffers, events and streams made without a device belong to the current one:
        # make it this engine's, or cuda:1 work would open a context on GPU 0.
        with torch.cuda.device(self.device) if self._cuda else contextlib.nullcontext():
            if self.tta:
                result = self._upscale_self_ensemble(images, reporter)
            else:
                result = self._upscale_with_oom_retry(images, reporter, to_uint8)
        return quantize_uint8(result) if to_uint8 and result.dtype != torch.uint8 else result

    def tile_for(self, height: int, width: int) -> int:
        """The tile this engine uses for images of this size (0 = whole image).

        Chosen once per size and kept (including a smaller one that out-of-memory forced), so the
        frames of a video, and repeated images, are all cut the same way whatever ran before.
        """
        if (height, width) not in self._tiles_by_size:
            tile = self.auto_tile_size(height, width)
            self._tiles_by_size[(height, width)] = self._within_index_limit(height, width, tile)
        return self._tiles_by_size[(height, width)]

    def use_tile(self, height: int, width: int, tile: int) -> None:
        """Cut images of this size with ``tile`` from now on (a resumed video keeps its first run's tiling)."""
        self._tiles_by_size[(height, width)] = tile

    def auto_tile_size(self, height: int, width: int) -> int:
        """Tile side for an image (0 = whole image): the whole image whenever it fits in memory."""
        if self.tile is not None:
            return self.tile
        if self._cuda:
            free, _total = torch.cuda.mem_get_info(self.device)
            # Memory torch has cached but not handed out is free to this engine too; without it,
            # the tile would shrink after every large image and depend on what ran before.
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            budget = int((free + max(cached, 0)) * 0.6)
        else:
            budget = int(available_host_bytes() * 0.35)
        bytes_per_pixel = self.spec.bytes_per_pixel(self.dtype) * self.batch
        max_pixels = int(budget / max(bytes_per_pixel, 1))
        return self._tile_within(height, width, max_pixels)

    def _tile_within(self, height: int, width: int, max_pixels: int) -> int:
        patch = pick_tile_size(height, width, max_pixels, self.spec.tile_multiple, self._patch_size(_SMALLEST_TILE))
        return 0 if patch == 0 else max(_SMALLEST_TILE, patch - 2 * self.spec.tile_overlap)

    def _within_index_limit(self, height: int, width: int, tile: int) -> int:
        """``tile``, made smaller where a pass would hold a tensor of 2^31 elements or more."""
        max_pixels = _MAX_ELEMENTS // (self.spec.widest_activation * self.batch)
        patch = self._patch_size(tile) if tile else max(height, width)
        pixels = min(patch, height) * min(patch, width)
        if pixels <= max_pixels:
            return tile
        smaller = self._tile_within(height, width, max_pixels)
        self.stats.notes.append(f"{height}x{width} in batches of {self.batch} passes 2^31 elements in "
                                f"{self.spec.name}'s widest layer; using tile {smaller}")
        return smaller

    def tile_spans(self, height: int, width: int, tile: int) -> tuple[list[Span], list[Span]]:
        """Where the patches of a --tile size go: (row spans, column spans) in input pixels."""
        patch = self._patch_size(tile)
        align = max(self.spec.tile_multiple, 1)
        shortest = self._patch_size(self.spec.min_tile) if self.spec.min_tile else 0
        return (plan_spans(height, patch, self.spec.tile_overlap, align, shortest),
                plan_spans(width, patch, self.spec.tile_overlap, align, shortest))

    # -- tiling ---------------------------------------------------------------------------------

    def _upscale_with_oom_retry(self, images: torch.Tensor, reporter: Reporter, to_uint8: bool = False) -> torch.Tensor:
        height, width = images.shape[-2:]
        tile = self.tile_for(height, width)
        while True:
            try:
                return self._upscale_tiled(images, tile, reporter, to_uint8)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is retried
                if not is_out_of_memory(error):
                    raise
                smaller = max(_SMALLEST_TILE, (tile or max(height, width)) // 2)
                if tile and smaller >= tile:
                    # On the CPU the whole input and result must fit in RAM: only a smaller job helps there.
                    on_cpu = self.device.type == "cpu"
                    helps = ("use a smaller {--batch} or {--outscale}, or a smaller input" if on_cpu
                             else "use {--device cpu} (main memory) or a smaller {--batch}")
                    raise LightsrError("out of memory even with the smallest tile size", hint=helps) from None
            # Outside the handler: the traceback no longer holds the failed pass's activations,
            # so emptying the cache can give their memory back.
            self.stats.oom_retries += 1
            self.stats.notes.append(f"out of memory with tile {tile or 'whole image'}; retrying with tile {smaller}")
            tile = smaller
            self.use_tile(height, width, tile)  # later images of this size start from what fits
            if self._cuda:
                torch.cuda.empty_cache()

    def _patch_size(self, tile: int) -> int:
        """Input patch side for a --tile (core) size: the core plus context on both sides, aligned."""
        if tile <= 0:
            return 0
        multiple = max(self.spec.tile_multiple, 1)
        patch = max(max(tile, self.spec.min_tile) + 2 * self.spec.tile_overlap, self.spec.min_size)
        return math.ceil(patch / multiple) * multiple

    def _batches(self, count: int, row_spans: list[Span], col_spans: list[Span]) -> list[list[tuple[int, int, int]]]:
        """(image, row, column) tile jobs in batches of at most `batch`, each batch of one crop shape.

        Tiles of equal shape go through together (aligned tilings have shorter last rows/columns);
        the sort is stable, so with one tile per image the batches keep the images' order.
        """
        jobs = sorted(((n, r, c) for n in range(count) for r in range(len(row_spans)) for c in range(len(col_spans))),
                      key=lambda job: (row_spans[job[1]].length, col_spans[job[2]].length))
        chunks = [jobs[i:i + self.batch] for i in range(0, len(jobs), self.batch)]
        return [part for chunk in chunks for part in split_by_shape(chunk, row_spans, col_spans)]

    def _blend_weights(self, row_spans: list[Span], col_spans: list[Span]) -> dict[tuple[int, int], torch.Tensor]:
        """Output-resolution weights per tile; kept for the next call, since a video's frames share one tiling."""
        key = (tuple(row_spans), tuple(col_spans))
        if self._last_blend_weights[0] != key:
            s, context = self.scale, self.spec.tile_overlap
            weights = {(r, c): torch.from_numpy(np.outer(blend_ramp(row_spans, r, s, context),
                                                         blend_ramp(col_spans, c, s, context)))
                       for r in range(len(row_spans)) for c in range(len(col_spans))}
            self._last_blend_weights = (key, weights)
        return self._last_blend_weights[1]

    def _upscale_tiled(self, images: torch.Tensor, tile: int, reporter: Reporter, to_uint8: bool) -> torch.Tensor:
        count, channels, height, width = images.shape
        row_spans, col_spans = self.tile_spans(height, width, tile)
        tiles = [(r, c) for r in range(len(row_spans)) for c in range(len(col_spans))]
        self.stats.tile = max(tile, self.spec.min_tile) if len(tiles) > 1 else 0
        self.stats.patch_size = max(row_spans[0].length, col_spans[0].length) if len(tiles) > 1 else 0
        self.stats.tiles += len(tiles) * count
        single = len(tiles) == 1
        chunks = self._batches(count, row_spans, col_spans)
        s = self.scale
        if single:
            output = None
        else:
            # NHWC, like the network's output: blending reads tiles in their layout, and the result
            # turns into H x W x C pixels without a transposing copy.
            output = torch.empty(count, channels, height * s, width * s, dtype=torch.float32,
                                 memory_format=torch.channels_last).zero_()
            ramps = self._blend_weights(row_spans, col_spans)
        whole_images: list[torch.Tensor] = []

        def place(chunk, results: torch.Tensor) -> None:
            if single:
                whole_images.append(results)  # chunks of a single tiling run over n in order
                return
            for (n, r, c), result in zip(chunk, results, strict=True):
                rows, cols = row_spans[r], col_spans[c]
                output[n, :, rows.start * s:rows.stop * s, cols.start * s:cols.stop * s].addcmul_(result, ramps[(r, c)])

        def crops_of(chunk) -> torch.Tensor:
            return torch.stack([images[n, :, row_spans[r].start:row_spans[r].stop, col_spans[c].start:col_spans[c].stop]
                                for n, r, c in chunk])

        progress = reporter.task("tiles", total=count * len(tiles), unit="tile") if len(chunks) > 1 else None
        try:
            for chunk, results in self._results_in_order(chunks, crops_of, quantize=single and to_uint8):
                place(chunk, results)
                if progress:
                    progress.advance(len(chunk))
        finally:
            if progress:
                progress.close()
        if not single:
            return output
        # On CUDA the results sit in pinned buffers: copy them out so pinned memory is recycled at once.
        return whole_images[0] if len(whole_images) == 1 and self._copy_stream is None else torch.cat(whole_images)

    # -- forward --------------------------------------------------------------------------------

    def _results_in_order(self, chunks: list[list], crops_of, quantize: bool):
        """Yield (chunk, host result) per chunk, in order.

        On CUDA one batch stays in flight: while its result copies back to the host, the next
        batch is cropped and launched, so the device never waits for the host.
        """
        in_flight: deque[tuple[list, Launched]] = deque()
        for chunk in chunks:
            in_flight.append((chunk, self._launch(crops_of(chunk), quantize)))
            if len(in_flight) > 1 or self._copy_stream is None:
                done, launched = in_flight.popleft()
                yield done, self._finish(launched)
        for done, launched in in_flight:
            yield done, self._finish(launched)

    def _padded_size(self, length: int) -> int:
        multiple = max(self.spec.size_multiple, 1)
        return max(self.spec.min_size, math.ceil(length / multiple) * multiple)

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
        pad_h, pad_w = self._padded_size(height) - height, self._padded_size(width) - width
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
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

    # -- self-ensemble --------------------------------------------------------------------------

    def _upscale_self_ensemble(self, images: torch.Tensor, reporter: Reporter) -> torch.Tensor:
        """--tta: average the 8 flips/rotations (each undone) of the upscaled image."""
        total = None
        for rotations in range(4):
            for flip in (False, True):
                view = torch.rot90(images, rotations, dims=(-2, -1))
                view = torch.flip(view, dims=(-1,)) if flip else view
                result = self._upscale_with_oom_retry(view.contiguous(), reporter)
                result = torch.flip(result, dims=(-1,)) if flip else result
                result = torch.rot90(result, -rotations, dims=(-2, -1))
                total = result if total is None else total + result
        return total / 8
