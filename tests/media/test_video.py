"""The ffmpeg video layer, against clips generated at test time with the bundled ffmpeg."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lightsr_cli.errors import (
    CorruptVideoError,
    EmptyVideoError,
    LightsrError,
    NoVideoStreamError,
    StreamCopyError,
    VideoEncodeError,
    VideoNotFoundError,
)
from lightsr_cli.media.video import (
    FrameReader,
    FrameWriter,
    VideoEncodeSettings,
    concat_segments,
    count_frames,
    default_pix_fmt,
    ffmpeg_exe,
    is_video_path,
    pix_fmt_bit_depth,
    probe_video,
    segment_frame_range,
)

NTSC_FILM = Fraction(24000, 1001)
FRAMES = 48  # 2 s at 24000/1001 fps
FAST_X264 = VideoEncodeSettings(codec="libx264", preset="ultrafast")
SRT = "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,000 --> 00:00:01,900\nWorld\n"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args], check=True)


def lavfi_testsrc(size: str = "318x178", seconds: int = 2) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=24000/1001:duration={seconds}"]


def sine() -> list[str]:
    return ["-f", "lavfi", "-i", "sine=frequency=440:duration=2"]


def truncated_copy(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def frame_times(path: Path) -> list[float]:
    """Presentation times of the decoded video frames, as ffmpeg's showinfo filter reports them."""
    log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-vf", "showinfo",
                          "-f", "null", "-"], capture_output=True, text=True).stderr
    return [float(t) for t in re.findall(r"pts_time:(\S+)", log)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    (d / "subs.srt").write_text(SRT)
    tag_bt709 = ["-vf", "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv,format=yuv420p"]
    clip = {
        "mkv": d / "clip.mkv", "mp4": d / "clip.mp4", "rotated": d / "rotated.mp4", "10bit": d / "deep.mkv",
        "audio": d / "audio.m4a", "empty": d / "empty.mkv", "faststart": d / "faststart.mp4",
    }
    # 2 s testsrc at 24000/1001 in a size that is no multiple of 16, with AAC audio and SRT subtitles.
    ffmpeg(*lavfi_testsrc(), *sine(), "-i", str(d / "subs.srt"), "-map", "0", "-map", "1", "-map", "2", *tag_bt709,
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-c:s", "srt", str(clip["mkv"]))
    ffmpeg(*lavfi_testsrc(), *sine(), "-i", str(d / "subs.srt"), "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "mov_text",
           str(clip["mp4"]))
    ffmpeg("-display_rotation", "90", "-i", str(clip["mp4"]), "-map", "0:v", "-c", "copy", str(clip["rotated"]))
    ffmpeg(*lavfi_testsrc(seconds=1), "-c:v", "ffv1", "-pix_fmt", "yuv420p10le", str(clip["10bit"]))
    ffmpeg(*sine(), "-c:a", "aac", str(clip["audio"]))
    # A video stream with no frames: 1 s of video, 3 s of audio, cut to the last second.
    ffmpeg(*lavfi_testsrc(size="64x64", seconds=1), "-f", "lavfi", "-i", "sine=duration=3", "-map", "0", "-map", "1",
           "-c:v", "libx264", "-c:a", "aac", "-t", "3", "-ss", "2", str(clip["empty"]))
    ffmpeg("-i", str(clip["mp4"]), "-map", "0", "-c", "copy", "-movflags", "+faststart", str(clip["faststart"]))
    clip["truncated_mkv"] = truncated_copy(clip["mkv"], d / "truncated.mkv")
    clip["truncated_mp4"] = truncated_copy(clip["faststart"], d / "truncated.mp4")
    # Stream-copied from a non-keyframe: an mp4 edit list that decodes then drops the leading frames.
    clip["trimmed"] = d / "trimmed.mp4"
    ffmpeg("-ss", "0.3", "-i", str(clip["mp4"]), "-map", "0:v", "-c", "copy", "-t", "1", str(clip["trimmed"]))
    clip["text"] = d / "notes.mp4"
    clip["text"].write_text("not a video\n" * 100)
    return clip


@pytest.fixture(scope="module")
def mkv_frames(clips) -> list[np.ndarray]:
    with FrameReader(clips["mkv"]) as reader:
        return list(reader)


def upscale2x(frame: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)


# ------------------------------------------------------------------------------------------ helpers


def test_is_video_path():
    assert all(is_video_path(f"a.{ext}") for ext in ("mp4", "MKV", "mov", "webm", "avi", "m4v"))
    assert not any(is_video_path(name) for name in ("a.png", "a.jpg", "mp4", "a.mp4.txt"))


def test_pix_fmt_bit_depths_and_bundled_encoders_keep_10_bits():
    assert [pix_fmt_bit_depth(f) for f in ("yuv420p", "yuv420p10le", "p010le", "yuv444p12le", "rgb48le")] == [
        8, 10, 10, 12, 16]
    assert default_pix_fmt("libx264", 8) == "yuv420p"
    for codec in ("libx264", "libx265", "libvpx-vp9", "ffv1"):
        assert default_pix_fmt(codec, 10) == "yuv420p10le"


def test_segment_frame_range():
    assert segment_frame_range(0, 20, 48) == range(0, 20)
    assert segment_frame_range(2, 20, 48) == range(40, 48)


# ------------------------------------------------------------------------------------------ probe


def test_probe_mkv_with_audio_and_srt(clips):
    info = probe_video(clips["mkv"])
    assert (info.width, info.height) == (318, 178)
    assert info.frame_rate == NTSC_FILM and isinstance(info.frame_rate, Fraction)
    assert info.frame_count == FRAMES
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert info.rotation == 0
    assert (info.colour.matrix, info.colour.range, info.colour.primaries, info.colour.transfer) == (
        "bt709", "tv", "bt709", "bt709")
    assert [(s.kind, s.codec) for s in info.other_streams] == [("audio", "aac"), ("subtitle", "subrip")]
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.video_duration == pytest.approx(48 * 1001 / 24000)


def test_probe_mp4_with_mov_text(clips):
    info = probe_video(clips["mp4"])
    assert (info.frame_rate, info.frame_count) == (NTSC_FILM, FRAMES)
    assert info.colour.matrix is None  # untagged source stays untagged
    streams = [(s.index, s.kind, s.codec) for s in info.other_streams]
    assert streams == [(1, "audio", "aac"), (2, "subtitle", "mov_text")]


def test_probe_rotation_keeps_coded_size(clips):
    info = probe_video(clips["rotated"])
    assert info.rotation == 90
    assert (info.width, info.height) == (318, 178)


def test_probe_10bit(clips):
    info = probe_video(clips["10bit"])
    assert (info.pix_fmt, info.bit_depth, info.codec) == ("yuv420p10le", 10, "ffv1")
    assert info.frame_count == 24


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("missing", VideoNotFoundError),
        ("audio", NoVideoStreamError),
        ("truncated_mkv", CorruptVideoError),
        ("truncated_mp4", CorruptVideoError),
        ("text", CorruptVideoError),
        ("empty", EmptyVideoError),
    ],
)
def test_probe_errors_are_clear(clips, tmp_path, name, error):
    path = clips.get(name, tmp_path / "missing.mp4")
    with pytest.raises(error) as caught:
        probe_video(path)
    assert isinstance(caught.value, LightsrError)
    assert path.name in caught.value.message and caught.value.hint


