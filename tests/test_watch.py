"""`lightsr watch`: files picked up once complete, bad files survived, Ctrl-C clean (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightsr_cli.errors import UsageError
from lightsr_cli.pipeline.watch import Settling, check_folders, is_candidate

REPO = Path(__file__).resolve().parent.parent


def png_bytes(height=18, width=22) -> bytes:
    rng = np.random.default_rng(2)
    ok, data = cv2.imencode(".png", rng.integers(0, 255, (height, width, 3)).astype(np.uint8))
    assert ok
    return data.tobytes()


def test_temporary_hidden_and_unknown_names_are_never_candidates(tmp_path):
    for name in ("a.png", "sub/b.jpg", "c.mp4"):
        assert is_candidate(tmp_path / name, tmp_path), name
    for name in (".a.png", "a.png.part", "a.png~", "a.png.tmp", "a.png.crdownload", ".x.png.1a2b.part",
                 ".a_x4.png.lightsr-lock", ".hidden/a.png", "notes.txt"):
        assert not is_candidate(tmp_path / name, tmp_path), name


def test_a_file_settles_only_after_its_size_stays_the_same(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"12345")
    settling = Settling()
    settling.observe(path, now=0.0)
    assert settling.settled(now=0.5, seconds=1.0) == []
    with path.open("ab") as handle:
        handle.write(b"more")
    os.utime(path, ns=(1, 1))
    settling.observe(path, now=0.9)
    assert settling.settled(now=1.5, seconds=1.0) == []  # changed at 0.9: not yet
    assert [p for p, _ in settling.settled(now=2.0, seconds=1.0)] == [path]
    empty = tmp_path / "b.png"
    empty.write_bytes(b"")
    settling.observe(empty, now=0.0)
    assert settling.settled(now=10.0, seconds=1.0) == []  # an empty file is still being created


def test_output_folder_inside_the_watched_one_is_refused(tmp_path):
    with pytest.raises(UsageError):
        check_folders(tmp_path, tmp_path, recursive=False)
    with pytest.raises(UsageError):
        check_folders(tmp_path, tmp_path / "out", recursive=True)
    check_folders(tmp_path, tmp_path / "out", recursive=False)


def _start_watch(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "lightsr_cli", "watch", str(tmp_path / "in"), "-o",
                             str(tmp_path / "out"), "--stable-seconds", "0.8", "--device", "cpu", "-s", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    return process.returncode, errors


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_dropped_files_give_exactly_the_good_outputs(tmp_path, mode):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "early.png").write_bytes(png_bytes())  # present at start: done too (--existing)
    process = _start_watch(tmp_path, *(["--poll"] if mode == "poll" else []))
    try:
        assert _wait_for(lambda: (outbox / "early_x2.png").exists(), 120), "the file present at start was not done"
        data = png_bytes(20, 26)
        with (inbox / "half.png").open("wb") as handle:  # written in two parts with a pause
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.3)
            handle.write(data[len(data) // 2:])
        (inbox / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
        (inbox / "download.png.part").write_bytes(png_bytes())  # temporary names are ignored
        (inbox / ".hidden.png").write_bytes(png_bytes())
        (inbox / "renamed.png.tmp").write_bytes(png_bytes(12, 12))
        (inbox / "renamed.png.tmp").rename(inbox / "renamed.png")  # renamed into place
        assert _wait_for(lambda: (outbox / "half_x2.png").exists() and (outbox / "renamed_x2.png").exists(), 120)
        time.sleep(2.0)  # the corrupt file has settled and been tried by now
        code, errors = _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130, errors
    assert sorted(p.name for p in outbox.iterdir()) == ["early_x2.png", "half_x2.png", "renamed_x2.png"]
    assert cv2.imread(str(outbox / "half_x2.png")).shape == (40, 52, 3)
    assert "corrupt.png" in errors and "Traceback" not in errors
    assert "1 failed" in errors


def test_ctrl_c_while_upscaling_leaves_nothing_half_written(tmp_path):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    process = _start_watch(tmp_path)
    try:
        assert _wait_for(lambda: "watching" in (process.stderr.readline() or ""), 120)
        big = png_bytes(300, 400)  # a few seconds of bsrn-x2 on a CPU: interrupted mid-image
        (inbox / "big.png").write_bytes(big)
        time.sleep(2.0)  # settled (0.8 s) and being upscaled
        code, errors = _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130, errors
    left = sorted(p.name for p in outbox.iterdir()) if outbox.exists() else []
    assert all(not name.startswith(".") and not name.endswith(".part") for name in left), left
    for name in left:  # anything there is complete
        assert cv2.imread(str(outbox / name)) is not None
