"""Issue 18 (and 11, item 4): every frame keeps its time; HDR, SAR and colour kept; encoders chosen clearly.

Clips are made here with the bundled ffmpeg: a variable-frame-rate one whose frames sit at 0, 0.1, 0.2,
0.3, 0.4, 0.9, 1.3 and 1.8 s with 1.9 s of audio (a phone recording in miniature), a constant-rate
24000/1001 one, and an HDR10 one with mastering display and content light level side data.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lightsr_cli.archs.spec import ArchSpec
from lightsr_cli.cli import app
from lightsr_cli.engine import Engine, EnginePool
from lightsr_cli.errors import LightsrError, VideoEncodeError, VideoError
from lightsr_cli.media import video
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind
from lightsr_cli.pipeline.video import VideoSettings, run_video_job
from tests.test_hostile_runs import Recorder, cli

REPO = Path(__file__).resolve().parent.parent
PHONE_TIMES = [0, 0.1, 0.2, 0.3, 0.4, 0.9, 1.3, 1.8]
FAST = video.VideoEncodeSettings(codec="libx264", preset="ultrafast")


@pytest.fixture
def mirror(official_weights, monkeypatch):
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(official_weights))
    return official_weights


class Nearest(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def toy_pool() -> EnginePool:
    spec = ArchSpec(name="Toy", build=lambda scale: Nearest(), input_range=1.0, min_size=1, size_multiple=1,
                    tile_overlap=4, tile_multiple=1, fp16_safe=True, bf16_safe=True)
    return EnginePool([Engine(Nearest(), spec, 2, device="cpu")], model_id="toy")


def ffmpeg(*args: str) -> None:
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def phone_clip(path: Path, times=PHONE_TIMES, size="64x48", audio_codec=None, extra=()) -> Path:
    """A clip whose frames are shown at ``times`` (multiples of 0.1 s) with audio up to last + 0.1 s."""
    picks = "+".join(f"eq(n,{round(t * 10)})" for t in times)
    seconds = times[-1] + 0.1
    codec = ["-c:v", "libvpx-vp9", "-c:a", "libopus"] if path.suffix == ".webm" else ["-c:v", "libx264", "-c:a", "aac"]
    if audio_codec:
        codec[-1] = audio_codec
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=10:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-vf", f"select='{picks}'{''.join(extra)}", "-fps_mode", "vfr", *codec, str(path))
    return path


def frame_seconds(info: video.VideoInfo) -> list[float]:
    assert info.timeline is not None
    return [float(t * info.timeline.time_base) for t in info.timeline.pts]


def upscale(source: Path, target: Path, encode=FAST, segment_seconds=10.0) -> Recorder:
    reporter = Recorder()
    run_video_job(toy_pool(), Job(source, target, MediaKind.VIDEO), OutputSettings(),
                  VideoSettings(encode, segment_seconds), reporter)
    return reporter


def audio_seconds(path: Path) -> float:
    """Decoded audio length: what a player plays beside the video."""
    result = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a", "-f", "null",
                             "-progress", "pipe:1", "-"], capture_output=True, check=True, text=True)
    return int(re.findall(r"out_time_us=(\d+)", result.stdout)[-1]) / 1e6


def assert_same_timing(source: Path, result: Path, tolerance: float) -> None:
    original, upscaled = video.probe_video(source), video.probe_video(result)
    assert frame_seconds(original) == pytest.approx(PHONE_TIMES, abs=0.001)
    assert upscaled.frame_count == original.frame_count == len(PHONE_TIMES)
    assert frame_seconds(upscaled) == pytest.approx(frame_seconds(original), abs=tolerance)
    assert abs(upscaled.video_duration - original.video_duration) <= 0.1 + tolerance  # within one frame
    assert upscaled.duration == pytest.approx(original.duration, abs=0.1)
    assert audio_seconds(result) == pytest.approx(audio_seconds(source), abs=0.001)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm"])
def test_variable_frame_rate_keeps_every_frame_time(tmp_path, suffix):
    """Issue 11 item 4: these frames came out as a 0.8 s constant-rate video beside 1.9 s of audio."""
    source = phone_clip(tmp_path / f"phone{suffix}")
    assert not video.probe_video(source).constant_rate
    target = tmp_path / f"phone_x2{suffix}"
    encode = video.VideoEncodeSettings(codec="libvpx-vp9") if suffix == ".webm" else FAST
    upscale(source, target, encode, segment_seconds=0.3)  # several segments, joined
    assert_same_timing(source, target, tolerance=0.001 if suffix in (".mkv", ".webm") else 1e-6)


def test_variable_frame_rate_survives_interrupt_and_resume(tmp_path, mirror):
    times = [round(0.1 * n, 1) for n in range(60) if n % 7 not in (2, 3, 5)]  # 35 frames, gaps of 0.1-0.3 s
    source = phone_clip(tmp_path / "long.mkv", times=times, size="48x32")
    target = tmp_path / "long_x2.mkv"
    parts = tmp_path / ".long_x2.mkv.lightsr-parts"
    common = ["upscale", str(source), "-s", "2", "--model", "plainusr-u-x2", "--device", "cpu", "-q",
              "--segment-seconds", "0.4", "--codec", "ffv1", "-o", str(target)]
    env = {**os.environ, "LIGHTSR_WEIGHTS_MIRROR": str(mirror), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lightsr_cli", *common], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (parts / "segment_00001.mkv").exists():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "no segment finished in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert not target.exists()
    finished = [p for p in parts.glob("segment_*.mkv") if "partial" not in p.name]
    total_segments = -(-len(times) // 4)  # --segment-seconds 0.4 at the nominal 10 fps: 4 frames each
    assert 2 <= len(finished) < total_segments

    result = CliRunner().invoke(app, [*common, "--resume"])
    assert result.exit_code == 0, result.stderr
    assert not parts.exists()
    original, upscaled = video.probe_video(source), video.probe_video(target)
    assert frame_seconds(original) == pytest.approx(times, abs=0.001)
    assert frame_seconds(upscaled) == pytest.approx(times, abs=0.001)
    assert audio_seconds(target) == pytest.approx(audio_seconds(source), abs=0.001)


def test_start_offset_is_kept(tmp_path):
    """Video that starts 0.5 s after the audio (an edit list in mp4) still starts 0.5 s after it."""
    plain = phone_clip(tmp_path / "plain.mp4")
    source = tmp_path / "late.mp4"
    ffmpeg("-itsoffset", "0.5", "-i", str(plain), "-i", str(plain), "-map", "0:v", "-map", "1:a", "-c", "copy",
           str(source))
    info = video.probe_video(source)
    assert info.timeline is not None and float(info.timeline.offset) == pytest.approx(0.5, abs=0.001)
    target = tmp_path / "late_x2.mp4"
    upscale(source, target, segment_seconds=0.3)
    result = video.probe_video(target)
    assert result.timeline is not None and float(result.timeline.offset) == pytest.approx(0.5, abs=0.001)
    assert frame_seconds(result) == pytest.approx(frame_seconds(info), abs=1e-6)


@pytest.mark.parametrize(("timecode", "rate", "target_name", "segment_seconds"),
                         [("01:02:03:04", "25", "clip_x2.mov", 10.0), ("10:00:00;02", "30000/1001", "clip_x2.mp4", 0.1),
                          ("23:59:59:24", "25", "clip_x2.mkv", 10.0)])
def test_start_timecode_is_kept(tmp_path, timecode, rate, target_name, segment_seconds):
    """A camera's or phone's timecode track (tmcd, which editors conform by) survives, segments joined or not."""
    source = tmp_path / "clip.mov"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate={rate}:duration=0.4", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=0.4", "-c:v", "libx264", "-c:a", "aac", "-timecode", timecode, str(source))
    assert video.probe_video(source).timecode == timecode
    assert any(s.kind == "data" for s in video.probe_video(source).other_streams)  # the tmcd track itself
    target = tmp_path / target_name
    upscale(source, target, segment_seconds=segment_seconds)
    report = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-i", str(target)], capture_output=True, text=True)
    assert re.search(rf"timecode\s*:\s*{re.escape(timecode)}\s*$", report.stderr, re.IGNORECASE | re.MULTILINE)
    if target.suffix != ".mkv":  # mov/mp4: a timecode track that probes back; matroska: a TIMECODE tag
        assert "tmcd" in report.stderr and video.probe_video(target).timecode == timecode


def test_a_camera_422_source_says_its_colour_resolution_is_halved_and_how_to_keep_it(tmp_path):
    source = tmp_path / "camera.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2", "-c:v", "prores_ks", "-profile:v", "2",
           "-pix_fmt", "yuv422p10le", str(source))
    notes = upscale(source, tmp_path / "camera_x2.mov").notes
    assert video.probe_video(tmp_path / "camera_x2.mov").pix_fmt == "yuv420p10le"
    assert [n for n in notes if "4:2:2" in n] == [
        "note: camera.mov is 4:2:2 (yuv422p10le); written 4:2:0 (yuv420p10le), which every player shows; "
        "--pix-fmt yuv422p10le keeps it"]
    kept = dataclasses.replace(FAST, pix_fmt="yuv422p10le")
    notes = upscale(source, tmp_path / "camera_422.mov", encode=kept).notes
    assert video.probe_video(tmp_path / "camera_422.mov").pix_fmt == "yuv422p10le"
    assert not [n for n in notes if "4:2:2" in n]


def test_an_interlaced_source_is_named_and_a_progressive_one_is_not(tmp_path):
    interlaced, progressive = tmp_path / "tv.mkv", tmp_path / "web.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2", "-vf", "setfield=tff",
           "-flags", "+ilme+ildct", "-c:v", "libx264", "-x264opts", "tff=1", "-pix_fmt", "yuv420p", str(interlaced))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(progressive))
    assert video.probe_video(interlaced).interlaced and not video.probe_video(progressive).interlaced
    warned = [n for n in upscale(interlaced, tmp_path / "tv_x2.mkv").notes if "interlaced" in n]
    assert len(warned) == 1 and warned[0].startswith("warning: tv.mkv is interlaced (top") and "--deinterlace" in warned[0]
    assert not [n for n in upscale(progressive, tmp_path / "web_x2.mkv").notes if "interlaced" in n]


@pytest.mark.parametrize(("name", "codecs"), [("camcorder.mts", ("libx264", "ac3", "-f", "mpegts", "-mpegts_m2ts_mode", "1")),
                                            ("broadcast.ts", ("libx264", "mp2")), ("dvd.mpg", ("mpeg2video", "mp2")),
                                            ("old.wmv", ("wmv2", "wmav2")), ("web.flv", ("libx264", "aac"))])
def test_containers_read_but_not_written_are_upscaled_into_mkv(tmp_path, mirror, name, codecs):
    """Camcorder AVCHD, broadcast and DVD recordings, old web formats: read, written as .mkv, audio copied as is."""
    video_codec, audio_codec, *container = codecs
    source = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.6", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=0.6", "-c:v", video_codec, "-c:a", audio_codec, *container, str(source))
    code, _, err = cli("upscale", str(source), "--model", "plainusr-u-x2", "--device", "cpu", "-q")
    assert code == 0, err
    target = source.with_name(source.stem + "_x2.mkv")
    original, result = video.probe_video(source), video.probe_video(target)
    assert (result.width, result.height) == (128, 96) and result.frame_count == original.frame_count == 15
    assert [(s.kind, s.codec) for s in result.other_streams] == [("audio", audio_codec)]
    assert result.duration == pytest.approx(original.duration, abs=0.1)
    code, _, err = cli("upscale", str(source), "-o", str(tmp_path / "again.ts"), "--device", "cpu")
    assert code == 2 and "reads .ts videos but does not write them" in err


def combing(path: Path) -> tuple[int, float]:
    """(frames, vertical variation): the test picture (full-height bars) has none, so any is combing, at any scale."""
    with video.FrameReader(path) as reader:
        frames = np.stack(list(reader)).astype(np.float32)
    return len(frames), float(np.abs(frames[:, 1:] - frames[:, :-1]).mean() + np.abs(frames[:, 2:] - frames[:, :-2]).mean())


def test_deinterlace_removes_the_combing_and_a_resumed_read_gives_the_same_frames(tmp_path):
    source = tmp_path / "camcorder.mkv"  # a white bar moving fast over black, its fields 1/50 s apart
    ffmpeg("-filter_complex", "color=c=black:s=96x64:r=50:d=1[b];color=c=white:s=12x64:r=50:d=1[w];"
           "[b][w]overlay=x='mod(t*300,80)':y=0,tinterlace=mode=interleave_top,setfield=tff",
           "-flags", "+ilme+ildct", "-c:v", "libx264", "-crf", "10", "-x264opts", "tff=1", "-pix_fmt", "yuv420p",
           str(source))
    assert combing(source)[1] > 20
    plain, deinterlaced = tmp_path / "plain.mkv", tmp_path / "deinterlaced.mkv"
    upscale(source, plain)
    reporter = Recorder()
    run_video_job(toy_pool(), Job(source, deinterlaced, MediaKind.VIDEO), OutputSettings(),
                  VideoSettings(FAST, segment_seconds=0.2, deinterlace=True), reporter)
    assert combing(plain)[1] > 5  # the network (here nearest x2) enlarges the combs
    frames, left = combing(deinterlaced)
    assert frames == 25 and left < 1
    assert not [n for n in reporter.notes if "interlaced" in n]
    assert video.probe_video(deinterlaced).frame_count == video.probe_video(source).frame_count
    read_as = dataclasses.replace(video.probe_video(source), read_deinterlaced=True)
    with video.FrameReader(read_as) as whole, video.FrameReader(read_as, start_frame=7) as resumed:
        assert np.array_equal(np.stack(list(whole))[7:], np.stack(list(resumed)))


def test_constant_rate_stays_exact_24000_1001(tmp_path):
    source = tmp_path / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=24000/1001:duration=1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(source))  # x264 with B-frames: reordered packets
    for target in (tmp_path / "film_x2.mp4", tmp_path / "film_x2.mkv"):
        upscale(source, target, segment_seconds=0.3)
        result = video.probe_video(target)
        assert result.frame_rate == Fraction(24000, 1001) and result.constant_rate
        assert result.frame_count == 24
        expected = [k * 1001 / 24000 for k in range(24)]
        assert frame_seconds(result) == pytest.approx(expected, abs=0.0006 if target.suffix == ".mkv" else 1e-6)


def test_sample_aspect_ratio_188_189_kept_on_variable_rate_path(tmp_path):
    source = phone_clip(tmp_path / "sar.mp4", extra=(",setsar=188/189:max=1000",))
    assert video.probe_video(source).sample_aspect_ratio == Fraction(188, 189)
    target = tmp_path / "sar_x2.mp4"
    upscale(source, target)
    assert video.probe_video(target).sample_aspect_ratio == Fraction(188, 189)


def test_timing_check_refuses_a_retimed_result(tmp_path):
    """A joined file with the right frame count but other frame times never reaches the target."""
    source = video.probe_video(phone_clip(tmp_path / "phone.mp4"))
    retimed = tmp_path / "cfr.mp4"
    ffmpeg("-i", str(source.path), "-vf", "setpts=N/(10*TB)", "-fps_mode", "passthrough", "-c:v", "libx264",
           "-an", str(retimed))  # what the constant-rate pipe made of it: 8 frames in 0.8 s
    result = video.probe_video(retimed)
    assert result.frame_count == source.frame_count
    problem = video.timing_problem(source, result, ".mp4")
    assert problem is not None and "frame 5" in problem


# -- HDR ----------------------------------------------------------------------------------------------

HDR10 = ("master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):"
         "max-cll=1000,400")


def hdr10_clip(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24:duration=0.25",
           "-vf", "setparams=color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc:range=tv",
           "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", f"log-level=error:{HDR10}", str(path))
    return path


def first_frame_report(path: Path) -> str:
    """What a decoder reports for the first frame: pixel format, colour and side data (showinfo)."""
    result = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-i", str(path), "-frames:v", "1",
                             "-vf", "showinfo", "-f", "null", "-"], capture_output=True, text=True, check=True)
    return result.stderr


def test_hdr10_keeps_transfer_primaries_and_side_data_at_ten_bits(tmp_path):
    source = hdr10_clip(tmp_path / "hdr.mp4")
    info = video.probe_video(source)
    assert info.colour.transfer == "smpte2084" and info.hdr is not None
    target = tmp_path / "hdr_x2.mkv"
    upscale(source, target, video.VideoEncodeSettings(codec="libx265", preset="ultrafast"))
    result = video.probe_video(target)
    assert result.bit_depth >= 10
    assert (result.colour.transfer, result.colour.primaries, result.colour.matrix, result.colour.range) == \
        ("smpte2084", "bt2020", "bt2020nc", "tv")
    report = first_frame_report(target)
    assert "Mastering display metadata" in report and "r(0.6800,0.3200) g(0.2650,0.6900)" in report
    assert "min_luminance=0.005000, max_luminance=1000.000000" in report
    assert "MaxCLL=1000, MaxFALL=400" in report
    assert result.hdr == info.hdr


def test_hdr_is_never_encoded_at_eight_bits(tmp_path):
    source = hdr10_clip(tmp_path / "hdr.mp4")
    with pytest.raises(VideoEncodeError, match="HDR") as caught:
        upscale(source, tmp_path / "flat.mp4", video.VideoEncodeSettings(codec="libx264", pix_fmt="yuv420p"))
    assert "10-bit" in caught.value.hint
    assert not (tmp_path / "flat.mp4").exists()


def test_hdr_side_data_an_encoder_cannot_write_is_announced(tmp_path):
    source = hdr10_clip(tmp_path / "hdr.mp4")
    reporter = upscale(source, tmp_path / "hdr_x2.mp4", FAST)
    assert any("mastering display" in note for note in reporter.notes)
    assert video.probe_video(tmp_path / "hdr_x2.mp4").bit_depth >= 10


# -- encoders -----------------------------------------------------------------------------------------

def test_unknown_encoder_names_the_available_ones(tmp_path):
    source = phone_clip(tmp_path / "phone.mp4")
    with pytest.raises(VideoError) as caught:
        upscale(source, tmp_path / "out.mp4", video.VideoEncodeSettings(codec="h266_magic"))
    message, hint = caught.value.for_cli()
    assert "h266_magic" in message
    assert "libx264" in hint and "libx265" in hint and "--ffmpeg" in hint
    assert not list(tmp_path.glob(".*lightsr-parts"))


def test_hardware_encoder_that_cannot_start_says_so_in_one_line(tmp_path):
    if "h264_nvenc" not in video.video_encoders():
        pytest.skip("this ffmpeg has no h264_nvenc compiled in")
    if torch.cuda.is_available():
        pytest.skip("an NVIDIA GPU is present: h264_nvenc may start")
    source = phone_clip(tmp_path / "phone.mp4")
    with pytest.raises(LightsrError) as caught:
        upscale(source, tmp_path / "out.mp4", video.VideoEncodeSettings(codec="h264_nvenc"))
    message, hint = caught.value.for_cli()
    assert "h264_nvenc encoder cannot start" in message and "\n" not in message
    assert "libx264" in hint


def test_ffmpeg_from_the_environment_is_used_and_checked(tmp_path, monkeypatch):
    bundled = video.ffmpeg_exe()
    monkeypatch.setenv("LIGHTSR_FFMPEG", bundled)
    assert video.ffmpeg_exe() == bundled
    source = phone_clip(tmp_path / "phone.mp4")
    upscale(source, tmp_path / "phone_x2.mp4")
    assert video.probe_video(tmp_path / "phone_x2.mp4").frame_count == len(PHONE_TIMES)

    old = tmp_path / "old-ffmpeg"
    old.write_text("#!/bin/sh\necho 'ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021'\n")
    old.chmod(0o755)
    monkeypatch.setenv("LIGHTSR_FFMPEG", str(old))
    with pytest.raises(VideoError, match="version 4.4; lightsr needs 7.0"):
        video.ffmpeg_exe()


def test_ffmpeg_option_with_a_wrong_path_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTSR_FFMPEG", raising=False)
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    result = CliRunner().invoke(app, ["upscale", str(image), "--ffmpeg", str(tmp_path / "nope"), "--device", "cpu"])
    assert "LIGHTSR_FFMPEG" not in os.environ  # the option holds for that run only
    assert result.exit_code == 1
    assert "error: the ffmpeg chosen by --ffmpeg" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_hlg_keeps_its_transfer_at_ten_bits(tmp_path):
    source = tmp_path / "hlg.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2",
           "-vf", "setparams=color_primaries=bt2020:color_trc=arib-std-b67:colorspace=bt2020nc:range=tv",
           "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error", str(source))
    target = tmp_path / "hlg_x2.mkv"
    upscale(source, target)  # libx264: 10-bit High 10, tags kept (HLG has no mastering metadata to lose)
    result = video.probe_video(target)
    assert result.bit_depth == 10
    assert (result.colour.transfer, result.colour.primaries, result.colour.matrix) == \
        ("arib-std-b67", "bt2020", "bt2020nc")


def test_concat_durations_keep_every_segment_start_within_a_microsecond():
    from lightsr_cli.media.video.timeline import concat_durations

    starts = [Fraction(k * 1001 * 240, 24000) for k in range(2000)]  # 10 s segments of 24000/1001 fps, 5.5 h
    placed = 0
    for k, duration in enumerate(concat_durations(starts), start=1):
        placed += duration
        assert abs(Fraction(placed, 10**6) - (starts[k] - starts[0])) <= Fraction(1, 2 * 10**6)


def test_discarded_packets_have_no_frame_time():
    from lightsr_cli.media.video.timeline import parse_framecrc

    listing = ("#tb 0: 1/1000\n"
               "0,        -83,        -83,       41,      722, 0x8fc6f9ef, F=0x5\n"
               "0,        -42,          0,       41,       14, 0x194504fc\n"
               "0,          0,         83,       41,       17, 0x231f058b, F=0x0\n"
               "0,         41,         41,       41,       75, 0xa9ee15e1, F=0x0\n")
    count, timeline = parse_framecrc(listing)
    assert count == 3 and timeline is not None
    assert timeline.pts == (0, 41, 83) and timeline.end == 124 and timeline.time_base == Fraction(1, 1000)
    assert timeline.is_constant(Fraction(24000, 1001))  # matroska's milliseconds of 24000/1001 fps
    assert parse_framecrc(listing.replace("0,         41,         41", "0,         41,      NOPTS"))[1] is None


def size_changing_clip(folder: Path) -> Path:
    """One second at 64x48 (landscape), then one at 48x64 (portrait, a turned phone): one h264 stream in
    MPEG-TS whose frame size changes mid-stream, as a broadcast capture's does between SD and HD."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-c:v", "libx264", "-bf", "0",
           "-pix_fmt", "yuv420p", "-muxdelay", "0", str(folder / "a.ts"))
    ffmpeg("-f", "lavfi", "-i", "color=white:size=48x64:rate=10:duration=1", "-c:v", "libx264", "-bf", "0",
           "-pix_fmt", "yuv420p", "-muxdelay", "0", "-output_ts_offset", "1", str(folder / "b.ts"))
    clip = folder / "turned.ts"
    clip.write_bytes((folder / "a.ts").read_bytes() + (folder / "b.ts").read_bytes())
    return clip