def test_count_frames(clips):
    assert count_frames(clips["mkv"]) == FRAMES
    assert count_frames(clips["mp4"], decode=True) == FRAMES


def test_frame_count_excludes_frames_an_edit_list_discards(clips):
    info = probe_video(clips["trimmed"])
    with FrameReader(info) as reader:
        yielded = sum(1 for _ in reader)
    assert info.frame_count == yielded == count_frames(clips["trimmed"], decode=True)
    assert 20 <= yielded < FRAMES


# ------------------------------------------------------------------------------------------ read


def test_read_all_frames(clips, mkv_frames):
    assert len(mkv_frames) == FRAMES
    assert all(f.shape == (178, 318, 3) and f.dtype == np.uint8 for f in mkv_frames)
    assert not np.array_equal(mkv_frames[0], mkv_frames[-1])  # testsrc moves: real, distinct frames


def test_read_10bit_as_uint16_without_squashing(clips):
    with FrameReader(clips["10bit"]) as reader:
        frames = list(reader)
    assert len(frames) == 24 and frames[0].dtype == np.uint16 and frames[0].shape == (178, 318, 3)
    values = np.concatenate([f.ravel() for f in frames[:4]])
    assert values.max() > 255
    # An 8-bit detour would leave only multiples of 257 (8 -> 16 bit expansion); 10 bits do not.
    assert np.count_nonzero(values % 257) > values.size // 2


def test_read_rotated_yields_coded_pixels(clips):
    with FrameReader(clips["rotated"]) as reader:
        first = next(reader)
    assert first.shape == (178, 318, 3)


@pytest.mark.parametrize("start", [1, 17, 47])
def test_read_from_start_frame_is_exact(clips, mkv_frames, start):
    with FrameReader(clips["mkv"], start_frame=start) as reader:
        frames = list(reader)
    assert len(frames) == FRAMES - start
    assert all(np.array_equal(a, b) for a, b in zip(frames, mkv_frames[start:], strict=False))


