"""--dedup: repeated frames skip the network, the output keeps every frame (and equals the run without it)."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lightsr_cli.engine import Engine, EnginePool
from lightsr_cli.errors import UsageError
from lightsr_cli.media import video
from lightsr_cli.pipeline.dedup import (
    DEFAULT_NEAR_THRESHOLD,
    DedupCounts,
    DedupSettings,
    batches_with_reuse,
    expand_reuse,
    is_repeat,
    parse_dedup,
)
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind
from lightsr_cli.pipeline.video import VideoSettings, run_video_job
from lightsr_cli.progress import NullReporter
from tests.test_engine import LocalNet, _spec
from tests.test_video_pipeline import FAST_X2, run_cli

EXACT, NEAR = DedupSettings("exact"), DedupSettings("near", 2)
LOSSLESS_RGB = video.VideoEncodeSettings(codec="ffv1", pix_fmt="gbrp")  # RGB in, the same RGB out


def _frames_with_repeats(count: int = 24, height: int = 40, width: int = 56, seed: int = 3) -> list[np.ndarray]:
    """Distinct random pictures, each shown twice in a row (50% repeated frames), with an odd tail."""
    rng = np.random.default_rng(seed)
    pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range((count + 1) // 2)]
    return [pictures[i // 2] for i in range(count)]


def write_clip(path: Path, frames: list[np.ndarray], rate=Fraction(24)) -> Path:
    """A lossless RGB clip (ffv1, gbrp): decoding gives back exactly these frames."""
    with video.FrameWriter(path, rate, options=LOSSLESS_RGB) as writer:
        for frame in frames:
            writer.write(frame)
    return path


class CountingPool:
    """A toy-network pool whose networks count the frames they are given (hooks on the real modules)."""

    def __init__(self, devices: int = 1, batch: int = 1) -> None:
        self.frames_through_network = 0
        self.calls = 0
        networks = [LocalNet() for _ in range(devices)]
        for network in networks:
            network.register_forward_hook(self._count)
        self.pool = EnginePool(Engine(net, _spec(), 2, device="cpu", batch=batch) for net in networks)

    def _count(self, _module, inputs, _output) -> None:
        self.calls += 1
        self.frames_through_network += inputs[0].shape[0]


def _run(source: Path, target: Path, dedup: DedupSettings, devices=1, batch=1, segment_seconds=10.0, resume=False):
    counting = CountingPool(devices, batch)
    settings = VideoSettings(encode=video.VideoEncodeSettings(codec="ffv1"), dedup=dedup,
                             segment_seconds=segment_seconds, resume=resume)
    result = run_video_job(counting.pool, Job(source, target, MediaKind.VIDEO), OutputSettings(), settings,
                           NullReporter())
    return result, counting


def framemd5(path: Path) -> list[str]:
    """ffmpeg's per-frame MD5 of the decoded video stream (timestamps, sizes and hashes)."""
    out = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                         check=True, capture_output=True).stdout.decode()
    return [line for line in out.splitlines() if not line.startswith("#")]


# -- the rule ---------------------------------------------------------------------------------------

def test_dedup_modes_parse_and_bad_ones_are_usage_errors():
    assert parse_dedup(None) == DedupSettings() and not parse_dedup("off").active
    assert parse_dedup("exact") == EXACT
    assert parse_dedup("near") == DedupSettings("near", DEFAULT_NEAR_THRESHOLD)
    assert parse_dedup("NEAR:7") == DedupSettings("near", 7)
    for bad in ("near:-1", "near:256", "near:x", "exact:3", "fuzzy", "near:1.5"):
        with pytest.raises(UsageError):
            parse_dedup(bad)