def test_frames_that_change_size_mid_stream_keep_their_shape_and_are_warned_about(tmp_path):
    """ffmpeg on its own scales such frames to the first size, squashing them; here they are fitted into it,
    centred on black, and the job says so."""
    clip = size_changing_clip(tmp_path)
    info = video.probe_video(clip)
    assert (info.width, info.height, info.frame_count) == (64, 48, 20)
    with video.FrameReader(info) as reader:
        frames = list(reader)
    assert reader.other_sizes == ((48, 64),)
    portrait = frames[-1].astype(int)  # white 48x64 fitted into 64x48: 36x48 of white between black bars
    assert portrait.shape == (48, 64, 3)
    assert portrait[:, 32].min() > 200 and portrait[:, :12].max() < 20 and portrait[:, -12:].max() < 20
    white_columns = np.flatnonzero(portrait.mean(axis=(0, 2)) > 128)
    assert 34 <= len(white_columns) <= 38  # 48 * 48/64 = 36: the shape kept, not stretched to 64
    # A read from past the change (a resumed run, a cluster segment) gets the same frames: a filter graph
    # rebuilt at the change used to restart the frame count that skips to start_frame, and gave none.
    with video.FrameReader(info, start_frame=12) as resumed:
        assert np.array_equal(np.stack(list(resumed)), np.stack(frames[12:]))

    reporter = upscale(clip, tmp_path / "turned_x2.mkv")
    [warned] = [note for note in reporter.notes if "changes frame size" in note]
    assert warned.startswith("warning: turned.ts changes frame size mid-stream (64x48, then 48x64)")
    assert video.probe_video(tmp_path / "turned_x2.mkv").frame_count == 20