def test_read_detects_a_stream_that_ends_early(clips):
    # Probe facts of the whole file, data of the truncated one: decoding must notice the shortfall.
    info = dataclasses.replace(probe_video(clips["mkv"]), path=clips["truncated_mkv"])
    got = []
    with pytest.raises(CorruptVideoError, match="truncated"), FrameReader(info) as reader:
        got.extend(reader)
    assert 0 < len(got) < FRAMES


def test_early_close_is_quiet(clips):
    reader = FrameReader(clips["mkv"])
    next(reader)
    reader.close()
    assert list(reader) == []


# ------------------------------------------------------------------------------------------ write


def write_all(path: Path, frames, source, options=FAST_X264, **kwargs) -> None:
    with FrameWriter(path, source.frame_rate, options=options, source=source, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)


def test_write_2x_mp4_keeps_rate_count_audio_and_subtitles(clips, mkv_frames, tmp_path):
    source = probe_video(clips["mkv"])
    out = tmp_path / "up.mp4"
    upscaled = [upscale2x(f) for f in mkv_frames]
    write_all(out, upscaled, source)
    info = probe_video(out)
    assert (info.width, info.height) == (636, 356)
    assert (info.frame_count, info.frame_rate) == (FRAMES, NTSC_FILM)
    # mp4 holds SRT only as mov_text: converted; the AAC audio is copied.
    assert [(s.kind, s.codec) for s in info.other_streams] == [("audio", "aac"), ("subtitle", "mov_text")]
    assert abs(info.duration - source.duration) <= 1 / source.frame_rate
    assert (info.colour.matrix, info.colour.primaries, info.colour.transfer) == ("bt709", "bt709", "bt709")
    frame_step = float(1 / NTSC_FILM)
    times = frame_times(out)
    assert len(times) == FRAMES and times[-1] == pytest.approx(47 * frame_step, abs=1e-4)
    with FrameReader(info) as reader:
        back = list(reader)
    # Lossy but close: no colour-matrix or range mismatch (that would shift values by ~10+).
    error = np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(back, upscaled, strict=False)])
    assert error < 4


def test_write_mkv_copies_srt_and_carries_rotation(clips, mkv_frames, tmp_path):
    source = dataclasses.replace(probe_video(clips["mkv"]), rotation=270)
    out = tmp_path / "up.mkv"
    write_all(out, mkv_frames[:10], source)
    info = probe_video(out)
    assert info.rotation == 270 and (info.width, info.height) == (318, 178)
    assert [(s.kind, s.codec) for s in info.other_streams] == [("audio", "aac"), ("subtitle", "subrip")]


def test_write_rotated_source(clips, tmp_path):
    source = probe_video(clips["rotated"])
    with FrameReader(source) as reader:
        frames = list(reader)
    out = tmp_path / "rotated_up.mp4"
    write_all(out, [upscale2x(f) for f in frames], source)
    info = probe_video(out)
    assert (info.rotation, info.width, info.height, info.frame_count) == (90, 636, 356, FRAMES)


def test_write_10bit_keeps_10_bits(clips, tmp_path):
    source = probe_video(clips["10bit"])
    with FrameReader(source) as reader:
        frames = list(reader)[:6]
    out = tmp_path / "deep.mkv"
    write_all(out, frames, source)  # libx264: the bundled build encodes 10-bit
    info = probe_video(out)
    assert (info.codec, info.pix_fmt, info.bit_depth, info.frame_count) == ("h264", "yuv420p10le", 10, 6)
    with FrameReader(info) as reader:
        back = list(reader)
    assert back[0].dtype == np.uint16
    assert np.mean([np.abs(a.astype(np.int32) - b).mean() for a, b in zip(back, frames, strict=False)]) < 4 * 257


def test_exception_inside_writer_removes_partial_file(clips, mkv_frames, tmp_path):
    out = tmp_path / "partial.mkv"
    with pytest.raises(RuntimeError), FrameWriter(out, NTSC_FILM, options=FAST_X264) as writer:
        for frame in mkv_frames[:5]:
            writer.write(frame)
        assert writer._proc is not None and writer._proc.poll() is None
        raise RuntimeError("model crashed")
    assert not out.exists()
    assert writer._proc.poll() is not None  # ffmpeg is gone


def test_ffmpeg_failure_raises_and_removes_partial_file(mkv_frames, tmp_path):
    out = tmp_path / "bad.mp4"
    bad = VideoEncodeSettings(codec="libx264", extra_args=("-profile:v", "no-such-profile"))
    with pytest.raises(VideoEncodeError, match="profile"), FrameWriter(out, NTSC_FILM, options=bad) as writer:
        for frame in mkv_frames:
            writer.write(frame)
    assert not out.exists()


