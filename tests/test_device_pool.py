"""Several engines sharing the work (`--device cuda:0,cuda:1`), exercised with CPU engines.

The pool only hands items to engines and keeps their order, so two CPU engines prove the
splitting, ordering and error paths that two GPUs would take.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from lightsr_cli.engine import Engine, EnginePool, parse_devices
from lightsr_cli.errors import DeviceError, UsageError
from lightsr_cli.media import images, video
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind
from lightsr_cli.pipeline.run import run_jobs
from lightsr_cli.pipeline.video import VideoSettings, run_video_job
from lightsr_cli.progress import NullReporter
from tests.test_engine import LocalNet, _spec
from tests.test_video_pipeline import decode_all, make_clip


def _pool(count: int) -> EnginePool:
    return EnginePool(Engine(LocalNet(), _spec(), 2, device="cpu", batch=3) for _ in range(count))


def test_device_lists_are_parsed_and_checked():
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu") == ["cpu"] and parse_devices("") == ["auto"]
    with pytest.raises(UsageError, match="numbered GPUs"):
        parse_devices("cuda:0,cpu")
    with pytest.raises(UsageError, match="twice"):
        parse_devices("cuda:1,cuda:1")
    if torch.cuda.is_available():
        assert parse_devices("cuda:all") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            parse_devices("cuda:all")


def test_work_goes_to_every_engine_and_comes_back_in_order():
    pool = _pool(2)
    used: dict[int, set[str]] = {}
    lock = threading.Lock()

    def work(upscaler, item):
        time.sleep(0.01 * (item % 3))  # uneven work, so items finish out of order
        with lock:
            used.setdefault(id(upscaler), set()).add(threading.current_thread().name)
        return item * item

    assert list(pool.map_ordered(work, range(20))) == [i * i for i in range(20)]
    assert set(used) == {id(u) for u in pool.engines}


def test_an_error_surfaces_at_its_item_and_stops_the_rest():
    pool = _pool(2)
    done = []

    def work(upscaler, item):
        if item == 3:
            raise ValueError("bad item")
        done.append(item)
        return item

    results = pool.map_ordered(work, range(100))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item"):
        next(results)
    assert len(done) < 100  # items not yet started were cancelled


def test_a_folder_split_over_two_engines_equals_one_engine(tmp_path):
    rng = np.random.default_rng(0)
    jobs = []
    for index in range(6):
        source = tmp_path / f"in{index}.png"
        images.write_image(source, rng.integers(0, 256, (17 + index, 23, 3)).astype(np.uint8),
                           images.ImageEncodeSettings("png"), overwrite=False)
        jobs.append(Job(source, tmp_path / "two" / source.name, MediaKind.IMAGE))
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    jobs.insert(2, Job(broken, tmp_path / "two" / "broken.png", MediaKind.IMAGE))
    summary = run_jobs(_pool(2), jobs, OutputSettings())
    assert [job.source.name for job, _ in summary.failed] == ["broken.png"]
    assert [job.source.name for job in summary.done] == [f"in{i}.png" for i in range(6)]
    single = run_jobs(_pool(1), [Job(j.source, tmp_path / "one" / j.source.name, j.kind) for j in jobs
                                 if j.source != broken], OutputSettings())
    assert len(single.done) == 6
    for index in range(6):
        two = images.read_image(tmp_path / "two" / f"in{index}.png")
        one = images.read_image(tmp_path / "one" / f"in{index}.png")
        assert two.shape == (2 * (17 + index), 46, 3) and np.array_equal(two, one)


def test_video_frames_split_over_two_engines_stay_in_order(tmp_path):
    source = make_clip(tmp_path / "clip.mkv", size="64x48", seconds=1, audio=False, subtitles=False)
    settings = VideoSettings(encode=video.VideoEncodeSettings(codec="ffv1"))
    outputs = {}
    for count in (1, 2):
        target = tmp_path / f"out{count}.mkv"
        result = run_video_job(_pool(count), Job(source, target, MediaKind.VIDEO), OutputSettings(), settings,
                               NullReporter())
        assert result.frames == 24 and result.inference_seconds > 0
        outputs[count] = decode_all(target)
    assert outputs[2].shape == (24, 96, 128, 3)
    assert np.array_equal(outputs[1], outputs[2])
    # Frames differ from one another (testsrc moves), so equality above also proves the order.
    assert not np.array_equal(outputs[2][0], outputs[2][12])
