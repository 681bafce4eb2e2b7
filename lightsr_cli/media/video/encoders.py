"""Video encoders: which ones the ffmpeg in use has, whether one starts, and the arguments each one takes.

``--codec`` takes any ffmpeg encoder name. An unknown one is refused with the list of the video
encoders this ffmpeg has; a hardware encoder (NVENC, VideoToolbox, QSV, AMF, VAAPI...) can be compiled
in and still not start (no GPU, no driver), so it is tried once on a tiny picture before a job relies
on it, and its failure is reported as one clear line, not an ffmpeg dump. Quality (``--crf``) and speed
(``--video-preset``) are translated to each family's own options; HDR10 side data goes into the
parameters of the encoders that have them (see :mod:`.hdr`).
"""

from __future__ import annotations

import functools
import re

from ...errors import VideoEncodeError, VideoError
from .ffmpeg import error_tail, ffmpeg_exe, run_ffmpeg
from .hdr import ENCODER_HDR_PARAMS, HdrMetadata

# codec -> (default crf, whether -preset means anything, arguments it always needs)
_CODEC_DEFAULTS: dict[str, tuple[int | None, bool, tuple[str, ...]]] = {
    "libx264": (18, True, ()),
    "libx265": (20, True, ("-x265-params", "log-level=error")),
    "libvpx-vp9": (24, False, ("-b:v", "0", "-row-mt", "1")),  # -b:v 0: crf alone = constant quality
    "ffv1": (None, False, ("-level", "3", "-slicecrc", "1")),  # lossless: no crf
}

# Name endings of hardware encoders, and how each family takes a constant-quality value (None: it has none).
_HARDWARE_QUALITY = {"_nvenc": ("-rc", "vbr", "-b:v", "0", "-cq"), "_videotoolbox": ("-q:v",),
                     "_qsv": ("-global_quality",), "_amf": ("-rc", "cqp", "-qp_i"), "_vaapi": ("-qp",),
                     "_mf": None, "_v4l2m2m": None, "_vulkan": ("-qp",)}

# What the usual encoders are called, to list the available ones in a useful order.
_FAMILIES = ("libx264", "libx265", "libsvtav1", "libaom-av1", "librav1e", "libvpx-vp9", "libvpx", "ffv1", "prores_ks",
             "prores", "dnxhd", "utvideo", "h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_videotoolbox",
             "hevc_videotoolbox", "prores_videotoolbox", "h264_qsv", "hevc_qsv", "av1_qsv", "h264_amf", "hevc_amf",
             "av1_amf", "h264_vaapi", "hevc_vaapi", "av1_vaapi")


def is_hardware(codec: str) -> bool:
    return any(codec.endswith(suffix) for suffix in _HARDWARE_QUALITY)


@functools.lru_cache(maxsize=8)
def _video_encoders(exe: str) -> tuple[str, ...]:
    text = run_ffmpeg(["-encoders"]).stdout.decode("utf-8", "replace")
    return tuple(m.group(1) for m in re.finditer(r"^\s*V[\w.]{5}\s+(\S+)", text, re.MULTILINE) if m.group(1) != "=")


def video_encoders() -> tuple[str, ...]:
    """Names of the video encoders compiled into the ffmpeg in use."""
    return _video_encoders(ffmpeg_exe())


def usual_encoders() -> list[str]:
    """The well-known video encoders this ffmpeg has, most useful first."""
    available = set(video_encoders())
    return [name for name in _FAMILIES if name in available]


@functools.lru_cache(maxsize=32)
def _start_failure(exe: str, codec: str) -> str | None:
    result = run_ffmpeg(["-v", "error", "-f", "lavfi", "-i", "color=black:size=256x256:duration=0.1",
                         "-frames:v", "1", "-c:v", codec, "-f", "null", "-"])
    if result.returncode == 0:
        return None
    return error_tail(result.stderr, 1) or f"ffmpeg exited with status {result.returncode}"


def check_encoder(codec: str) -> None:
    """Raise VideoError unless ``codec`` is a video encoder of this ffmpeg that starts (hardware ones are tried)."""
    if codec not in video_encoders():
        known = ", ".join(usual_encoders()) or ", ".join(video_encoders()[:20])
        raise VideoError(f"this ffmpeg ({ffmpeg_exe()}) has no video encoder {codec!r}",
                         hint=f"available here: {known}; another ffmpeg can be used with {{--ffmpeg PATH}}")
    if is_hardware(codec) and (reason := _start_failure(ffmpeg_exe(), codec)):
        software = [name for name in usual_encoders() if not is_hardware(name)]
        raise VideoEncodeError(f"the {codec} encoder cannot start on this machine: {reason}",
                               hint=f"it needs its GPU and driver; software encoders that work here: "
                                    f"{', '.join(software)}")


def encoder_args(codec: str, crf: int | None, preset: str | None, pix_fmt: str,
                 hdr: HdrMetadata | None = None) -> list[str]:
    """``-c:v`` and the options that give ``codec`` this quality, speed, pixel format and HDR side data."""
    default_crf, has_preset, always = _CODEC_DEFAULTS.get(codec, (None, True, ()))
    args = ["-c:v", codec, "-pix_fmt", pix_fmt]
    params_option, params_of = ENCODER_HDR_PARAMS.get(codec, (None, None))
    extra = list(always)
    if params_option and params_of and hdr is not None:
        # One "-x265-params" only: a second one would replace the first.
        own = extra[extra.index(params_option) + 1].split(":") if params_option in extra else []
        if params_option in extra:
            del extra[extra.index(params_option):extra.index(params_option) + 2]
        extra += [params_option, ":".join([*own, *params_of(hdr)])]
    args += extra
    if crf is not None and codec in _CODEC_DEFAULTS and default_crf is None:
        raise VideoError(f"{{--crf}} does not apply to {codec}", hint=f"{codec} is lossless")
    crf = crf if crf is not None else default_crf
    if crf is not None:
        args += _quality_args(codec, crf)
    if preset is not None:
        if not has_preset:
            raise VideoError(f"{{--video-preset}} does not apply to {codec}",
                             hint="pass the encoder's own speed options as extra ffmpeg arguments")
        args += ["-preset", preset]
    return args


def _quality_args(codec: str, crf: int) -> list[str]:
    for suffix, quality in _HARDWARE_QUALITY.items():
        if codec.endswith(suffix):
            if quality is None:
                raise VideoError(f"{{--crf}} does not apply to {codec}",
                                 hint="give its bit rate as extra ffmpeg arguments: {--ffmpeg-arg -b:v} ...")
            return [*quality, str(crf)]
    return ["-crf", str(crf)]