def test_encoder_option_errors_name_the_setting_per_caller(mkv_frames, tmp_path):
    cases = [(VideoEncodeSettings(codec="ffv1", crf=10), "--crf", "crf"),
             (VideoEncodeSettings(codec="libvpx-vp9", preset="fast"), "--video-preset", "video_preset")]
    for options, flag, name in cases:
        with pytest.raises(LightsrError) as caught, FrameWriter(tmp_path / "up.mkv", NTSC_FILM, options=options) as w:
            w.write(mkv_frames[0])
        assert caught.value.for_cli()[0].startswith(f"{flag} does not apply")
        assert caught.value.message.startswith(f"{name} does not apply")


def test_container_that_cannot_hold_the_audio(clips, mkv_frames, tmp_path):
    out = tmp_path / "up.webm"  # webm refuses AAC
    options = VideoEncodeSettings(codec="libvpx-vp9", extra_args=("-deadline", "realtime", "-cpu-used", "8"))
    with pytest.raises(StreamCopyError) as caught:
        write_all(out, mkv_frames[:4], probe_video(clips["mkv"]), options=options)
    assert ".mkv" in caught.value.hint
    assert not out.exists()


def test_avi_cannot_hold_subtitles_fails_before_encoding(clips, tmp_path):
    with pytest.raises(StreamCopyError):
        FrameWriter(tmp_path / "up.avi", NTSC_FILM, source=probe_video(clips["mkv"]))


def test_odd_size_with_420_is_a_clear_error(tmp_path):
    with pytest.raises(VideoEncodeError, match="even"), FrameWriter(tmp_path / "odd.mp4", NTSC_FILM) as writer:
        writer.write(np.zeros((101, 100, 3), np.uint8))
    assert not (tmp_path / "odd.mp4").exists()


# ------------------------------------------------------------------------------------------ resume segments


def encode_in_segments(source, out: Path, options: VideoEncodeSettings, per_segment: int, tmp_path: Path) -> None:
    """What --resume does: segment k holds frames [k*N, (k+1)*N), each read from its start index."""
    segments = []
    for k in range(-(-source.frame_count // per_segment)):
        frames = segment_frame_range(k, per_segment, source.frame_count)
        segment = tmp_path / f"segment{k:04d}{out.suffix}"
        with FrameReader(source, start_frame=frames.start) as reader, FrameWriter(
            segment, source.frame_rate, options=options, source=source, copy_streams=False
        ) as writer:
            for _, frame in zip(frames, reader, strict=False):
                writer.write(frame)
        assert count_frames(segment) == len(frames)
        segments.append(segment)
    concat_segments(segments, source, out)


def test_segments_join_frame_exact_ffv1(clips, tmp_path):
    source = probe_video(clips["mkv"])
    lossless = VideoEncodeSettings(codec="ffv1")
    encode_in_segments(source, tmp_path / "joined.mkv", lossless, per_segment=20, tmp_path=tmp_path)
    write_all(tmp_path / "oneshot.mkv", FrameReader(source), source, options=lossless)
    joined, oneshot = probe_video(tmp_path / "joined.mkv"), probe_video(tmp_path / "oneshot.mkv")
    assert (joined.frame_count, joined.frame_rate) == (FRAMES, NTSC_FILM)
    assert [s.codec for s in joined.other_streams] == ["aac", "subrip"]
    with FrameReader(joined) as a, FrameReader(oneshot) as b:
        pairs = list(zip(a, b, strict=True))
    assert len(pairs) == FRAMES and all(np.array_equal(x, y) for x, y in pairs)
    # Matroska counts in milliseconds; per-segment rounding may differ from one-shot by 1 ms at most.
    assert np.allclose(frame_times(tmp_path / "joined.mkv"), frame_times(tmp_path / "oneshot.mkv"), atol=0.0011)


def test_segments_join_x264_mp4_with_exact_timestamps(clips, tmp_path):
    source = probe_video(clips["rotated"])
    out = tmp_path / "joined.mp4"
    encode_in_segments(source, out, FAST_X264, per_segment=20, tmp_path=tmp_path)
    joined = probe_video(out)
    assert (joined.frame_count, joined.frame_rate, joined.rotation) == (FRAMES, NTSC_FILM, 90)
    assert count_frames(out, decode=True) == FRAMES
    expected = [float(i / NTSC_FILM) for i in range(FRAMES)]
    assert np.allclose(frame_times(out), expected, atol=1e-4)
