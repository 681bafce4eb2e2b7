"""Pipes: one image's bytes from stdin to stdout, or a y4m video stream upscaled frame by frame.

The image path is the file path's own job (:func:`.images.upscale_image_data`) on bytes, so a
piped image comes out byte-for-byte as the same image written to a file. The stream path reads a
YUV4MPEG2 stream (``ffmpeg ... -f yuv4mpegpipe -``), upscales its frames in batches as they arrive
and writes a y4m stream of the result (same rate, interlacing, aspect and colourspace) to a file
descriptor; frames flow through bounded pipes, so memory stays flat whatever the length. Size
limits apply as for files: the image header or the y4m header is checked before any pixel is decoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np

from ..engine import Engine, EnginePool
from ..errors import InputError, LimitError, OutputClosedError
from ..media import images, y4m
from ..progress import Reporter
from .images import OutputSettings, upscale_image_data
from .limits import check_input, check_output, output_size
from .pixels import upscale_rgb
from .sizing import chroma_subsampled, final_size

STDIN_NAME = Path("stdin")
_SNIFF_BYTES = len(y4m.SIGNATURE)
_SLACK_BYTES = 64 << 20  # metadata, compression overhead: a stdin image may be this much larger than raw pixels


@dataclass(frozen=True)
class StreamResult:
    frames: int
    megapixels_in: float
    megapixels_out: float
    seconds: float
    size: tuple[int, int]


def sniff(stream: IO[bytes]) -> tuple[str, bytes]:
    """("y4m" | "image", the bytes read to tell); InputError for an empty stream."""
    start = b""
    while len(start) < _SNIFF_BYTES:
        chunk = stream.read(_SNIFF_BYTES - len(start))
        if not chunk:
            break
        start += chunk
    if not start:
        raise InputError("stdin is empty: nothing to upscale",
                         hint="pipe an image or a y4m stream in: cat photo.png | lightsr upscale - -o out.png")
    return ("y4m" if start == y4m.SIGNATURE else "image"), start


def read_image_stream(stream: IO[bytes], start: bytes, output: OutputSettings) -> bytes:
    """The rest of an image on ``stream``; refused past what the input limit's largest image could take."""
    cap = int(output.limits.max_input_megapixels * 1e6 * 8) + _SLACK_BYTES  # 16-bit RGBA, uncompressed
    data = start + stream.read(cap + 1 - len(start))
    if len(data) > cap:
        raise LimitError(f"stdin holds more than {cap / 1e6:.0f} MB, more than an image within the input limit "
                         f"of {output.limits.max_input_megapixels:g} megapixels can take",
                         hint="raise the limit with {--max-input-megapixels N} if this is one large image")
    if images.claimed_size(data, STDIN_NAME) is None:
        raise InputError("stdin is not an image lightsr can read (no known image signature)",
                         hint="supported: PNG, JPEG, WebP, BMP, TIFF, GIF, HEIC, AVIF; or a y4m stream "
                              "(ffmpeg -f yuv4mpegpipe -)")
    return data


def upscale_image_bytes(engine: Engine, data: bytes, image_format: str, output: OutputSettings,
                        reporter: Reporter) -> tuple[bytes, tuple[float, float]]:
    return upscale_image_data(engine, data, STDIN_NAME, image_format, output, reporter)


def write_stdout(data: bytes, out: IO[bytes]) -> None:
    try:
        out.write(data)
        out.flush()
    except BrokenPipeError:
        raise OutputClosedError("the output pipe was closed by its reader before the image was written") from None


def stream_size(header: y4m.Y4mHeader, scale: int, output: OutputSettings) -> tuple[int, int]:
    """The upscaled frame size of a y4m stream: --outscale, a target size (even for 4:2:x), or the network's."""
    if output.target is not None:
        return final_size(output.target, header.width, header.height, header.sample_aspect,
                          even=chroma_subsampled(header.pix_fmt))
    width, height = output_size(header.width, header.height, scale, output.outscale)
    if chroma_subsampled(header.pix_fmt):  # a y4m stream keeps its colourspace: 4:2:x needs even sides
        width, height = max(2, width + width % 2), max(2, height + height % 2)
    return width, height


def upscale_y4m(pool: EnginePool, header_line: bytes, rest: IO[bytes], out_fd: int, output: OutputSettings,
                reporter: Reporter) -> StreamResult:
    """Upscale a y4m stream (its header line read already) into a y4m stream on ``out_fd``."""
    started = time.perf_counter()
    header = y4m.parse_header(header_line)
    engine = pool.primary
    size = stream_size(header, engine.scale, output)
    check_input("each frame of stdin", header.width, header.height, output.limits)
    check_output("each frame of stdin", header.width, header.height, engine.scale, output.outscale, output.limits,
                 size)
    if output.target is not None and header.sample_aspect not in (None, 1):
        header_out = replace(header, sample_aspect=Fraction(1))  # the size is in display pixels (sizing.py)
    else:
        header_out = header
    decoder = y4m.Y4mDecoder(header_line, rest)
    encoder = y4m.Y4mEncoder(out_fd, header_out, *size)
    progress = reporter.task("stdin", total=None, unit="frame")

    def upscale_batch(engine: Engine, batch: list[np.ndarray]) -> list[np.ndarray]:
        results = list(upscale_rgb(engine, np.stack(batch)))
        if (results[0].shape[1], results[0].shape[0]) != size:
            results = [images.resize(frame, *size) for frame in results]
        return results

    try:
        for results in pool.map_ordered(upscale_batch, _batches(iter(decoder), engine.batch)):
            for result in results:
                encoder.write(result)
                progress.advance()
        encoder.close()
    except BaseException:
        encoder.abort()
        raise
    finally:
        decoder.close()
        progress.close()
    frames = decoder.frames_read
    return StreamResult(frames, frames * header.width * header.height / 1e6, frames * size[0] * size[1] / 1e6,
                        time.perf_counter() - started, size)


def _batches(frames, size: int):
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
