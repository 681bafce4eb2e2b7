"""Pipes: `-` reads stdin, `-o -` writes stdout (images, and y4m video streams), in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightsr_cli.errors import InputError
from lightsr_cli.media import video, y4m

REPO = Path(__file__).resolve().parent.parent


def lightsr(*args: str, stdin: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lightsr_cli", *args], input=stdin, capture_output=True, env=env,
                          timeout=300, cwd=kwargs.get("cwd"))


def png(path: Path, height=21, width=33) -> Path:
    rng = np.random.default_rng(1)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3)).astype(np.uint8))
    return path


def ffmpeg(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run([video.ffmpeg_exe(), "-v", "error", *args], input=stdin, capture_output=True,
                          check=True).stdout


def test_piped_image_is_byte_for_byte_the_file_paths_result(tmp_path):
    # Byte-for-byte, not only pixel-for-pixel: both paths run the same job on the same bytes and the
    # same PNG encoder (metadata included), so the files must be identical.
    source = png(tmp_path / "a.png")
    filed = lightsr("upscale", str(source), "-o", str(tmp_path / "b.png"), "--device", "cpu", "-q")
    assert filed.returncode == 0, filed.stderr
    piped = lightsr("upscale", "-", "-o", "-", "--device", "cpu", stdin=source.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (tmp_path / "b.png").read_bytes()
    assert b"done" in piped.stderr  # messages went to stderr, not into the image


def test_piped_jpeg_comes_out_as_png_by_default_or_as_format(tmp_path):
    source = tmp_path / "a.jpg"
    assert cv2.imwrite(str(source), np.full((16, 18, 3), 90, np.uint8))
    default = lightsr("upscale", "-", "-o", "-", "--device", "cpu", "-q", stdin=source.read_bytes())
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith(b"\x89PNG")
    assert cv2.imdecode(np.frombuffer(default.stdout, np.uint8), cv2.IMREAD_UNCHANGED).shape == (64, 72, 3)
    webp = lightsr("upscale", "-", "--format", "webp", "--device", "cpu", "-q", stdin=source.read_bytes())
    assert webp.returncode == 0, webp.stderr
    assert webp.stdout[:4] == b"RIFF" and webp.stdout[8:12] == b"WEBP"


def test_json_goes_to_stderr_when_stdout_carries_the_image(tmp_path):
    source = png(tmp_path / "a.png")
    result = lightsr("upscale", "-", "-o", "-", "--device", "cpu", "--json", stdin=source.read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"\x89PNG")
    report = json.loads(result.stderr[result.stderr.index(b"{"):])
    assert report["model"] == "bsrn-x4" and report["output"] == "stdout"


def test_stdin_to_a_file_and_a_file_to_stdout(tmp_path):
    source = png(tmp_path / "a.png")
    to_file = lightsr("upscale", "-", "-o", str(tmp_path / "out.jpg"), "--device", "cpu", "-q",
                      stdin=source.read_bytes())
    assert to_file.returncode == 0, to_file.stderr
    assert cv2.imread(str(tmp_path / "out.jpg")).shape == (84, 132, 3)
    to_stdout = lightsr("upscale", str(source), "-o", "-", "--device", "cpu", "-q")
    assert to_stdout.returncode == 0 and to_stdout.stdout.startswith(b"\x89PNG")


@pytest.mark.parametrize(("stdin", "message"), [
    (b"", b"stdin is empty"),
    (b"this is not an image at all", b"not an image lightsr can read"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 5, b"not an image lightsr can read"),
])
def test_empty_or_broken_stdin_gives_one_clear_error(stdin, message):
    result = lightsr("upscale", "-", "-o", "-", "--device", "cpu", stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    assert message in result.stderr and b"Traceback" not in result.stderr


def test_size_limits_apply_to_stdin(tmp_path):
    source = png(tmp_path / "a.png", 100, 100)
    result = lightsr("upscale", "-", "-o", "-", "--max-input-megapixels", "0.005", stdin=source.read_bytes())
    assert result.returncode == 1 and result.stdout == b""
    assert b"above the input limit" in result.stderr


def test_stdin_must_be_the_only_input(tmp_path):
    source = png(tmp_path / "a.png")
    result = lightsr("upscale", "-", str(source), "-o", "-", stdin=b"")
    assert result.returncode == 2 and b"only input" in result.stderr
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"not read")
    result = lightsr("upscale", str(clip), "-o", "-")
    assert result.returncode == 2 and b"yuv4mpegpipe" in result.stderr and result.stdout == b""


# -- y4m streams -----------------------------------------------------------------------------------

def test_y4m_header_parsing():
    header = y4m.parse_header(b"YUV4MPEG2 W720 H480 F30000:1001 It A10:11 C420p10 XCOLORRANGE=FULL\n")
    assert (header.width, header.height, header.frame_rate) == (720, 480, Fraction(30000, 1001))
    assert header.interlacing == "t" and header.sample_aspect == Fraction(10, 11)
    assert header.pix_fmt == "yuv420p10le" and header.bit_depth == 10 and header.full_range is True
    plain = y4m.parse_header(b"YUV4MPEG2 W2 H2 F25:1")
    assert plain.pix_fmt == "yuv420p" and plain.bit_depth == 8 and plain.sample_aspect is None
    assert y4m.parse_header(b"YUV4MPEG2 W8 H8 F25:1 A0:0 Cmono16").bit_depth == 16
    for broken in (b"YUV4MPEG2 H480 F25:1", b"YUV4MPEG2 W1 H1 F25:0", b"YUV4MPEG2 W1 H1 F25:1 Cfoo"):
        with pytest.raises(InputError):
            y4m.parse_header(broken)


def _clip(tmp_path: Path, pix_fmt: str, size="34x20", extra=()) -> Path:
    clip = tmp_path / f"clip_{pix_fmt}.mkv"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=24000/1001:duration=0.25", *extra,
           "-pix_fmt", pix_fmt, "-c:v", "ffv1", str(clip))
    return clip


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le"])  # 10-bit: the harder case (8-bit: the same code)
def test_y4m_round_trip_equals_the_file_paths_frames(tmp_path, pix_fmt):
    """ffmpeg | lightsr upscale - -o - gives the frames of a lossless (ffv1) file-path run, 10-bit kept."""
    clip = _clip(tmp_path, pix_fmt)
    filed = lightsr("upscale", str(clip), "-o", str(tmp_path / "filed.mkv"), "--codec", "ffv1", "--model", "bsrn-x2",
                    "--device", "cpu", "-q")
    assert filed.returncode == 0, filed.stderr
    stream = ffmpeg("-i", str(clip), "-strict", "-1", "-f", "yuv4mpegpipe", "-")
    piped = lightsr("upscale", "-", "-o", "-", "--model", "bsrn-x2", "--device", "cpu", stdin=stream)
    assert piped.returncode == 0, piped.stderr
    header = y4m.parse_header(piped.stdout[:piped.stdout.index(b"\n")])
    source_header = y4m.parse_header(stream[:stream.index(b"\n")])
    assert (header.width, header.height) == (68, 40)
    assert header.frame_rate == Fraction(24000, 1001) and header.colourspace == source_header.colourspace
    raw = "rgb48le" if "10" in pix_fmt else "rgb24"
    from_pipe = ffmpeg("-f", "yuv4mpegpipe", "-i", "-", "-f", "rawvideo", "-pix_fmt", raw, "-", stdin=piped.stdout)
    from_file = ffmpeg("-i", str(tmp_path / "filed.mkv"), "-f", "rawvideo", "-pix_fmt", raw, "-")
    assert len(from_pipe) == 6 * 68 * 40 * 3 * (2 if "10" in pix_fmt else 1)
    assert from_pipe == from_file


def test_y4m_detected_without_the_option_and_refused_when_declared_but_absent(tmp_path):
    source = png(tmp_path / "a.png")
    result = lightsr("upscale", "-", "-o", "-", "--pipe", "yuv4mpegpipe", stdin=source.read_bytes())
    assert result.returncode == 1 and b"YUV4MPEG2" in result.stderr


def test_y4m_fit_on_an_anamorphic_stream_gives_square_samples(tmp_path):
    # 40x30 stored with SAR 2:1 is 80x30 on screen: --fit 51x51 is limited by the width (51, even: 50),
    # height 30 * 50 / 80 = 18.75 -> 18 (nearest even), written with SAR 1:1.
    clip = _clip(tmp_path, "yuv420p", "40x30", ("-vf", "setsar=2/1"))
    stream = ffmpeg("-i", str(clip), "-f", "yuv4mpegpipe", "-")
    assert b" A2:1" in stream[:stream.index(b"\n")]
    piped = lightsr("upscale", "-", "-o", "-", "--fit", "51x51", "--device", "cpu", "--json", stdin=stream)
    assert piped.returncode == 0, piped.stderr
    header = y4m.parse_header(piped.stdout[:piped.stdout.index(b"\n")])
    assert (header.width, header.height, header.sample_aspect) == (50, 18, Fraction(1))
    assert json.loads(piped.stderr[piped.stderr.index(b"{"):])["model"] == "bsrn-x2"  # 50/40: x2 is enough


def test_truncated_y4m_stream_is_one_error(tmp_path):
    stream = ffmpeg("-i", str(_clip(tmp_path, "yuv420p")), "-f", "yuv4mpegpipe", "-")
    result = lightsr("upscale", "-", "-o", "-", "--model", "bsrn-x2", "--device", "cpu", stdin=stream[:-100])
    assert result.returncode == 1, result.stderr
    assert b"error:" in result.stderr and b"Traceback" not in result.stderr


def test_closed_stdout_ends_with_one_line_and_no_traceback(tmp_path):
    """The reader of the stream goes away after a few bytes (head -c): exit non-zero, one error line."""
    stream = ffmpeg("-i", str(_clip(tmp_path, "yuv420p")), "-f", "yuv4mpegpipe", "-")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = (f"{sys.executable} -m lightsr_cli upscale - -o - --model bsrn-x2 --device cpu -q "
               f"2>{tmp_path / 'err.txt'} | head -c 10 > /dev/null; exit ${{PIPESTATUS[0]}}")
    result = subprocess.run(["bash", "-c", command], input=stream, env=env, timeout=300)
    errors = (tmp_path / "err.txt").read_text()
    assert result.returncode == 1, errors
    assert "closed by its reader" in errors and "Traceback" not in errors and "Exception ignored" not in errors
    image = png(tmp_path / "a.png", 200, 200)
    command = command.replace("--model bsrn-x2", "").replace("head -c 10 > /dev/null", "true")  # gone at once
    result = subprocess.run(["bash", "-c", command], input=image.read_bytes(), env=env, timeout=300)
    errors = (tmp_path / "err.txt").read_text()
    assert result.returncode == 1, errors
    assert "closed by its reader" in errors and "Traceback" not in errors and "Exception ignored" not in errors
