"""GRL's size-dependent geometry: log-spaced coordinate tables, relative indices, shift masks,
and the window/stripe partitions, rebuilt for each feature size and cached by the network."""

from __future__ import annotations

import math

import torch

Pair = tuple[int, int]

# DIV2K RGB mean used by upstream for 3-channel inputs (img_range 1.0).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Upstream clamps the learnt log-temperature at log(1 / 0.01).
MAX_LOG_SCALE = math.log(1.0 / 0.01)
# Hidden width of the continuous position-bias MLP and channels of the SR reconstruction head.
BIAS_MLP_HIDDEN = 512
RECON_FEATS = 64
# Penalty added between pixels of different regions in shifted windows.
SHIFT_PENALTY = -100.0


# --------------------------------------------------------------------------------------------
# Size-dependent geometry: coordinate tables, relative indices, shift masks
# --------------------------------------------------------------------------------------------


def log_coords_table(window: Pair, down: int) -> torch.Tensor:
    """Relative offsets between a window and its (down-scaled) anchor window, log-spaced.

    Returns ``1 x Lh x Lw x 2`` with ``L = window + window // down - 1`` per axis; each axis is
    scaled so that its largest positive offset maps to 8, then ``sign(t) * log2(1 + |t|) / 3``.
    ``down == 1`` gives the ordinary window-to-window table.
    """
    anchor = [w // down for w in window]
    highest = [w - 1 - (w - a) // 2 for w, a in zip(window, anchor, strict=False)]
    lowest = [-(a - 1) - (w - a) // 2 for w, a in zip(window, anchor, strict=False)]
    axes = [torch.arange(lo, hi + 1, dtype=torch.float32) for lo, hi in zip(lowest, highest, strict=False)]
    table = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)
    table = table / torch.tensor(highest, dtype=torch.float32) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.unsqueeze(0)


def grid_coords(height: int, width: int) -> torch.Tensor:
    """``2 x (height*width)`` integer (row, col) coordinates in raster order."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()])


def relative_index(window: Pair, down: int, window_queries: bool) -> torch.Tensor:
    """Row index into the flattened coordinate table for every (query, key) pair.

    Both the window and its anchor window are counted from their top-left corner.
    ``window_queries``: queries are window pixels and keys anchors (``N_w x N_a``); otherwise
    the reverse (``N_a x N_w``).
    """
    anchor = (window[0] // down, window[1] // down)
    row_length = window[1] + anchor[1] - 1
    at_window, at_anchor = grid_coords(*window), grid_coords(*anchor)
    if window_queries:
        offset = (anchor[0] - 1, anchor[1] - 1)
        delta = at_window[:, :, None] - at_anchor[:, None, :]
    else:
        offset = (window[0] - 1, window[1] - 1)
        delta = at_anchor[:, :, None] - at_window[:, None, :]
    return (delta[0] + offset[0]) * row_length + (delta[1] + offset[1])


def region_labels(size: Pair, window: Pair, shift: Pair) -> torch.Tensor:
    """Label each pixel by which of the 3x3 bands of a cyclic shift it came from, per window.

    Returns ``num_windows x (window_h*window_w)``. The bands (written as Python slices, as
    upstream does, which also fixes their meaning when a shift is zero) are: everything above
    the last window, the last window minus the shift, and the last ``shift`` pixels.
    """
    labels = torch.zeros(size)
    bands = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=False)]
    for i, rows in enumerate(bands[0]):
        for j, cols in enumerate(bands[1]):
            labels[rows, cols] = 3 * i + j
    grid_h, grid_w = size[0] // window[0], size[1] // window[1]
    labels = labels.view(grid_h, window[0], grid_w, window[1]).permute(0, 2, 1, 3)
    return labels.reshape(grid_h * grid_w, window[0] * window[1])


class ShiftMask:
    """The -100 penalty of shifted-window attention, for the windows that need it.

    Upstream stores ``num_windows x N_query x N_key`` penalties (0 or -100) and adds them to
    every window. Only windows that hold more than one region have non-zero entries, so only
    their region labels are kept (``windows`` indexes them within one image) and the penalty is
    expanded when it is added. Adding zero elsewhere would not change any logit.
    """

    def __init__(self, query_labels: torch.Tensor, key_labels: torch.Tensor) -> None:
        self.windows_per_image = query_labels.shape[0]
        both = torch.cat([query_labels, key_labels], dim=1)
        self.windows = torch.nonzero(both.amax(dim=1) != both.amin(dim=1)).flatten()
        self.query_labels = query_labels[self.windows]
        self.key_labels = key_labels[self.windows]

    def to(self, device: torch.device) -> "ShiftMask":
        self.windows = self.windows.to(device)
        self.query_labels = self.query_labels.to(device)
        self.key_labels = self.key_labels.to(device)
        return self

    def add_to(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits``: ``(B*num_windows) x heads x N_query x N_key`` (fp32), updated in place."""
        if self.windows.numel():
            differs = self.query_labels[:, :, None] != self.key_labels[:, None, :]
            penalty = torch.zeros(differs.shape, dtype=logits.dtype, device=logits.device)
            penalty.masked_fill_(differs, SHIFT_PENALTY)
            per_image = logits.view(-1, self.windows_per_image, *logits.shape[1:])
            if torch.jit.is_tracing():
                # An exporter's trace loses in-place writes through an indexed view: add the
                # penalty of every window (zero where it has one region) out of place instead.
                full = torch.zeros((self.windows_per_image, *penalty.shape[1:]), dtype=logits.dtype,
                                   device=logits.device).index_copy(0, self.windows, penalty)
                return (per_image + full[None, :, None]).view(logits.shape)
            per_image[:, self.windows] += penalty[None, :, None]
        return logits


class StripeGeometry:
    """Tables, indices and shift masks of anchored stripe attention for one stripe orientation."""

    def __init__(self, size: Pair, stripe: Pair, down: int) -> None:
        self.table = log_coords_table(stripe, down)
        self.index_anchor_to_stripe = relative_index(stripe, down, window_queries=False)
        self.index_stripe_to_anchor = relative_index(stripe, down, window_queries=True)
        shift = (stripe[0] // 2, stripe[1] // 2)
        stripe_labels = region_labels(size, stripe, shift)
        anchor_labels = region_labels(
            (size[0] // down, size[1] // down),
            (stripe[0] // down, stripe[1] // down),
            (shift[0] // down, shift[1] // down),
        )
        self.mask_anchor_to_stripe = ShiftMask(anchor_labels, stripe_labels)
        self.mask_stripe_to_anchor = ShiftMask(stripe_labels, anchor_labels)

    def to(self, device: torch.device) -> "StripeGeometry":
        self.table = self.table.to(device)
        self.index_anchor_to_stripe = self.index_anchor_to_stripe.to(device)
        self.index_stripe_to_anchor = self.index_stripe_to_anchor.to(device)
        self.mask_anchor_to_stripe.to(device)
        self.mask_stripe_to_anchor.to(device)
        return self


class Geometry:
    """Everything the attention layers need that depends on the padded feature size."""

    def __init__(self, size: Pair, window: int, stripe: Pair, down: int, device: torch.device) -> None:
        square = (window, window)
        self.window_table = log_coords_table(square, 1).to(device)
        self.window_index = relative_index(square, 1, window_queries=True).to(device)
        labels = region_labels(size, square, (window // 2, window // 2))
        self.window_mask = ShiftMask(labels, labels).to(device)
        self.stripes = {
            "H": StripeGeometry(size, stripe, down).to(device),
            "V": StripeGeometry(size, (stripe[1], stripe[0]), down).to(device),
        }


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def to_windows(grid: torch.Tensor, window: Pair) -> torch.Tensor:
    """``B x H x W x C`` -> ``(B*num_windows) x (wh*ww) x C``, windows in raster order."""
    b, h, w, c = grid.shape
    grid = grid.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def from_windows(tokens: torch.Tensor, window: Pair, size: Pair) -> torch.Tensor:
    """Inverse of :func:`to_windows`: ``(B*num_windows) x (wh*ww) x C`` -> ``B x H x W x C``."""
    grid_h, grid_w = size[0] // window[0], size[1] // window[1]
    c = tokens.shape[-1]
    tokens = tokens.view(-1, grid_h, grid_w, window[0], window[1], c)
    return tokens.permute(0, 1, 3, 2, 4, 5).reshape(-1, size[0], size[1], c)