def test_near_threshold_is_max_abs_difference_in_8_bit_levels():
    base = np.full((8, 8, 3), 100, np.uint8)
    within = base.copy()
    within[3, 4, 1] = 102  # one channel of one pixel, 2 levels away
    beyond = base.copy()
    beyond[7, 7, 2] = 97  # 3 levels below
    assert is_repeat(within, base, NEAR) and not is_repeat(within, base, EXACT)
    assert not is_repeat(beyond, base, NEAR)
    assert is_repeat(base.copy(), base, EXACT)
    assert not is_repeat(base[:4], base, NEAR)  # another size is never a repeat
    # 16-bit frames: T levels are T * 257 on the 0..65535 scale.
    deep = base.astype(np.uint16) * 257
    close, far = deep.copy(), deep.copy()
    close[0, 0, 0] += 2 * 257
    far[0, 0, 0] += 2 * 257 + 1
    assert is_repeat(close, deep, NEAR) and not is_repeat(far, deep, NEAR)


def test_a_slow_fade_cannot_drift_past_the_threshold():
    """Each frame is 1 level brighter than the one before: near:2 reuses at most 2 in a row."""
    fade = [np.full((4, 4, 3), level, np.uint8) for level in range(10)]
    counts = DedupCounts()
    plans = [step for batch in batches_with_reuse(fade, 4, NEAR, counts=counts) for step in batch.plan]
    assert plans == [True, False, False] * 3 + [True]
    outputs = list(expand_reuse((b, b.frames) for b in batches_with_reuse(fade, 4, NEAR)))
    assert all(np.abs(out.astype(int) - src).max() <= 2 for out, src in zip(outputs, fade, strict=True))
    assert (counts.upscaled, counts.reused) == (4, 6)


def test_batches_hold_up_to_size_frames_for_the_network_and_keep_the_order():
    frames = _frames_with_repeats(17)
    batches = list(batches_with_reuse(frames, 3, EXACT))
    assert all(1 <= len(b.frames) <= 3 for b in batches) and all(len(b.frames) == 3 for b in batches[:-1])
    assert sum(len(b.frames) for b in batches) == 9 and sum(len(b.plan) for b in batches) == 17
    rebuilt = list(expand_reuse((b, [f.copy() for f in b.frames]) for b in batches))
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, frames, strict=True))
    # Dedup off: every frame goes through, in batches of exactly the size (the last may be short).
    plain = list(batches_with_reuse(frames, 4, DedupSettings()))
    assert [len(b.frames) for b in plain] == [4, 4, 4, 4, 1] and all(all(b.plan) for b in plain)


def test_the_reference_resets_at_every_segment_start():
    """Frames 0..9 all equal, segments of 4: frames 0, 4 and 8 are upscaled (resume makes the same choices)."""
    same = [np.zeros((2, 2, 3), np.uint8)] * 10
    plans = [s for b in batches_with_reuse(same, 2, EXACT, reset_every=4) for s in b.plan]
    assert [i for i, fresh in enumerate(plans) if fresh] == [0, 4, 8]
    resumed = [s for b in batches_with_reuse(same[4:], 2, EXACT, first_index=4, reset_every=4) for s in b.plan]
    assert resumed == plans[4:]


# -- whole videos ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("devices", "batch"), [(1, 1), (1, 3), (2, 2)])
def test_exact_dedup_gives_the_same_frames_with_half_the_network_work(tmp_path, devices, batch):
    source = write_clip(tmp_path / "repeats.mkv", _frames_with_repeats(24))
    plain, plain_count = _run(source, tmp_path / "plain.mkv", DedupSettings(), devices, batch)
    deduped, dedup_count = _run(source, tmp_path / "dedup.mkv", EXACT, devices, batch, segment_seconds=0.5)
    assert framemd5(tmp_path / "dedup.mkv") == framemd5(tmp_path / "plain.mkv")
    assert plain_count.frames_through_network == plain.frames_upscaled == 24
    # 12 pictures, each twice; segments of 12 frames start on a new picture, so nothing extra is upscaled.
    assert dedup_count.frames_through_network == deduped.frames_upscaled == 12
    assert deduped.frames == 24 and dedup_count.calls < plain_count.calls
    assert video.probe_video(tmp_path / "dedup.mkv").frame_count == 24


