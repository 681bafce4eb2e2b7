"""GRL: global, regional and local modelling transformer, super-resolution variants.

Paper: Li, Fan, Xiang, Demandolx, Ranjan, Timofte, Van Gool, "Efficient and Explicit Modelling of
Image Hierarchies for Image Restoration", CVPR 2023.
Reference implementation: https://github.com/ofsoundof/GRL-Image-Restoration (MIT), the
"efficient" network ``models/networks/grl.py`` with ``models/common/mixed_attn_block_efficient.py``.
This is an independent re-implementation for lightsr; only the parameter names and shapes follow
the official checkpoints (``sr_grl_{tiny,small,base}_c3x{2,3,4}.ckpt`` of release v1.0.0, and the
real-world ``bsr_grl_base.ckpt``) so that they load with ``strict=True``.

Network outline (tokens are ``B x L x C`` with ``L = H*W`` of the padded input)::

    RGB [0,1] -> pad bottom/right to a multiple of max(window, stripe) -> minus DIV2K mean
      -> 3x3 conv (3 -> C) -> LayerNorm
      -> stages; each stage: blocks, then a 3x3 conv on the map, plus the stage input
      -> LayerNorm -> 3x3 conv -> plus the first conv's output
      -> upsampler -> plus the mean -> crop to scale * input size

Every block is "residual post-norm" (Swin-v2 style): ``x += norm1(attention(x))`` (plus, in GRL-base,
a convolutional channel-attention branch on ``x``), then ``x += norm2(mlp(x))``. One shared linear
layer gives q, k and v for two attention kinds that each get half of the channels:

* window attention over square windows (shifted by half a window in every other block);
* anchored stripe attention over large stripes (a 64x64 square for the SR models). Anchors are
  the block input average-pooled by ``anchor_window_down_factor`` and projected to C/2 channels.
  Attention runs in two hops: the anchors attend to the stripe's keys/values, then the stripe's
  queries attend to the anchors, whose values are the first hop's output. Stripes alternate
  between the "H" orientation (``stripe_size``) and the transposed "V" one, and are shifted by
  half a stripe in blocks 2 and 3 of every group of four.

All attention is cosine attention (normalised q and k) with a learnt per-head temperature
(``exp(min(logit_scale, log 100))``) plus a continuous relative-position bias: a small MLP maps
log-spaced relative coordinates to per-head values, squashed as ``16 * sigmoid``. Shifted windows
get the usual -100 penalty between pixels that came from different image regions.

Everything that depends on the feature size (coordinate tables, relative indices, shift masks)
is rebuilt here for the actual input size and cached; the official checkpoints also carry
copies computed for the training patch size, which :func:`prepare_state_dict` drops. Shift masks
are stored only for the windows that contain more than one region (the last row and column of
windows): adding zero to the other windows, as upstream does, changes nothing.

Precision: the cosine logits are multiplied by temperatures up to 100, so a bf16/fp16 rounding
error of 2^-8 in the cosine becomes ~0.4 in a logit. Normalisation, logits, position bias and
softmax therefore always run in fp32 (the probabilities are cast back to the caller's dtype
before they weight the values). For fp32 inputs this is exactly the upstream computation (the
tests find bit-identical outputs). The residual stream itself is not normalised before the
attention and MLP branches and can grow with depth; with no real weights available offline its
fp16 headroom is unverified, and other deployments keep it out of fp16 (spandrel marks GRL as not
half-safe; vs-grlir keeps the residual stream in fp32 for its fp16 mode), hence
``fp16_safe=False``. bf16 has the fp32 exponent range, so with the attention in fp32 it is marked
safe.

Engine traits (see ``SPEC``): the network pads itself (reflect, or zeros when the padding would
exceed the image, as upstream), so any size is accepted (``min_size=1``, ``size_multiple=1``).
Tiles are best kept at multiples of 64 = max(window, stripe) for every released model, otherwise
the network pads each tile itself. Attention reaches across a 64x64 stripe (shifted by 32) in
every block, so context flows across whole tiles; ``tile_overlap=32`` is the overlap upstream uses
for its own tiled evaluation (``tile_overlap: 32`` in ``experiment/sr/grl/grl_p256.yaml``).
"""

from __future__ import annotations

from typing import Any

from .. import facts
from ..spec import ArchSpec
from .attention import AttentionLogits, cosine_attention
from .detection import detect, geometry_from_buffers, prepare_state_dict
from .geometry import Geometry, log_coords_table, relative_index
from .network import GRL, build

__all__ = ["GRL", "RELEASE_FILES", "RELEASE_URL", "SPEC", "VARIANTS", "AttentionLogits", "Geometry", "build",
           "cosine_attention", "detect", "geometry_from_buffers", "log_coords_table", "prepare_state_dict",
           "relative_index"]

VARIANTS: dict[str, dict[str, Any]] = {name: dict(hp) for name, hp in facts.GRL.variants.items()}
"""The three SR variants of the paper, as used for the release checkpoints (see lightsr_cli.archs.facts)."""

RELEASE_URL = facts.GRL.url_of("")
# Official SR checkpoints per variant and scale (Lightning checkpoints, keys under "model.").
RELEASE_FILES: dict[str, dict[int, str]] = {
    name: {scale: f"sr_grl_{name}_c3x{scale}.ckpt" for scale in (2, 3, 4)} for name in VARIANTS
}

SPEC = ArchSpec(
    name="GRL",
    build=build,
    input_range=1.0,
    min_size=1,
    size_multiple=1,
    tile_overlap=32,
    tile_multiple=64,
    fp16_safe=False,
    bf16_safe=True,
    prepare_state_dict=prepare_state_dict,
    detect=detect,
    # Peak activation memory per LR pixel (benchmarks/memory_estimates.py, CPU peak RSS slope
    # between 64^2 and 128^2 inputs): GRL-tiny 29.7 KB fp32 / 27.1 KB bf16, GRL-small 26.7 / 24.8 KB.
    # The attention logits and softmax stay fp32 in bf16 and dominate, so bf16 saves little. GRL-base
    # has 3 heads to their 2 (1.5x the logits): ~45 / ~41 KB, plus ~8% headroom.
    activation_bytes_per_pixel=49152,
    half_activation_bytes_per_pixel=45056,
    # Attention logits of GRL-base: 3 heads x 1024 tokens (32x32 window) per pixel, fp32.
    widest_activation=3072,
    paper=facts.GRL.paper,
    # The shift masks (which windows mix regions: aten::nonzero over region labels), the window
    # tables and the padding are computed in Python from the feature size and traced as constants.
    onnx_fixed_size="its shift masks (aten::nonzero over region labels), window tables and padding are "
                    "computed in Python for each input size, so a traced graph holds for one size only",
)