def test_frames_of_one_size_pass_the_fitting_untouched(tmp_path):
    clip = phone_clip(tmp_path / "phone.mp4")
    plain = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-noautorotate", "-i", str(clip), "-map", "0:v:0",
                            "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                           capture_output=True, check=True).stdout
    with video.FrameReader(video.probe_video(clip)) as reader:
        frames = list(reader)
    assert reader.other_sizes == ()
    assert b"".join(frame.tobytes() for frame in frames) == plain


def telemetry_clip(folder: Path) -> Path:
    """An mp4 with a gpmd data track beside its video, as GoPro cameras write one (GPS, gyroscope and
    accelerometer samples over time). The bundled ffmpeg cannot make a data track from raw bytes, so the
    packets are those of an mp4 chapter track (bin_data), remuxed under GoPro's fourcc."""
    chapters = folder / "chapters.txt"
    # (ffmpeg reads a sample back from this track only for a chapter that starts at the video's end)
    chapters.write_text(";FFMETADATA1\n" + "".join(f"[CHAPTER]\nTIMEBASE=1/1000\nSTART={start}\nEND={start + 1000}\n"
                                                    f"title=part {start}\n" for start in (0, 1000)))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-i", str(chapters), "-map_chapters", "1",
           "-c:v", "libx264", str(folder / "chaptered.mp4"))
    clip = folder / "GX010001.mp4"
    ffmpeg("-i", str(folder / "chaptered.mp4"), "-map", "0:v", "-map", "0:d", "-c", "copy", "-tag:d", "gpmd",
           "-map_chapters", "-1", str(clip))
    return clip


