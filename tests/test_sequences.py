"""Frame sequences: numbered frames in as one video job (--sequence, 'frames/%06d.png'), a video out as frames."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lightsr_cli.errors import InputError, OutputError, OutputExistsError, UsageError
from lightsr_cli.media import images, video
from lightsr_cli.media.video.sequences import SIDECAR_NAME, SequenceReader, parse_rate, scan_sequence
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind, NamingSettings, plan_jobs
from lightsr_cli.pipeline.video import VideoSettings, run_video_job
from lightsr_cli.progress import NullReporter
from tests.test_dedup import CountingPool, write_clip
from tests.test_video_pipeline import FAST_X2, make_clip, run_cli

PNG = images.ImageEncodeSettings("png")
NAMING = NamingSettings("_x2", None)


class Notes(NullReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def write_frames(folder: Path, count: int, size=(32, 40), start=1, name="{:06d}.png", dtype=np.uint8, seed=0) -> list:
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    frames = [rng.integers(0, top + 1, (*size, 3), dtype=dtype) for _ in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        images.write_image(folder / name.format(start + index), frame, PNG)
    return frames


def run(source: Path, target: Path, *, rate=None, resume=False, overwrite=False, encode=None, reporter=None,
        pool=None):
    pool = pool or CountingPool()
    settings = VideoSettings(encode=encode or video.VideoEncodeSettings(codec="ffv1"), sequence_rate=rate,
                             resume=resume)
    result = run_video_job(pool.pool, Job(source, target, MediaKind.VIDEO), OutputSettings(overwrite=overwrite),
                           settings, reporter or NullReporter())
    return result, pool


def read_png_sequence(folder: Path, count: int) -> np.ndarray:
    return np.stack([images.read_image(folder / f"{n:06d}.png") for n in range(1, count + 1)])


# -- which inputs are sequences ----------------------------------------------------------------------

def test_a_folder_is_photos_unless_sequence_and_a_pattern_is_always_one_video(tmp_path):
    write_frames(tmp_path / "frames", 3)
    photos = plan_jobs([str(tmp_path / "frames")], None, NAMING, False, False, False).jobs
    assert [j.kind for j in photos] == [MediaKind.IMAGE] * 3
    (one,) = plan_jobs([str(tmp_path / "frames")], None, NAMING, False, False, False, sequence=True).jobs
    assert one.kind is MediaKind.VIDEO and one.target == tmp_path / "frames_x2.mp4"
    (pattern,) = plan_jobs([str(tmp_path / "frames" / "%06d.png")], tmp_path / "out.mkv", NAMING,
                           False, False, False).jobs
    assert pattern.kind is MediaKind.VIDEO and pattern.target == tmp_path / "out.mkv"


def test_sequence_errors_are_clear(tmp_path):
    write_frames(tmp_path / "gap", 5)
    (tmp_path / "gap" / "000003.png").unlink()
    with pytest.raises(InputError, match="000003.png is missing"):
        scan_sequence(tmp_path / "gap")
    write_frames(tmp_path / "sizes", 3)
    write_frames(tmp_path / "sizes", 1, size=(33, 40), start=4)
    with pytest.raises(InputError, match="000004.png is 40x33, the first frame 000001.png is 40x32"):
        scan_sequence(tmp_path / "sizes" / "%06d.png")
    write_frames(tmp_path / "stray", 3)
    (tmp_path / "stray" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not frames: notes.txt"):
        scan_sequence(tmp_path / "stray")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        scan_sequence(tmp_path / "empty")
    with pytest.raises(InputError, match="no frames match"):
        scan_sequence(tmp_path / "stray" / "%04d.png")  # the frames have six digits
    write_frames(tmp_path / "mixed", 2)
    write_frames(tmp_path / "mixed", 2, name="take_{:04d}.png")
    with pytest.raises(InputError, match="mixes frame names"):
        scan_sequence(tmp_path / "mixed")
    for bad in ("0", "-24", "abc", "24/0"):
        with pytest.raises(UsageError):
            parse_rate(bad)
    assert parse_rate("24000/1001") == Fraction(24000, 1001) and parse_rate("25") == 25


def test_a_frame_pattern_output_for_an_image_is_refused_not_written_literally(tmp_path):
    images.write_image(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8), images.ImageEncodeSettings("png"))
    with pytest.raises(UsageError, match="numbered-frames pattern, but photo.png is an image"):
        plan_jobs([str(tmp_path / "photo.png")], tmp_path / "out" / "%04d.png", NamingSettings("_x2", None),
                  False, False, False)
    assert not (tmp_path / "out").exists()


def test_duplicate_numbers_damaged_sidecars_and_alpha(tmp_path):
    write_frames(tmp_path / "dup", 2, name="{:d}.png")
    write_frames(tmp_path / "dup", 1, name="{:02d}.png")
    with pytest.raises(InputError, match="same number"):
        scan_sequence(tmp_path / "dup")
    write_frames(tmp_path / "pad", 2, name="{:03d}.png")
    write_frames(tmp_path / "pad", 1, start=3, name="{:04d}.png")
    with pytest.raises(InputError, match="padded differently"):
        scan_sequence(tmp_path / "pad")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 7
    (tmp_path / "alpha").mkdir()
    for n in (1, 2):
        images.write_image(tmp_path / "alpha" / f"{n}.png", rgba, PNG)
    (tmp_path / "alpha" / SIDECAR_NAME).write_text(json.dumps(
        {"pattern": "%01d.png", "frame_rate": 5, "rotation": "x", "colour": {"matrix": 3}, "bit_depth": 99}))
    info = scan_sequence(tmp_path / "alpha")
    assert info.alpha_dropped and info.frame_rate == Fraction(24000, 1001) and info.rotation == 0
    assert info.colour.matrix == "bt709" and info.bit_depth == 8
    (frame, _) = list(SequenceReader(info))
    assert frame.shape == (8, 8, 3) and frame[0, 0].tolist() == [0, 200, 0]
    notes = Notes()
    run(tmp_path / "alpha", tmp_path / "a.mkv", reporter=notes)
    assert any("alpha channel is not kept" in n for n in notes.notes)


def test_a_pattern_picks_its_frames_from_any_start_number(tmp_path):
    frames = write_frames(tmp_path / "shots", 4, start=1000, name="take_{:d}.png")
    write_frames(tmp_path / "shots", 2, name="other_{:03d}.png", seed=9)  # another sequence beside it
    info = scan_sequence(tmp_path / "shots" / "take_%d.png", Fraction(25))
    assert (info.frame_count, info.first_number, info.frame_rate, info.rate_from) == (4, 1000, 25, "--fps")
    assert all(np.array_equal(a, b) for a, b in zip(SequenceReader(info), frames, strict=True))


# -- frames in ---------------------------------------------------------------------------------------

def test_a_frame_folder_becomes_a_video_of_the_right_rate_and_count(tmp_path):
    frames = write_frames(tmp_path / "frames", 10)
    notes = Notes()
    result, pool = run(tmp_path / "frames", tmp_path / "out.mkv", rate=Fraction(25), reporter=notes)
    made = video.probe_video(tmp_path / "out.mkv")
    assert (made.frame_count, made.frame_rate, made.width, made.height) == (10, Fraction(25), 80, 64)
    assert result.frames == pool.frames_through_network == 10
    assert not notes.notes  # a rate was given
    # Without --fps or a sidecar: 24000/1001, and the run says so.
    run(tmp_path / "frames" / "%06d.png", tmp_path / "default.mkv", reporter=notes)
    assert video.probe_video(tmp_path / "default.mkv").frame_rate == Fraction(24000, 1001)
    assert any("24000/1001" in n for n in notes.notes)
    assert len(frames) == 10


def test_cli_turns_a_folder_into_a_video_with_sequence_and_fps(tmp_path, official_weights, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    write_frames(tmp_path / "frames", 6, size=(24, 32))
    code, out, err = run_cli("upscale", str(tmp_path / "frames"), "--sequence", "--fps", "30000/1001", "-s", "2",
                             "--model", FAST_X2, "--device", "cpu", "--json")
    assert code == 0, err
    made = video.probe_video(tmp_path / "frames_x2.mp4")
    assert (made.frame_count, made.frame_rate, made.width) == (6, Fraction(30000, 1001), 64)
    assert json.loads(out)["outputs"] == [str(tmp_path / "frames_x2.mp4")]
    code, _, err = run_cli("upscale", str(tmp_path / "frames"), "--sequence", "--fps", "0", "-s", "2")
    assert code == 2 and "--fps 0" in err


# -- frames out --------------------------------------------------------------------------------------

def test_a_video_becomes_frames_equal_to_the_lossless_video_output(tmp_path):
    source = make_clip(tmp_path / "clip.mkv", size="40x32", rate="30000/1001", seconds=0.5)
    notes = Notes()
    run(source, tmp_path / "out" / "%06d.png", reporter=notes)
    run(source, tmp_path / "lossless.mkv", encode=video.VideoEncodeSettings(codec="ffv1", pix_fmt="gbrp"))
    from_video = np.stack(list(video.FrameReader(tmp_path / "lossless.mkv")))
    pngs = read_png_sequence(tmp_path / "out", len(from_video))
    assert len(from_video) == 15 and pngs.dtype == np.uint8 and np.array_equal(pngs, from_video)
    assert not (tmp_path / "out" / "000016.png").exists()
    assert any("audio, subtitle stream(s) are not written" in n for n in notes.notes)
    sidecar = json.loads((tmp_path / "out" / SIDECAR_NAME).read_text())
    assert sidecar["frame_rate"] == "30000/1001" and sidecar["complete"] and sidecar["pattern"] == "%06d.png"
    # Round trip: frames -> video keeps the source's exact rate through the sidecar.
    run(tmp_path / "out" / "%06d.png", tmp_path / "back.mkv")
    back = video.probe_video(tmp_path / "back.mkv")
    assert (back.frame_rate, back.frame_count, back.width) == (Fraction(30000, 1001), 15, 160)


def test_a_ten_bit_video_becomes_sixteen_bit_pngs(tmp_path):
    source = make_clip(tmp_path / "deep.mkv", size="40x32", seconds=0.25, pix_fmt="yuv420p10le",
                       audio=False, subtitles=False)
    run(source, tmp_path / "out" / "%06d.png")
    run(source, tmp_path / "lossless.mkv", encode=video.VideoEncodeSettings(codec="ffv1", pix_fmt="gbrp16le"))
    from_video = np.stack(list(video.FrameReader(tmp_path / "lossless.mkv")))
    pngs = read_png_sequence(tmp_path / "out", len(from_video))
    assert pngs.dtype == np.uint16 and np.array_equal(pngs, from_video)
    assert json.loads((tmp_path / "out" / SIDECAR_NAME).read_text())["bit_depth"] == 10


def test_existing_frames_are_kept_and_resume_carries_on_after_the_last_complete_one(tmp_path):
    frames = [np.full((16, 24, 3), 10 * i, np.uint8) for i in range(12)]
    source = write_clip(tmp_path / "clip.mkv", frames)
    target = tmp_path / "out" / "f_%04d.png"
    run(source, target)
    complete = np.stack([images.read_image(tmp_path / "out" / f"f_{n:04d}.png") for n in range(1, 13)])
    with pytest.raises(OutputExistsError, match="f_0001.png"):
        run(source, target)
    for n in range(8, 13):  # an interrupted run: frames 8.. never written
        (tmp_path / "out" / f"f_{n:04d}.png").unlink()
    first = (tmp_path / "out" / "f_0001.png").stat().st_mtime_ns
    result, pool = run(source, target, resume=True)
    assert pool.frames_through_network == 5 and result.resumed_from_frame == 7
    resumed = np.stack([images.read_image(tmp_path / "out" / f"f_{n:04d}.png") for n in range(1, 13)])
    assert np.array_equal(resumed, complete)
    assert (tmp_path / "out" / "f_0001.png").stat().st_mtime_ns == first  # kept, not rewritten
    result, pool = run(source, target, overwrite=True)
    assert pool.frames_through_network == 12


def test_frames_are_never_written_over_the_input_frames(tmp_path):
    frames = write_frames(tmp_path / "frames", 3)
    with pytest.raises(OutputError, match="would replace input frames"):
        run(tmp_path / "frames", tmp_path / "frames" / "%06d.png", overwrite=True)
    assert np.array_equal(read_png_sequence(tmp_path / "frames", 3), np.stack(frames))


def test_a_refused_resume_names_what_changed_and_gives_back_the_old_precision():
    from lightsr_cli.pipeline.sequences import resume_refused

    started = {"model": "bsrn-x4", "precision": "fp32", "tile": 128, "encode": {"crf": 18}}
    error = resume_refused(".clip.mkv.lightsr-parts", started, {**started, "precision": "fp16", "tile": None},
                           "run without {--resume} to start over")
    message, hint = error.for_cli()
    assert message.endswith("it was started with other settings: precision fp32 (now fp16)")
    assert "--precision fp32" in hint and "start over" in hint
    error = resume_refused("x", started, {**started, "model": "bsrn-x2", "encode": {"crf": 20}}, "start over")
    message, hint = error.for_cli()
    assert message.endswith("encode, model bsrn-x4 (now bsrn-x2)") and "--precision" not in hint
    # a cluster whose CPUs resolved auto differently recorded both: no single --precision gives that back
    mixed = {**started, "precision": "bf16+fp32"}
    message, hint = resume_refused("x", mixed, {**started, "tile": None}, "start over").for_cli()
    assert message.endswith("precision bf16+fp32 (now fp32)") and "--precision" not in hint


def test_a_damaged_or_missing_plan_is_named_as_such_not_as_changed_settings():
    from lightsr_cli.pipeline.sequences import resumable, resume_refused

    plan = {"model": "bsrn-x4", "precision": "fp16", "tile": None}
    assert resumable({**plan, "tile": 256}, plan) and not resumable({"model": "bsrn-x4"}, plan)
    for damaged in (None, [1], "plan", {"model": "bsrn-x4", "precision": "fp16"}):  # the last: no tile recorded
        assert not resumable(damaged, plan)
        message, hint = resume_refused("x", damaged, plan, "start over").for_cli()
        assert message == "cannot resume x: the plan the earlier run recorded is missing or damaged"
        assert hint == "start over"


def test_deinterlace_on_a_frame_sequence_is_said_not_silently_ignored(tmp_path):
    """Image files record no field order: --deinterlace reads them as they are, and says so once; the frames
    come out exactly as without it."""
    frames = write_frames(tmp_path / "frames", 3)
    outputs = {}
    for deinterlace in (False, True):
        reporter, pool = Notes(), CountingPool()
        target = tmp_path / f"out{int(deinterlace)}" / "%06d.png"
        settings = VideoSettings(encode=video.VideoEncodeSettings(codec="ffv1"), deinterlace=deinterlace)
        run_video_job(pool.pool, Job(tmp_path / "frames" / "%06d.png", target, MediaKind.VIDEO), OutputSettings(),
                      settings, reporter)
        said = [note for note in reporter.notes if "--deinterlace" in note]
        assert len(said) == int(deinterlace)
        outputs[deinterlace] = read_png_sequence(target.parent, len(frames))
    assert said[0].startswith(f"note: --deinterlace applies to video files; the frames of {tmp_path / 'frames'}")
    assert np.array_equal(outputs[False], outputs[True])