def test_near_reuses_noise_but_not_a_real_change(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.integers(10, 240, (40, 56, 3), dtype=np.uint8)
    noise = (base.astype(np.int16) + rng.integers(-2, 3, base.shape)).astype(np.uint8)  # within 2 levels
    changed = base.copy()
    changed[20:24, 30:34] += 6  # a small patch 6 levels brighter
    other = rng.integers(0, 256, base.shape, dtype=np.uint8)
    frames = [base, noise, noise, changed, changed, base, other]
    source = write_clip(tmp_path / "noisy.mkv", frames)
    result, counting = _run(source, tmp_path / "near.mkv", NEAR)
    # base (new), noise (reuse), noise (reuse), changed (new), changed (exact repeat), base (new: 6 away), other
    assert counting.frames_through_network == result.frames_upscaled == 4
    _run(source, tmp_path / "exact.mkv", EXACT)
    outputs = np.stack(list(video.FrameReader(tmp_path / "near.mkv")))
    assert len(outputs) == 7
    assert np.array_equal(outputs[1], outputs[0]) and np.array_equal(outputs[2], outputs[0])
    assert not np.array_equal(outputs[3], outputs[0]) and np.array_equal(outputs[4], outputs[3])


def test_cli_dedup_reports_reused_frames_and_an_estimated_saving(tmp_path, official_weights, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    source = write_clip(tmp_path / "repeats.mkv", _frames_with_repeats(12, 32, 48))
    code, out, err = run_cli("upscale", str(source), "-s", "2", "--model", FAST_X2, "--device", "cpu", "--json",
                             "--dedup", "exact", "--codec", "ffv1")
    assert code == 0, err
    report = json.loads(out)["video"]
    assert (report["frames"], report["frames_reused"], report["frames_upscaled"]) == (12, 6, 6)
    assert report["estimated_seconds_saved"] > 0
    code, _, err = run_cli("upscale", str(source), "--dedup", "near:x", "-o", str(tmp_path / "x.mkv"))
    assert code == 2 and "--dedup near:x" in err


def test_near_dedup_resumed_after_a_crash_gives_the_uninterrupted_frames(tmp_path):
    """A run that dies mid-way, resumed with --resume, writes what one uninterrupted run writes."""
    fade = [np.full((16, 24, 3), 40 + level, np.uint8) for level in range(24)]  # 1 level per frame
    source = write_clip(tmp_path / "fade.mkv", fade)
    segment = 4 / 24  # segments of 4 frames
    whole, whole_count = _run(source, tmp_path / "whole.mkv", NEAR, segment_seconds=segment)

    class Crash(Exception):
        pass

    crashing = CountingPool()

    def crash_late(_module, _inputs, _output):
        if crashing.calls >= 9:
            raise Crash
    network = LocalNet()
    network.register_forward_hook(crashing._count)
    network.register_forward_hook(crash_late)
    crashing.pool = EnginePool([Engine(network, _spec(), 2, device="cpu", batch=1)])
    settings = VideoSettings(encode=video.VideoEncodeSettings(codec="ffv1"), dedup=NEAR, segment_seconds=segment)
    target = tmp_path / "resumed.mkv"
    with pytest.raises(Crash):
        run_video_job(crashing.pool, Job(source, target, MediaKind.VIDEO), OutputSettings(), settings, NullReporter())
    assert not target.exists() and list((tmp_path / ".resumed.mkv.lightsr-parts").glob("segment_0000?.mkv"))
    resumed, resumed_count = _run(source, target, NEAR, segment_seconds=segment, resume=True)
    assert resumed.resumed_from_frame > 0
    assert resumed_count.frames_through_network < whole_count.frames_through_network
    assert framemd5(target) == framemd5(tmp_path / "whole.mkv")
    assert video.probe_video(target).frame_count == 24 and whole.frames_upscaled < 24
