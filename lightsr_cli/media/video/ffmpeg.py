"""The ffmpeg binary: where it is (imageio-ffmpeg), running it, its pixel formats, and reading its logs.

imageio-ffmpeg ships one static ffmpeg and no ffprobe; everything in this package goes through it.
The pixel-format tables are read from that binary (``ffmpeg -pix_fmts``, ``ffmpeg -h encoder=...``),
so they match the build in use. The log helpers turn a failed run's stderr into the few lines that
say why, for error messages.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Sequence

from ...errors import VideoError
from ...settings import FFMPEG_ENV, ffmpeg_override

MIN_FFMPEG = (7, 0)  # -fps_mode, -enc_time_base demux, -display_rotation, frame side data to encoders


def ffmpeg_exe() -> str:
    """The ffmpeg binary: LIGHTSR_FFMPEG ({--ffmpeg PATH}) when set and usable, else imageio-ffmpeg's."""
    chosen = ffmpeg_override()
    if chosen:
        return checked_ffmpeg(chosen)
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise VideoError("video support needs the imageio-ffmpeg package", hint="pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=8)
def checked_ffmpeg(path: str) -> str:
    """``path`` (or a name on PATH) resolved, once it runs and is ffmpeg 7.0 or newer; else VideoError."""
    found = shutil.which(path)
    where = f"the ffmpeg chosen by {{--ffmpeg}} / {FFMPEG_ENV} ({path})"
    if found is None:
        raise VideoError(f"{where} does not exist or is not executable",
                         hint="give the full path of an ffmpeg binary, or unset it to use the bundled one")
    try:
        result = subprocess.run([found, "-hide_banner", "-version"], capture_output=True,  # noqa: S603 - the user's ffmpeg
                                check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise VideoError(f"{where} does not run: {error}") from None
    text = result.stdout.decode("utf-8", "replace")
    match = re.search(r"ffmpeg version (?:n)?(\d+)\.(\d+)", text)
    if result.returncode != 0 or not text.startswith("ffmpeg version"):
        said = text.splitlines()[0] if text.strip() else "nothing"
        raise VideoError(f"{where} is not ffmpeg: `{path} -version` says {said!r}")
    if match and (int(match.group(1)), int(match.group(2))) < MIN_FFMPEG:
        raise VideoError(f"{where} is version {match.group(1)}.{match.group(2)}; lightsr needs "
                         f"{MIN_FFMPEG[0]}.{MIN_FFMPEG[1]} or newer", hint="update it, or unset it to use the bundled one")
    return found  # no number: a build from git (N-12345-g...), as new as it gets


def run_ffmpeg(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the bundled ffmpeg to completion with ``args``; stdout and stderr captured, exit status unchecked."""
    # -nostdin: a probing ffmpeg must never eat the terminal's input (or block on it).
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", *args]
    return subprocess.run(command, capture_output=True, check=False)  # noqa: S603 - our ffmpeg argument list


@functools.lru_cache(maxsize=1)
def pix_fmt_table() -> dict[str, int | None]:
    """Every pix_fmt name ffmpeg knows -> its deepest component, from ``ffmpeg -pix_fmts``.

    The depth comes from the BIT_DEPTHS column ("10-10-10"); builds older than ffmpeg 4.4 lack it (None).
    """
    text = run_ffmpeg(["-pix_fmts"]).stdout.decode("utf-8", "replace")
    table: dict[str, int | None] = {}
    for match in re.finditer(r"^[IOHPB.]{5}\s+(\w+)\s+\d+\s+\d+(?:\s+([\d-]+))?\s*$", text, re.MULTILINE):
        depths = match.group(2)
        table[match.group(1)] = max(int(d) for d in depths.split("-")) if depths else None
    return table


def pix_fmt_bit_depth(pix_fmt: str) -> int:
    """Bits per component of an ffmpeg pixel format: yuv420p -> 8, yuv420p10le -> 10, rgb48le -> 16."""
    depth = pix_fmt_table().get(pix_fmt)
    if depth is not None:
        return depth
    # Older ffmpeg builds print no BIT_DEPTHS column: fall back on the naming scheme (…p10le, …p12be).
    match = re.search(r"p(\d{1,2})(?:le|be)$", pix_fmt)
    return int(match.group(1)) if match else 8


@functools.lru_cache(maxsize=None)
def encoder_pix_fmts(codec: str) -> tuple[str, ...]:
    """Pixel formats an encoder of the bundled ffmpeg accepts (empty when unknown)."""
    text = run_ffmpeg(["-h", f"encoder={codec}"]).stdout.decode("utf-8", "replace")
    match = re.search(r"Supported pixel formats:\s*(.+)", text)
    return tuple(match.group(1).split()) if match else ()


_CHROMA_RANK = {"4:2:0": 0, "4:2:2": 1, "4:4:4": 2}


def chroma_of(pix_fmt: str) -> str | None:
    """'4:2:0', '4:2:2' or '4:4:4' for a YUV or RGB pixel format name; None for gray or unknown ones."""
    name = pix_fmt.lower()
    if name.startswith(("gbr", "rgb", "bgr")) or "444" in name:
        return "4:4:4"
    if "422" in name or name in ("nv16", "nv20le", "p210le", "p216le", "y210le", "v210"):
        return "4:2:2"
    if "420" in name or name in ("nv12", "nv21", "p010le", "p012le", "p016le"):
        return "4:2:0"
    return None


def subsampling_note(source_name: str, source_pix_fmt: str, codec: str, written_pix_fmt: str) -> str | None:
    """A note when the default output format keeps less colour resolution than the source has (a 4:2:2
    camera file written 4:2:0 for players), naming the --pix-fmt that keeps it; None when nothing is lost."""
    source, written = chroma_of(source_pix_fmt), chroma_of(written_pix_fmt)
    if source is None or written is None or _CHROMA_RANK[written] >= _CHROMA_RANK[source]:
        return None
    keeping = written_pix_fmt.replace(written.replace(":", ""), source.replace(":", ""))
    way = (f"--pix-fmt {keeping} keeps it" if keeping != written_pix_fmt and keeping in encoder_pix_fmts(codec)
           else f"choose an encoder and --pix-fmt that hold {source}")
    return (f"note: {source_name} is {source} ({source_pix_fmt}); written {written} ({written_pix_fmt}), "
            f"which every player shows; {way}")


def default_pix_fmt(codec: str, source_bit_depth: int = 8) -> str:
    """The output pixel format when the user picks none.

    4:2:0 for compatibility; 10 (or 12) bits when the source has more than 8 and the encoder can keep
    them, so an upscale of a 10-bit video is not squashed to 8 bits. (The bundled libx264 is a
    multi-depth build, so even H.264 keeps 10 bits; players must support High 10 then.)
    """
    supported = encoder_pix_fmts(codec)
    if source_bit_depth > 8:
        # p010le: what hardware encoders (NVENC, QSV, VideoToolbox) take for 10 bits.
        for candidate in (f"yuv420p{min(source_bit_depth, 12)}le", "yuv420p10le", "p010le"):
            if candidate in supported:
                return candidate
    if supported and "yuv420p" not in supported and "nv12" in supported:
        return "nv12"  # the same 4:2:0 8-bit pictures, as QSV and VAAPI-style encoders take them
    return "yuv420p"


def first_error_line(stderr: str) -> str | None:
    """The most telling line of a failed ffmpeg run, without its "[in#0 @ 0x...]" prefix."""
    for line in stderr.splitlines():
        if re.search(r"error|invalid|not found|no such|denied|ended", line, re.IGNORECASE):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())
    return None


# Follow-up lines ffmpeg prints after the real cause; they only repeat that something failed.
_ECHO_LINES = ("task finished", "terminating thread", "nothing was written", "error sending frames",
               "conversion failed", "at least one output file", "error while filtering", "error closing file")


def error_tail(stderr: bytes | str, lines: int = 3) -> str:
    """The first few lines of a failed ffmpeg run that say why, without "[mov @ 0x...]" prefixes."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    kept = [re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip()) for line in text.splitlines()]
    kept = [line for line in kept if line and not any(e in line.lower() for e in _ECHO_LINES)]
    return " | ".join(kept[:lines])


# Messages by which ffmpeg reports a file that ends early or a container it cannot parse. ffmpeg often
# exits 0 anyway (a truncated mkv demuxes "fine" up to the cut), so these are looked for explicitly.
# Decoder complaints about damaged pictures are deliberately absent: ffmpeg conceals those and a
# player would play on, so we upscale what it decodes rather than refuse the file.
_CORRUPTION_MARKERS = (
    "ended prematurely",  # matroska cut short
    "partial file",  # mp4 whose sample table points past the end of the file
    "moov atom not found",  # mp4 cut before its index
    "truncat",
    "invalid data found",
    "end of file",
)


def corruption_in(stderr: str) -> str | None:
    """The first line of an ffmpeg log that reports truncation or an unparsable container, if any."""
    for line in stderr.splitlines():
        if any(marker in line.lower() for marker in _CORRUPTION_MARKERS):
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
    return None
