"""A run's images go through read -> upscale -> write as overlapping stages (pipeline/image_flow.py).

The overlap is proven with events, not timings: a stage waits for something only another stage,
running at the same time, can do; without the overlap the wait times out and the test fails.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from lightsr_cli.engine import Engine, EnginePool
from lightsr_cli.pipeline import image_flow
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.run import run_jobs

from .test_hostile_runs import Nearest, Recorder, image_jobs, png, toy_pool

WAIT = 10  # seconds: far longer than any stage here takes; only a missing overlap waits this long


def _folder(tmp_path, count: int):
    for index in range(count):
        png(tmp_path / "in" / f"{index:02d}.png", height=8 + index, width=6 + index)
    return image_jobs(tmp_path / "in", tmp_path / "out")


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix in (".part", ".lock"))


def test_the_next_file_is_read_while_the_device_works(tmp_path, monkeypatch):
    jobs = _folder(tmp_path, 3)
    second_read = threading.Event()
    real_read, real_upscale = image_flow.read_image_job, image_flow.upscale_image_job

    def read(job, *args):
        decoded = real_read(job, *args)
        if job.source.name == "01.png":
            second_read.set()
        return decoded

    def upscale(engine, decoded, *args):
        if decoded.job.source.name == "00.png":  # the device holds file 0 until file 1 has been read
            assert second_read.wait(WAIT), "file 1 was not read while file 0 was on the device"
        return real_upscale(engine, decoded, *args)

    monkeypatch.setattr(image_flow, "read_image_job", read)
    monkeypatch.setattr(image_flow, "upscale_image_job", upscale)
    summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    assert [j.source.name for j in summary.done] == ["00.png", "01.png", "02.png"] and not summary.failed


def test_a_file_is_written_while_the_device_works_on_the_next(tmp_path, monkeypatch):
    jobs = _folder(tmp_path, 3)
    first_written = threading.Event()
    real_write, real_upscale = image_flow.write_image_job, image_flow.upscale_image_job

    def write(decoded, *args):
        result = real_write(decoded, *args)
        if decoded.job.source.name == "00.png":
            first_written.set()
        return result

    def upscale(engine, decoded, *args):
        if decoded.job.source.name == "01.png":  # the device holds file 1 until file 0 is on disk
            assert first_written.wait(WAIT), "file 0 was not written while file 1 was on the device"
            assert jobs[0].target.exists()
        return real_upscale(engine, decoded, *args)

    monkeypatch.setattr(image_flow, "write_image_job", write)
    monkeypatch.setattr(image_flow, "upscale_image_job", upscale)
    summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    assert len(summary.done) == 3 and not summary.failed


def test_outputs_equal_the_one_file_at_a_time_path(tmp_path):
    jobs = _folder(tmp_path, 5)
    run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    for job in jobs:
        source = cv2.imread(str(job.source))
        expected = np.repeat(np.repeat(source, 2, axis=0), 2, axis=1)  # the toy network: nearest x2
        assert np.array_equal(cv2.imread(str(job.target)), expected), job.source.name


def test_failures_in_each_stage_are_their_files_own_and_keep_the_order(tmp_path, monkeypatch):
    jobs = _folder(tmp_path, 6)
    (tmp_path / "in" / "01.png").write_bytes(b"not a png")  # fails in the read stage
    real_upscale, real_write = image_flow.upscale_image_job, image_flow.write_image_job

    def upscale(engine, decoded, *args):
        if decoded.job.source.name == "03.png":
            raise MemoryError("no room for this one")
        return real_upscale(engine, decoded, *args)

    def write(decoded, *args):
        if decoded.job.source.name == "04.png":
            raise OSError(28, "No space left on device")
        return real_write(decoded, *args)

    monkeypatch.setattr(image_flow, "upscale_image_job", upscale)
    monkeypatch.setattr(image_flow, "write_image_job", write)
    summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    assert [j.source.name for j in summary.done] == ["00.png", "02.png", "05.png"]
    failed = {job.source.name: error.message for job, error in summary.failed}
    assert list(failed) == ["01.png", "03.png", "04.png"]
    assert "MemoryError" in failed["03.png"] and "OSError" in failed["04.png"]
    assert not any(jobs[index].target.exists() for index in (1, 3, 4))
    assert _leftovers(tmp_path / "out") == []  # every claim released, no temp file left


def test_ctrl_c_on_the_device_releases_every_claim_and_writes_nothing_half(tmp_path, monkeypatch):
    jobs = _folder(tmp_path, 8)
    real_upscale = image_flow.upscale_image_job

    def upscale(engine, decoded, *args):
        if decoded.job.source.name == "03.png":
            raise KeyboardInterrupt
        return real_upscale(engine, decoded, *args)

    monkeypatch.setattr(image_flow, "upscale_image_job", upscale)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert "03_x2.png" not in written and set(written) <= {"00_x2.png", "01_x2.png", "02_x2.png"}
    for name in written:  # what was written is whole
        assert cv2.imread(str(tmp_path / "out" / name)) is not None
    assert _leftovers(tmp_path / "out") == []
    # and the targets are free again: a second run finishes the rest
    monkeypatch.undo()
    summary = run_jobs(toy_pool(), image_jobs(tmp_path / "in", tmp_path / "out", skip_existing=True),
                       OutputSettings(skip_existing=True), reporter=Recorder())
    assert not summary.failed and len(summary.done) == 8 - len(written)


def test_files_held_between_stages_stay_bounded(tmp_path, monkeypatch):
    """A slow disk must not make the reader decode the whole folder into memory."""
    jobs = _folder(tmp_path, 14)
    alive, peak, lock = [0], [0], threading.Lock()
    real_read, real_write = image_flow.read_image_job, image_flow.write_image_job
    slow_disk = threading.Event()

    def read(job, *args):
        decoded = real_read(job, *args)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        return decoded

    def write(decoded, *args):
        slow_disk.wait(0.02)
        try:
            return real_write(decoded, *args)
        finally:
            with lock:
                alive[0] -= 1

    monkeypatch.setattr(image_flow, "read_image_job", read)
    monkeypatch.setattr(image_flow, "write_image_job", write)
    summary = run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder())
    assert len(summary.done) == 14
    # read ahead + on the device + queued for writing + being written
    bound = image_flow.READ_AHEAD + 1 + image_flow.WRITE_BEHIND + 1
    assert 2 <= peak[0] <= bound, peak[0]


def test_two_devices_share_the_folder_and_the_order_holds(tmp_path, monkeypatch):
    jobs = _folder(tmp_path, 9)
    pool = toy_pool()
    pool = EnginePool([pool.primary, Engine(Nearest(), pool.primary.spec, 2, device="cpu")], model_id="toy")
    used, real_upscale = set(), image_flow.upscale_image_job

    def upscale(engine, decoded, *args):
        used.add(id(engine))
        return real_upscale(engine, decoded, *args)

    monkeypatch.setattr(image_flow, "upscale_image_job", upscale)
    (tmp_path / "in" / "04.png").write_bytes(b"\x89PNG broken")
    summary = run_jobs(pool, jobs, OutputSettings(), reporter=Recorder())
    assert [j.source.name for j in summary.done] == [f"{i:02d}.png" for i in range(9) if i != 4]
    assert [j.source.name for j, _ in summary.failed] == ["04.png"] and len(used) == 2
    for job in summary.done:
        source = cv2.imread(str(job.source))
        assert np.array_equal(cv2.imread(str(job.target)), np.repeat(np.repeat(source, 2, axis=0), 2, axis=1))
    assert _leftovers(tmp_path / "out") == []


class CountingBudget(image_flow._Budget):
    """A budget that also counts the files it holds, and the most it held at once."""

    budgets: list[CountingBudget] = []

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.files = self.most_files = 0
        CountingBudget.budgets.append(self)

    def add(self, amount: int) -> None:
        super().add(amount)
        self.files += 1
        self.most_files = max(self.most_files, self.files)

    def give_back(self, amount: int) -> None:
        super().give_back(amount)
        self.files -= 1


def _most_files_held(tmp_path, monkeypatch, jobs) -> tuple[int, int]:
    """(most files read ahead, most files waiting to be written) over one run with a slow disk."""
    CountingBudget.budgets = []
    monkeypatch.setattr(image_flow, "_Budget", CountingBudget)
    real_write = image_flow.write_image_job
    monkeypatch.setattr(image_flow, "write_image_job",
                        lambda *args: threading.Event().wait(0.02) or real_write(*args))
    for path in (tmp_path / "out").glob("*"):
        path.unlink()
    assert len(run_jobs(toy_pool(), jobs, OutputSettings(), reporter=Recorder()).done) == len(jobs)
    read_budget, write_budget = CountingBudget.budgets
    return read_budget.most_files, write_budget.most_files


def test_a_byte_budget_holds_huge_files_back_even_below_the_count_limits(tmp_path, monkeypatch):
    """Huge photos must not sit decoded, or upscaled, in memory several at a time: with budgets smaller
    than one file, one file waits ahead of the devices and one behind them."""
    jobs = _folder(tmp_path, 10)
    ahead, behind = _most_files_held(tmp_path, monkeypatch, jobs)
    # small files: only the count limits hold them (a read counts as ahead until its device takes it
    # up, so the one next in line may count too)
    assert 1 < ahead <= image_flow.READ_AHEAD + 1 and behind > 1, (ahead, behind)
    monkeypatch.setattr(image_flow, "READ_BUDGET", 1)
    monkeypatch.setattr(image_flow, "WRITE_BUDGET", 1)
    assert _most_files_held(tmp_path, monkeypatch, jobs) == (1, 1)


def test_budget_lets_one_oversized_item_through_alone_and_close_ends_the_wait():
    budget = image_flow._Budget(10)
    budget.wait_for_room()  # nothing held: room
    budget.add(25)
    waiter = threading.Thread(target=budget.wait_for_room)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waits while the big one is held
    budget.give_back(25)
    waiter.join(WAIT)
    assert not waiter.is_alive()
    budget.add(10)
    late = threading.Thread(target=budget.wait_for_room)
    late.start()
    budget.close()
    late.join(WAIT)
    assert not late.is_alive()
