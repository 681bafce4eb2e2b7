"""`lightsr upscale - -o -`: stdin and stdout instead of files (one image, or a y4m video stream).

stdout carries the result's bytes and nothing else: progress, notes, errors and the summary go to
stderr, and so does the ``--json`` summary whenever stdout carries data.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OutputClosedError, UsageError
from . import targets
from .render import RichReporter, print_json_to_stderr, stderr

STDIO = "-"


@dataclass(frozen=True)
class PipeRun:
    """What the pipe run needs from the upscale command's options."""

    source: str
    output: Path | None
    mode: str
    """auto, image or yuv4mpegpipe."""
    model: str | None
    preset: str | None
    weights: Path | None
    scale: int | None
    image_format: str | None
    quiet: bool
    as_json: bool
    debug: bool


def uses_pipes(inputs: list[str], output: Path | None) -> bool:
    return STDIO in inputs or (output is not None and str(output) == STDIO)


def check_pipe_inputs(inputs: list[str]) -> None:
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("'-' (stdin) must be the only input", hint="upscale files and stdin in separate runs")


def run_pipe(run: PipeRun, engine_settings, output_settings, target) -> None:
    from ..pipeline import pipes

    to_stdout = run.output is None or str(run.output) == STDIO
    if to_stdout and sys.stdout.isatty():
        raise UsageError("stdout is a terminal: the upscaled bytes would be printed on it",
                         hint="redirect it (> out.png), pipe it on, or pass {-o FILE}")
    if run.source == STDIO:
        if sys.stdin.isatty():
            raise InputError("stdin is a terminal, not an image or a y4m stream",
                             hint="pipe one in: cat photo.png | lightsr upscale - -o out.png")
        stream = sys.stdin.buffer
        kind, start = pipes.sniff(stream)
    else:
        path = Path(run.source)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        from ..media.images import is_image_path

        if not is_image_path(path):
            raise UsageError(f"only images are written to stdout, not {path.name}",
                             hint=f"stream a video as y4m: ffmpeg -i {path.name} -f yuv4mpegpipe - | "
                                  "lightsr upscale - -o - | ffmpeg -i - OUT")
        stream, kind, start = None, "image", b""
    if run.mode == "yuv4mpegpipe" and kind != "y4m":
        raise InputError("{--pipe yuv4mpegpipe}: stdin does not start with a YUV4MPEG2 header",
                         hint="send it with ffmpeg ... -f yuv4mpegpipe -")
    try:
        if kind == "y4m":
            _stream(run, stream, start, engine_settings, output_settings, target, to_stdout)
        else:
            data = (pipes.read_image_stream(stream, start, output_settings) if stream is not None
                    else Path(run.source).read_bytes())
            _image(run, data, engine_settings, output_settings, target, to_stdout)
    except OutputClosedError:
        _quiet_stdout()
        raise


def _image(run: PipeRun, data: bytes, engine_settings, output_settings, target, to_stdout: bool) -> None:
    from .. import fs
    from ..media import images
    from ..pipeline import pipes

    if not to_stdout and not images.is_image_path(run.output):
        raise UsageError(f"-o {run.output} is not an image file name", hint="end it in .png, .jpg, ... or use -o -")
    image_format = run.image_format or ("png" if to_stdout else images.image_format(run.output))
    if not to_stdout and run.output.exists() and not output_settings.overwrite:
        raise fs.output_exists_error(run.output)
    card = targets.choose_card(run.model, run.preset, run.weights, run.scale, target,
                               lambda: [(*size, None) for size in [images.claimed_size(data, pipes.STDIN_NAME)] if size])
    with RichReporter(quiet=run.quiet, debug=run.debug) as reporter:
        pool = _load(card, engine_settings, reporter, run)
        encoded, (mp_in, mp_out) = pipes.upscale_image_bytes(pool.primary, data, image_format, output_settings,
                                                             reporter)
    if to_stdout:
        pipes.write_stdout(encoded, sys.stdout.buffer)
    else:
        fs.write_bytes(run.output, encoded, overwrite=output_settings.overwrite)
    _summary(run, card, {"files": 1, "megapixels_in": round(mp_in, 6), "megapixels_out": round(mp_out, 6),
                         "output": "stdout" if to_stdout else str(run.output), "format": image_format}, to_stdout)


def _stream(run: PipeRun, stream, start: bytes, engine_settings, output_settings, target, to_stdout: bool) -> None:
    from ..media import y4m
    from ..pipeline import pipes

    if not to_stdout:
        raise UsageError("a y4m stream is written to stdout: use {-o -}",
                         hint="pipe it into ffmpeg to encode a file: ... | lightsr upscale - -o - | ffmpeg -i - out.mkv")
    if run.image_format:
        raise UsageError("{--format} is for images; a y4m stream comes out as y4m")
    header_line = y4m.read_header_line(stream, start)
    header = y4m.parse_header(header_line)
    card = targets.choose_card(run.model, run.preset, run.weights, run.scale, target,
                               lambda: [(header.width, header.height, header.sample_aspect)])
    sys.stdout.flush()
    with RichReporter(quiet=run.quiet, debug=run.debug) as reporter:
        pool = _load(card, engine_settings, reporter, run)
        result = pipes.upscale_y4m(pool, header_line, stream, sys.stdout.fileno(), output_settings, reporter)
    _summary(run, card, {"frames": result.frames, "size": list(result.size),
                         "megapixels_in": round(result.megapixels_in, 6),
                         "megapixels_out": round(result.megapixels_out, 6), "seconds": round(result.seconds, 3),
                         "output": "stdout"}, to_stdout)


def _load(card, engine_settings, reporter, run: PipeRun):
    from ..pipeline.loading import load_pool

    pool = load_pool(card, engine_settings, reporter, weights_path=run.weights)
    for note in pool.notes:
        reporter.note(f"note: {note}")
    return pool


def _summary(run: PipeRun, card, facts: dict, to_stdout: bool) -> None:
    report = {"model": card.id, "arch": card.arch, "scale": card.scale, **facts}
    if run.as_json:
        if to_stdout:
            print_json_to_stderr(report)
        else:
            from .render import print_json

            print_json(report)
    elif not run.quiet:
        stderr.print(f"[bold green]done[/]: {facts.get('frames', 1)} "
                     f"{'frames' if 'frames' in facts else 'image'} -> {facts['output']}, model {card.id}")


def _quiet_stdout() -> None:
    """After the reader went away: point stdout at /dev/null so Python's exit flush finds no broken pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
