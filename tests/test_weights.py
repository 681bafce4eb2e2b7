"""lightsr_cli.weights: resolution order, downloads under faults, the cache, embedded files, the lock."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lightsr_cli import weights
from lightsr_cli.checkpoints import detect_checkpoint, load_state_dict
from lightsr_cli.errors import WeightsError
from lightsr_cli.registry import CARDS, ModelCard, get_card
from lightsr_cli.settings import Settings, read_settings
from lightsr_cli.weights import (
    DownloadPolicy,
    cached_status,
    download_file,
    ensure_weights,
    file_digest,
    remove_cached,
    verify_cached,
)

from .conftest import REPO_ROOT
from .weights_server import Fault, WeightsServer

FAST = DownloadPolicy(attempts=3, timeout=0.3, backoff=0.01, max_backoff=0.02, retry_budget=5, lock_timeout=10)
CARD_ID = "plainusr-m-x2"  # 615 kB, not embedded: every test card goes through the cache


class RecordingReporter:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.tasks: list[dict] = []

    def task(self, description, total, unit=""):
        record = {"description": description, "total": total, "unit": unit, "advanced": 0, "closed": False}
        self.tasks.append(record)

        class Task:
            def advance(self, amount=1):
                record["advanced"] += amount

            def close(self):
                record["closed"] = True

        return Task()

    def note(self, message):
        self.notes.append(message)


# -- fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture
def server(official_weights):
    with WeightsServer(official_weights) as running:
        yield running


@pytest.fixture
def cache_dir() -> Path:
    return Path(os.environ["LIGHTSR_CACHE_DIR"])


def settings_for(cache_dir: Path, mirror: str | None = None, offline: bool = False) -> Settings:
    return Settings(cache_dir=cache_dir, weights_mirror=mirror, offline=offline)


def served(server: WeightsServer, card_id: str = CARD_ID, **checkpoint_changes) -> ModelCard:
    """The registry card with its official URL pointed at the loopback server (never the internet)."""
    card = get_card(card_id)
    checkpoint = replace(card.checkpoint, url=server.url_for(card.mirror_path), **checkpoint_changes)
    return replace(card, checkpoint=checkpoint)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL fails the test."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args[0]!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# -- resolution through mirrors and the official URL ------------------------------------------------

def test_http_mirror_download_then_warm_cache(server, cache_dir, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", server.url)
    card = get_card(CARD_ID)
    card = replace(card, checkpoint=replace(card.checkpoint, url="http://127.0.0.1:9/never-used"))
    reporter = RecordingReporter()

    resolved = ensure_weights(card, reporter, policy=FAST)

    assert (resolved.source, resolved.pinned) == ("mirror", True)
    assert resolved.path == read_settings().cache_dir / card.mirror_path
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    assert reporter.tasks == [{"description": f"downloading {card.checkpoint.filename}",
                               "total": card.checkpoint.size, "unit": "B",
                               "advanced": card.checkpoint.size, "closed": True}]
    again = ensure_weights(card, policy=FAST)
    assert again.source == "cache" and again.path == resolved.path
    assert len(server.requests) == 1
    assert os.fspath(resolved) == str(resolved.path)  # usable wherever a path is
    assert leftovers(cache_dir) == []


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_folder_mirror_copies_into_cache(official_weights, cache_dir, as_url):
    mirror = official_weights.resolve().as_uri() if as_url else str(official_weights)
    card = get_card("emt-x2")
    resolved = ensure_weights(card, settings=settings_for(cache_dir, mirror=mirror), policy=FAST)
    assert resolved.source == "mirror"
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    assert resolved.path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_mirror_without_the_file_falls_back_to_official_url(server, cache_dir, tmp_path):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    reporter = RecordingReporter()
    resolved = ensure_weights(served(server), reporter, settings_for(cache_dir, mirror=str(empty_mirror)), policy=FAST)
    assert resolved.source == "download"
    assert any("is not on the mirror" in note for note in reporter.notes)


def test_broken_http_mirror_falls_back_to_official_url(server, cache_dir):
    server.script(Fault.NOT_FOUND)
    reporter = RecordingReporter()
    resolved = ensure_weights(served(server), reporter, settings_for(cache_dir, mirror=server.url), policy=FAST)
    assert resolved.source == "download"
    assert any("HTTP 404" in note and "trying the official URL" in note for note in reporter.notes)


def test_mirror_and_official_failing_name_both_failures_in_the_message(server, cache_dir):
    server.default = Fault.NOT_FOUND
    with pytest.raises(WeightsError) as caught:
        ensure_weights(served(server), settings=settings_for(cache_dir, mirror=server.url), policy=FAST)
    message = caught.value.message
    assert message.count("HTTP 404") == 2 and "the mirror failed first" in message
    assert "mirror failed" not in (caught.value.hint or "")


def test_mirror_that_is_not_a_folder_is_a_clear_error(cache_dir, tmp_path):
    with pytest.raises(WeightsError) as caught:
        ensure_weights(get_card(CARD_ID), settings=settings_for(cache_dir, mirror=str(tmp_path / "nope")))
    assert "is not a folder" in caught.value.message and "<ARCH>/<file>" in caught.value.hint


# -- download faults --------------------------------------------------------------------------------

def test_corrupted_body_is_rejected_and_nothing_is_kept(server, cache_dir):
    server.default = Fault.CORRUPT_BODY
    card = served(server)
    with pytest.raises(WeightsError) as caught:
        ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert "is not the expected file (sha256" in caught.value.message
    assert "nothing was saved" in caught.value.message
    assert not weights.cache_path(card, settings_for(cache_dir)).exists()
    assert leftovers(cache_dir) == []
    assert len(server.requests) == 1  # a complete but wrong file is not fetched again


def test_dropped_connection_resumes_with_range(server, cache_dir):
    server.script(Fault.DROP_MID_BODY)
    card = served(server)
    resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    first, second = server.requests
    half = card.checkpoint.size // 2
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == (f"bytes={half}-", 206)
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    assert leftovers(cache_dir) == []


def test_dropped_connection_every_time_gives_up_cleanly(server, cache_dir):
    server.default = Fault.DROP_MID_BODY
    card = served(server)
    with pytest.raises(WeightsError) as caught:
        ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert "connection closed after" in caught.value.message
    assert caught.value.message.endswith("; gave up after 3 attempts")
    assert "LIGHTSR_WEIGHTS_MIRROR" in caught.value.hint and "LIGHTSR_OFFLINE" in caught.value.hint
    assert len(server.requests) == 3
    assert not weights.cache_path(card, settings_for(cache_dir)).exists()
    assert leftovers(cache_dir) == []


def test_too_long_content_length_without_a_pinned_size_is_a_truncated_transfer(server, cache_dir):
    server.script(Fault.LONG_LENGTH)
    card = served(server, size=None)  # only the sha256 is known
    resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    # the resume offset is the end of the real file: the server answers with the whole file again
    assert [(r.status, r.range) for r in server.requests] == [(200, None), (200, "bytes=615486-")]


@pytest.mark.parametrize("fault, announced", [(Fault.SHORT_LENGTH, 614486), (Fault.LONG_LENGTH, 616486)])
def test_wrong_announced_size_fails_at_once(server, cache_dir, fault, announced):
    server.default = fault
    with pytest.raises(WeightsError) as caught:
        ensure_weights(served(server), settings=settings_for(cache_dir), policy=FAST)
    assert f"announces {announced} bytes but the model card expects 615486" in caught.value.message
    assert "different bytes" in caught.value.hint
    assert len(server.requests) == 1 and leftovers(cache_dir) == []


def test_short_body_without_a_pinned_size_fails_its_hash(server, cache_dir):
    server.default = Fault.SHORT_LENGTH
    with pytest.raises(WeightsError) as caught:
        ensure_weights(served(server, size=None), settings=settings_for(cache_dir), policy=FAST)
    assert "is not the expected file (sha256" in caught.value.message
    assert leftovers(cache_dir) == []


def test_404_is_final_with_a_hint(server, cache_dir):
    card = served(server)
    card = replace(card, checkpoint=replace(card.checkpoint, url=server.url_for("PlainUSR/missing.pth")))
    with pytest.raises(WeightsError) as caught:
        ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert caught.value.message.endswith("HTTP 404 Not Found")
    assert "no file at that address" in caught.value.hint and "<ARCH>/<file>" in caught.value.hint
    assert len(server.requests) == 1


@pytest.mark.parametrize("fault", [Fault.ERROR_500, Fault.ERROR_503_RETRY_AFTER])
def test_server_error_then_success(server, cache_dir, fault):
    server.script(fault)
    card = served(server)
    resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    assert [r.status for r in server.requests] == [fault is Fault.ERROR_500 and 500 or 503, 200]


def test_stalled_server_times_out_in_bounded_time(server, cache_dir):
    server.default = Fault.STALL
    started = time.monotonic()
    with pytest.raises(WeightsError) as caught:
        ensure_weights(served(server), settings=settings_for(cache_dir),
                       policy=replace(FAST, attempts=2))
    assert time.monotonic() - started < 2.0
    assert caught.value.message.endswith(": no data for 0.3 s; gave up after 2 attempts")
    assert leftovers(cache_dir) == []


def test_stall_mid_body_resumes(server, cache_dir):
    server.script(Fault.STALL_MID_BODY)
    card = served(server)
    resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    resumed_at = int(server.requests[1].range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= card.checkpoint.size // 2  # whatever arrived before the stall was kept


@pytest.mark.parametrize("ranges", ["absent", "ignored"])
def test_server_without_range_support_still_gives_a_correct_file(official_weights, cache_dir, ranges):
    with WeightsServer(official_weights, ranges=ranges) as server:
        server.script(Fault.DROP_MID_BODY)
        card = served(server)
        resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
        assert sha256_of(resolved.path) == card.checkpoint.sha256
        assert [r.status for r in server.requests] == [200, 200]
        # Without Accept-Ranges we do not even ask; when it is advertised but ignored we restart from zero.
        assert server.requests[1].range == (None if ranges == "absent" else f"bytes={card.checkpoint.size // 2}-")


def test_resumed_file_that_fails_its_hash_is_fetched_whole_once_more(server, cache_dir):
    server.script(Fault.DROP_MID_BODY, Fault.CORRUPT_BODY)
    card = served(server)
    resolved = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    assert sha256_of(resolved.path) == card.checkpoint.sha256
    assert [(r.status, r.range is None) for r in server.requests] == [(200, True), (206, False), (200, True)]


# -- concurrency ------------------------------------------------------------------------------------

def test_two_threads_one_download(server, cache_dir):
    server.default = Fault.THROTTLE
    card = served(server)
    settings = settings_for(cache_dir)
    results: list = []
    start = threading.Barrier(2)

    def fetch():
        start.wait()
        results.append(ensure_weights(card, settings=settings, policy=FAST))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(server.requests) == 1
    assert sorted(r.source for r in results) == ["cache", "download"]
    assert results[0].path == results[1].path
    assert sha256_of(results[0].path) == card.checkpoint.sha256


def test_two_processes_one_download(server, cache_dir):
    server.default = Fault.THROTTLE
    env = {**os.environ, "LIGHTSR_CACHE_DIR": str(cache_dir), "LIGHTSR_WEIGHTS_MIRROR": server.url,
           "PYTHONPATH": str(REPO_ROOT)}
    code = ("from lightsr_cli.registry import get_card; from lightsr_cli.weights import ensure_weights; "
            f"print(ensure_weights(get_card({CARD_ID!r})).source)")
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    sources = sorted(process.communicate(timeout=60)[0].strip() for process in processes)
    assert all(process.returncode == 0 for process in processes)
    assert sources == ["cache", "mirror"]
    assert len(server.requests) == 1
    assert sha256_of(cache_dir / get_card(CARD_ID).mirror_path) == get_card(CARD_ID).checkpoint.sha256


def test_lock_held_too_long_is_a_clear_error(cache_dir):
    card = get_card(CARD_ID)
    target = weights.cache_path(card, settings_for(cache_dir))
    with weights.file_lock(target), pytest.raises(WeightsError) as caught:
        ensure_weights(card, settings=settings_for(cache_dir, mirror=str(cache_dir)),
                       policy=replace(FAST, lock_timeout=0.2))
    assert "another lightsr process" in caught.value.message


# -- the cache --------------------------------------------------------------------------------------

def test_warm_start_does_not_rehash(server, cache_dir, monkeypatch):
    card = served(server)
    ensure_weights(card, settings=settings_for(cache_dir), policy=FAST)
    monkeypatch.setattr(weights.store, "file_digest", lambda *a, **k: pytest.fail("rehashed a verified file"))
    assert ensure_weights(card, settings=settings_for(cache_dir), policy=FAST).source == "cache"
    assert cached_status(card, settings_for(cache_dir)) == "cached"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_cached_file_damaged_later_is_downloaded_again(server, cache_dir, damage):
    card = served(server)
    path = ensure_weights(card, settings=settings_for(cache_dir), policy=FAST).path
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[1000] ^= 0xFF
        path.write_bytes(bytes(data))
        stat = path.stat()  # make sure the edit shows in mtime even on coarse-clock filesystems
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    else:
        path.write_bytes(bytes(data[:1000]))
    assert cached_status(card, settings_for(cache_dir)) == "corrupt"
    reporter = RecordingReporter()
    resolved = ensure_weights(card, reporter, settings_for(cache_dir), policy=FAST)
    assert resolved.source == "download"
    assert any("does not match its sha256" in note for note in reporter.notes)
    assert sha256_of(path) == card.checkpoint.sha256
    assert len(server.requests) == 2


def test_verify_and_remove(server, cache_dir):
    card = served(server)
    settings = settings_for(cache_dir)
    assert verify_cached(card, settings) == "missing" and cached_status(card, settings) == "missing"
    path = ensure_weights(card, settings=settings, policy=FAST).path
    assert verify_cached(card, settings) == "ok"
    # same size, same mtime: only a full rehash (verify) can see it
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_cached(card, settings) == "mismatch"
    assert cached_status(card, settings) == "corrupt"  # verify dropped the remembered result
    assert remove_cached(card, settings) is True
    assert not path.exists() and not Path(str(path) + ".verified").exists()
    assert remove_cached(card, settings) is False


def test_offline_with_missing_file_names_the_file_and_touches_no_network(server, cache_dir, monkeypatch,
                                                                         no_network):
    monkeypatch.setenv("LIGHTSR_OFFLINE", "1")
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", server.url)
    card = served(server)
    with pytest.raises(WeightsError) as caught:
        ensure_weights(card, policy=FAST)
    error = caught.value
    assert error.message.startswith("plainusr-m-x2 needs PlainUSRM_Rep_x2.pth: it is not in the cache "
                                    "and LIGHTSR_OFFLINE is set (LIGHTSR_WEIGHTS_MIRROR=http")
    assert "offline mode does not use" in error.message
    assert str(cache_dir / "PlainUSR" / "PlainUSRM_Rep_x2.pth") in error.hint
    assert "LIGHTSR_WEIGHTS_MIRROR" in error.hint and "lightsr models download plainusr-m-x2" in error.hint
    assert server.requests == []
    assert not any(cache_dir.iterdir())  # nothing written either


def test_offline_with_a_folder_mirror_works(official_weights, cache_dir, monkeypatch):
    monkeypatch.setenv("LIGHTSR_OFFLINE", "1")
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    assert ensure_weights(get_card(CARD_ID), policy=FAST).source == "mirror"


# -- hashes other than sha256 -----------------------------------------------------------------------

def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("size_known", [True, False])
def test_git_blob_pinned_download(server, cache_dir, official_weights, size_known):
    card = get_card(CARD_ID)
    data = (official_weights / card.mirror_path).read_bytes()
    pinned = served(server, sha256=None, git_blob_sha1=git_blob_id(data), size=len(data) if size_known else None)
    resolved = ensure_weights(pinned, settings=settings_for(cache_dir), policy=FAST)
    assert resolved.pinned and resolved.path.read_bytes() == data
    assert file_digest(resolved.path, git_blob=True).git_blob_sha1 == git_blob_id(data)

    wrong = served(server, sha256=None, git_blob_sha1="0" * 40, size=None)
    with pytest.raises(WeightsError) as caught:
        download_file(wrong.checkpoint.url, cache_dir / "other.pth", git_blob_sha1="0" * 40, policy=FAST)
    assert "git blob id" in caught.value.message
    assert not (cache_dir / "other.pth").exists()


def test_git_blob_id_without_a_known_size_is_computed_from_the_file(tmp_path):
    data = b"weights" * 1000
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    hasher = weights.StreamHasher(None, git_blob=True)  # a response without Content-Length
    hasher.update(data)
    assert hasher.finish(rehash_from=path).git_blob_sha1 == git_blob_id(data)


def test_unpinned_download_is_kept_and_reported(server, cache_dir):
    card = served(server, sha256=None, size=None, git_blob_sha1=None)
    reporter = RecordingReporter()
    resolved = ensure_weights(card, reporter, settings_for(cache_dir), policy=FAST)
    assert (resolved.source, resolved.pinned) == ("download", False)
    assert any("no published checksum" in note for note in reporter.notes)
    assert verify_cached(card, settings_for(cache_dir)) == "unpinned"
    assert ensure_weights(card, settings=settings_for(cache_dir), policy=FAST).source == "cache"
    # the hash recorded at download time still catches a later change
    resolved.path.write_bytes(b"changed")
    assert cached_status(card, settings_for(cache_dir)) == "corrupt"


# -- embedded checkpoints ---------------------------------------------------------------------------

def test_embedded_bsrn_x4_resolves_offline_and_loads(monkeypatch, no_network):
    monkeypatch.setenv("LIGHTSR_OFFLINE", "1")
    card = get_card("bsrn-x4")
    resolved = ensure_weights(card)
    assert (resolved.source, resolved.pinned) == ("embedded", True)
    assert resolved.path.name == "bsrn-x4.safetensors"
    header, _ = weights.read_safetensors_header(resolved.path)
    assert header["__metadata__"]["upstream_sha256"] == card.checkpoint.sha256
    state_dict = load_state_dict(resolved)
    assert len(state_dict) == 346
    assert cached_status(card) == "embedded"
    assert detect_checkpoint(state_dict) == ("BSRN", {"scale": 4, **card.hyperparameters})


@pytest.mark.parametrize("card", [c for c in CARDS if c.redistributable and c.arch == "BSRN"], ids=lambda c: c.id)
def test_every_embedded_file_matches_its_official_checkpoint(card, official_weights):
    shipped = weights.embedded_path(card)
    assert shipped is not None and weights.embedded_problem(shipped, card) is None
    official = load_state_dict(official_weights / card.mirror_path)
    embedded = load_state_dict(shipped)
    assert official.keys() == embedded.keys()
    assert all(torch.equal(official[k], embedded[k]) for k in official)
    from lightsr_cli.archs import build_network

    build_network(card.arch, card.scale, card.hyperparameters, embedded)  # strict load


def test_no_unlicensed_model_is_embedded():
    folder = weights.embedded_dir()
    shipped = {p.name.removesuffix(".safetensors") for p in folder.glob("*.safetensors")}
    assert shipped == {"bsrn-x2", "bsrn-x3", "bsrn-x4", "bsrn-s-x4"}
    assert all(get_card(model_id).redistributable for model_id in shipped)


def test_damaged_embedded_file_is_skipped(server, cache_dir, tmp_path, monkeypatch):
    (tmp_path / "bsrn-x4.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    monkeypatch.setattr(weights.store, "embedded_dir", lambda: tmp_path)
    reporter = RecordingReporter()
    resolved = ensure_weights(served(server, "bsrn-x4"), reporter, settings_for(cache_dir), policy=FAST)
    assert resolved.source == "download"
    assert any("shipped with lightsr" in note for note in reporter.notes)


# -- import hygiene -------------------------------------------------------------------------------

def test_import_is_light():
    code = ("import sys, lightsr_cli.weights; "
            "print(sorted(m for m in ('torch', 'urllib.request', 'safetensors') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "[]"
