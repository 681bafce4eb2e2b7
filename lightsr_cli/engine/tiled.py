"""The engine contract every backend shares: tiles, batches, blending, OOM halving, TTA, progress.

:class:`TiledEngine` plans the tiles of a batch of images, sends them through the network in
batches of one crop shape, blends them back and retries with smaller tiles when memory runs out.
How one batch of crops is computed (device transfer, padding, the forward pass, the NaN guard)
is the backend's job: a subclass implements ``_launch`` and ``_finish`` (torch: ``torch_engine``;
ONNX Runtime: ``onnx_engine``). Host tensors are torch CPU tensors in both.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from ..archs.spec import ArchSpec
from ..errors import LightsrError, UsageError
from ..progress import NullReporter, Reporter
from ..tiling import Span, blend_ramp, pick_tile_size, plan_spans
from .batching import quantize_uint8, split_by_shape
from .devices import available_host_bytes

SMALLEST_TILE = 32
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


class TiledEngine:
    """Runs one network on batches of images (N x 3 x H x W RGB: float in [0,1], or uint8).

    Subclasses set ``device`` and ``dtype`` and implement ``_launch`` (one batch of equal-size
    crops in) and ``_finish`` (its host result out, NaN-guarded).
    """

    backend = "?"
    in_flight = 1
    """Batches launched before the oldest one is finished (2 overlaps a copy with the next batch)."""

    def __init__(self, spec: ArchSpec, scale: int, *, tile: int | None, batch: int, tta: bool) -> None:
        if batch < 1:
            raise UsageError(f"{{--batch}} must be at least 1, not {batch}")
        if tile is not None and tile < 0:
            raise UsageError(f"{{--tile}} must be 0 (whole image) or a positive size, not {tile}")
        self.spec = spec
        self.scale = scale
        self.tile = tile
        self.batch = batch
        self.tta = tta
        self.stats = EngineStats()
        self._tiles_by_size: dict[tuple[int, int], int] = {}
        self._last_blend_weights: tuple[tuple | None, dict] = (None, {})
        if tile and tile < spec.min_tile:
            self.stats.notes.append(f"{spec.name} needs tiles of at least {spec.min_tile} px to match whole-image "
                                    f"quality; using {spec.min_tile} instead of {tile}")

    # -- what a backend provides ----------------------------------------------------------------

    def _launch(self, crops: torch.Tensor, quantize: bool):
        raise NotImplementedError

    def _finish(self, launched) -> torch.Tensor:
        raise NotImplementedError

    def _memory_budget(self) -> int:
        """Bytes a pass may use for activations (sizes automatic tiles)."""
        return int(available_host_bytes() * 0.35)

    def _device_scope(self):
        """Context every call runs in (the torch CUDA engine makes its GPU the current one)."""
        return contextlib.nullcontext()

    def _is_out_of_memory(self, error: BaseException) -> bool:
        return False

    def _after_out_of_memory(self) -> None:
        """Give memory back before a retry with smaller tiles."""

    def _out_of_memory_hint(self) -> str:
        return "use a smaller {--batch} or {--outscale}, or a smaller input"

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
        with self._device_scope():
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
        bytes_per_pixel = self.spec.bytes_per_pixel(self.dtype) * self.batch
        max_pixels = int(self._memory_budget() / max(bytes_per_pixel, 1))
        return self._tile_within(height, width, max_pixels)

    def _tile_within(self, height: int, width: int, max_pixels: int) -> int:
        patch = pick_tile_size(height, width, max_pixels, self.spec.tile_multiple, self._patch_size(SMALLEST_TILE))
        return 0 if patch == 0 else max(SMALLEST_TILE, patch - 2 * self.spec.tile_overlap)

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
                if not self._is_out_of_memory(error):
                    raise
                smaller = max(SMALLEST_TILE, (tile or max(height, width)) // 2)
                if tile and smaller >= tile:
                    raise LightsrError("out of memory even with the smallest tile size",
                                       hint=self._out_of_memory_hint()) from None
            # Outside the handler: the traceback no longer holds the failed pass's activations,
            # so emptying the cache can give their memory back.
            self.stats.oom_retries += 1
            self.stats.notes.append(f"out of memory with tile {tile or 'whole image'}; retrying with tile {smaller}")
            tile = smaller
            self.use_tile(height, width, tile)  # later images of this size start from what fits
            self._after_out_of_memory()

    def _patch_size(self, tile: int) -> int:
        """Input patch side for a --tile (core) size: the core plus context on both sides, aligned."""
        if tile <= 0:
            return 0
        multiple = max(self.spec.tile_multiple, 1)
        patch = max(max(tile, self.spec.min_tile) + 2 * self.spec.tile_overlap, self.spec.min_size)
        return math.ceil(patch / multiple) * multiple

    def _padded_size(self, length: int) -> int:
        multiple = max(self.spec.size_multiple, 1)
        return max(self.spec.min_size, math.ceil(length / multiple) * multiple)

    def _padding(self, height: int, width: int) -> tuple[int, int, str]:
        """(bottom, right, mode) padding of a crop to a size the network accepts."""
        pad_h, pad_w = self._padded_size(height) - height, self._padded_size(width) - width
        return pad_h, pad_w, "reflect" if pad_h < height and pad_w < width else "replicate"

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
        # Results in reused (pinned) buffers are copied out, so those buffers are recycled at once.
        return whole_images[0] if len(whole_images) == 1 and self.in_flight == 1 else torch.cat(whole_images)

    def _results_in_order(self, chunks: list[list], crops_of, quantize: bool):
        """Yield (chunk, host result) per chunk, in order.

        With ``in_flight`` 2 (CUDA) one batch stays in flight: while its result copies back to the
        host, the next batch is cropped and launched, so the device never waits for the host.
        """
        in_flight: deque[tuple[list, object]] = deque()
        for chunk in chunks:
            in_flight.append((chunk, self._launch(crops_of(chunk), quantize)))
            if len(in_flight) >= self.in_flight:
                done, launched = in_flight.popleft()
                yield done, self._finish(launched)
        for done, launched in in_flight:
            yield done, self._finish(launched)

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