def data_packets(path: Path) -> bytes:
    return subprocess.run([video.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:d", "-c", "copy", "-f",
                           "data", "-"], capture_output=True, check=True).stdout


def test_gopro_telemetry_is_copied_into_mp4_and_mov_and_named_where_it_cannot_go(tmp_path):
    clip = telemetry_clip(tmp_path)
    [track] = [s for s in video.probe_video(clip).other_streams if s.kind == "data"]
    assert track.tag == "gpmd" and data_packets(clip)
    for suffix in (".mp4", ".mov"):  # in segments, joined: the data track comes from the source at the join
        target = tmp_path / f"out{suffix}"
        reporter = upscale(clip, target, segment_seconds=0.5)
        assert not [note for note in reporter.notes if "data stream" in note]
        [copied] = [s for s in video.probe_video(target).other_streams if s.kind == "data"]
        assert copied.tag == "gpmd" and data_packets(target) == data_packets(clip)
    reporter = upscale(clip, tmp_path / "out.mkv")
    assert [note for note in reporter.notes if "data stream" in note] == [
        "note: GX010001.mp4's data stream #1 (gpmd), GoPro telemetry (GPS, gyroscope, accelerometer), cannot be "
        "written to .mkv: write .mp4 or .mov to keep it"]
    # mp4 chapters (a text data track) stay chapters, and are not called a lost stream
    reporter = upscale(tmp_path / "chaptered.mp4", tmp_path / "chaptered_x2.mp4")
    assert not [note for note in reporter.notes if "data stream" in note]
    listed = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "chaptered_x2.mp4")],
                            capture_output=True, text=True).stderr
    assert listed.count("Chapter #0:") == 2


def test_an_unknown_data_track_is_named_not_dropped_silently():
    unknown = video.StreamInfo(3, "data", "bin_data", tag="fdsc")  # GoPro's firmware diagnostics
    timecode = video.StreamInfo(4, "data", "none", tag="tmcd")  # written anew from the start timecode
    notes = video.data_stream_notes([unknown, timecode], Path("out.mp4"), "GX010001.MP4")
    assert notes == ["note: GX010001.MP4's data stream #3 (fdsc) is not copied: lightsr copies camm, gpmd data "
                     "tracks only (into .mp4 or .mov)"]
    telemetry = video.StreamInfo(2, "data", "bin_data", tag="gpmd")
    assert video.data_stream_notes([telemetry], Path("out.mp4"), "GX010001.MP4") == []
    # .m4v is written by ffmpeg's ipod muxer, which refuses data tracks (the join would fail after every frame)
    assert video.data_stream_notes([telemetry], Path("out.m4v"), "GX010001.MP4") == [
        "note: GX010001.MP4's data stream #2 (gpmd), GoPro telemetry (GPS, gyroscope, accelerometer), cannot be "
        "written to .m4v: write .mp4 or .mov to keep it"]
