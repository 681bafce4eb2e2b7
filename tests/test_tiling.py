"""Tile planning and blend weights: full coverage, equal sizes, overlaps, weights summing to one."""

from __future__ import annotations

import numpy as np
import pytest

from lightsr_cli.tiling import blend_ramp, pick_tile_size, plan_spans


@pytest.mark.parametrize("length", [1, 15, 64, 65, 97, 250, 511, 1000])
@pytest.mark.parametrize("patch,context", [(32, 4), (64, 16), (80, 8), (96, 16), (200, 32)])
def test_spans_cover_axis_with_equal_lengths_and_enough_overlap(length, patch, context):
    spans = plan_spans(length, patch, context)
    assert spans[0].start == 0 and spans[-1].stop == length
    if len(spans) > 1:
        lengths = {s.length for s in spans}
        assert len(lengths) == 1 and lengths.pop() <= patch
        for left, right in zip(spans, spans[1:], strict=False):
            assert left.stop - right.start >= min(2 * context, patch - 1)
            assert right.start > left.start
    else:
        assert spans[0].length == length


@pytest.mark.parametrize("length", [97, 250, 511, 640, 1000, 1920])
@pytest.mark.parametrize("patch,context", [(64, 16), (96, 16), (200, 32), (544, 16)])
def test_spans_spend_no_work_on_needless_overlap(length, patch, context):
    """The fewest tiles of at most `patch`, each as short as the required overlap allows."""
    spans = plan_spans(length, patch, context)
    count, tile, overlap = len(spans), spans[0].length, 2 * context
    if count == 1:
        return
    assert (count - 1) * patch - (count - 2) * overlap < length  # one tile fewer could not cover the axis
    assert count * (tile - 1) - (count - 1) * overlap < length  # one pixel shorter could not either


def test_min_length_keeps_tiles_large_enough():
    spans = plan_spans(200, 160, 16, min_length=160)
    assert {s.length for s in spans} == {160} and spans[-1].stop == 200


@pytest.mark.parametrize("length,patch,context,scale", [(250, 64, 16, 4), (97, 40, 8, 2), (1000, 96, 16, 3), (65, 64, 1, 4)])
def test_blend_weights_sum_to_one_everywhere(length, patch, context, scale):
    spans = plan_spans(length, patch, context)
    total = np.zeros(length * scale)
    for index, span in enumerate(spans):
        ramp = blend_ramp(spans, index, scale, context)
        assert ramp.min() >= 0 and ramp.max() <= 1
        total[span.start * scale: span.stop * scale] += ramp
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blend_weights_fade_towards_cut_edges():
    spans = plan_spans(300, 96, 16)
    middle = blend_ramp(spans, 1, 4, 16)
    # No weight within context/2 of a cut edge, rising across the overlap; full weight in the middle.
    assert middle[: 8 * 4].max() == 0 and middle[-8 * 4:].max() == 0 and middle[len(middle) // 2] == 1
    assert np.all(np.diff(middle[: len(middle) // 2]) >= 0)


def test_pick_tile_size_uses_whole_image_when_it_fits():
    assert pick_tile_size(500, 400, 500 * 400, 8, 32) == 0
    side = pick_tile_size(500, 400, 100 * 100, 8, 32)
    assert side == 96 and side % 8 == 0
    assert pick_tile_size(500, 400, 10, 8, 32) == 32


@pytest.mark.parametrize("length", [100, 129, 250, 511])
@pytest.mark.parametrize("patch,context,align", [(64, 16, 32), (96, 16, 32), (96, 32, 8)])
def test_aligned_spans_start_on_the_grid_and_cover_with_overlap(length, patch, context, align):
    spans = plan_spans(length, patch, context, align)
    assert spans[0].start == 0 and spans[-1].stop == length
    assert all(span.start % align == 0 for span in spans)
    lengths = {span.length for span in spans[:-1]}
    assert len(lengths) <= 1 and spans[-1].length <= patch and all(n <= patch and n % align == 0 for n in lengths)
    for left, right in zip(spans, spans[1:], strict=False):
        assert left.stop - right.start >= min(2 * context, patch - 1)
    total = np.zeros(length * 2)
    for index, span in enumerate(spans):
        total[span.start * 2: span.stop * 2] += blend_ramp(spans, index, 2, context)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("length", [100, 250, 511, 960, 1920])
@pytest.mark.parametrize("patch,context,align", [(96, 16, 32), (564, 24, 6), (576, 32, 64)])
def test_aligned_spans_are_no_longer_than_needed(length, patch, context, align):
    """As few aligned tiles as full-size ones would need, and one `align` step shorter would need more."""
    from lightsr_cli.tiling import _aligned_plan

    spans = plan_spans(length, patch, context, align)
    if len(spans) == 1:
        return
    assert len(spans) == len(_aligned_plan(length, patch, 2 * context, align))
    tile = spans[0].length
    if tile - align >= 2 * context + align:
        assert len(_aligned_plan(length, tile - align, 2 * context, align)) > len(spans)
