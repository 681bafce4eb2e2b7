"""`lightsr upscale INPUT...`"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..checkpoints import resolve_card
from ..errors import UsageError
from ..settings import ffmpeg_for_this_run
from . import options, pipes, targets
from .handling import handles_errors
from .render import RichReporter, about, print_json, stderr


@handles_errors
def upscale(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image or video files, folders, or quoted globs; "
                                       "'-' reads one image or a y4m stream from stdin."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (one input) or folder (created if "
                                          "missing); '-' writes to stdout."),
    scale: Optional[int] = options.SCALE,
    model: Optional[str] = options.MODEL,
    preset: Optional[options.Preset] = options.PRESET,
    weights_file: Optional[Path] = options.WEIGHTS,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into subfolders; the output tree mirrors the input."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Appended to output names (default _x{scale}; {scale} is filled in)."),
    image_format: Optional[options.ImageFormat] = options.IMAGE_FORMAT,
    quality: Optional[int] = options.QUALITY,
    outscale: Optional[float] = typer.Option(None, "--outscale", min=0.01, help="Resize the result to this final factor (e.g. 3 with a x4 model)."),
    fit: Optional[str] = options.FIT,
    fill: Optional[str] = options.FILL,
    width: Optional[int] = options.WIDTH,
    height: Optional[int] = options.HEIGHT,
    pipe: options.PipeMode = options.PIPE,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave existing outputs alone and skip their inputs."),
    tile: Optional[int] = options.TILE,
    batch: int = options.BATCH,
    device: str = options.DEVICES,
    precision: options.Precision = options.PRECISION,
    tta: bool = options.TTA,
    compile_network: bool = options.COMPILE,
    backend: options.Backend = options.BACKEND,
    as_json: bool = options.JSON,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary (errors still print)."),
    codec: str = typer.Option("libx264", "--codec", help="Video encoder: libx264, libx265, libvpx-vp9, ffv1 (lossless), ...",
                              rich_help_panel="Video"),
    crf: Optional[int] = typer.Option(None, "--crf", help="Video quality (lower is better; default per codec).",
                                      rich_help_panel="Video"),
    video_preset: Optional[str] = typer.Option(None, "--video-preset", help="Encoder speed preset (x264/x265: ultrafast..veryslow).",
                                               rich_help_panel="Video"),
    pix_fmt: Optional[str] = typer.Option(None, "--pix-fmt", help="Output pixel format (default: yuv420p, 10/12-bit for deep sources).",
                                          rich_help_panel="Video"),
    ffmpeg_args: List[str] = typer.Option([], "--ffmpeg-arg", help="Extra ffmpeg output argument (repeat for several).",
                                          rich_help_panel="Video"),
    ffmpeg_binary: Optional[str] = typer.Option(None, "--ffmpeg", metavar="PATH", help="Use this ffmpeg (7.0 or newer) "
                                                "instead of the bundled one, e.g. for its hardware encoders (or set "
                                                "LIGHTSR_FFMPEG).", rich_help_panel="Video"),
    segment_seconds: float = typer.Option(10.0, "--segment-seconds", min=0.01, help="Resume granularity for videos.",
                                          rich_help_panel="Video"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted video from its last finished segment.",
                                rich_help_panel="Video"),
    dedup: Optional[str] = typer.Option(None, "--dedup", metavar="exact|near[:LEVELS]", help="Reuse the previous "
                                        "upscaled frame for repeated frames: exact (bit-identical) or near (no pixel "
                                        "differs by more than LEVELS 8-bit levels, default 2).", rich_help_panel="Video"),
    deinterlace: bool = typer.Option(False, "--deinterlace", help="Deinterlace video files (bwdif, one frame per "
                                     "frame) before upscaling, e.g. camcorder or broadcast footage.",
                                     rich_help_panel="Video"),
    sequence: bool = typer.Option(False, "--sequence", help="A folder INPUT is one video of numbered frames, not a "
                                  "batch of photos (a pattern such as 'frames/%06d.png' always is).",
                                  rich_help_panel="Video"),
    fps: Optional[str] = typer.Option(None, "--fps", metavar="RATE", help="Frame rate of a frame-sequence input, e.g. "
                                      "24000/1001 or 25 (default: its lightsr sidecar's, else 24000/1001).",
                                      rich_help_panel="Video"),
    strip_metadata: bool = typer.Option(False, "--strip-metadata", help="Write no EXIF, XMP or IPTC (GPS, camera, "
                                        "dates); the colour profile stays unless --strip-icc.", rich_help_panel="Photos"),
    strip_icc: bool = typer.Option(False, "--strip-icc", help="Drop the ICC colour profile too (colours may shift).",
                                   rich_help_panel="Photos"),
    to_srgb: bool = typer.Option(False, "--to-srgb", help="Convert 8-bit outputs from their colour profile to sRGB.",
                                 rich_help_panel="Photos"),
    max_input_megapixels: Optional[float] = typer.Option(
        None, "--max-input-megapixels", min=0.000001, help="Refuse larger inputs before decoding them (default 100, "
        "or LIGHTSR_MAX_INPUT_MEGAPIXELS).", rich_help_panel="Limits"),
    cluster: Optional[str] = options.CLUSTER,
    gpus_per_worker: float = options.GPUS_PER_WORKER,
    cpus_per_worker: Optional[float] = options.CPUS_PER_WORKER,
    cluster_files: options.ClusterFiles = options.CLUSTER_FILES,
    max_output_megapixels: Optional[float] = typer.Option(
        None, "--max-output-megapixels", min=0.000001, help="Refuse jobs whose result is larger (default 400, "
        "or LIGHTSR_MAX_OUTPUT_MEGAPIXELS).", rich_help_panel="Limits"),
) -> None:
    """Upscale images (PNG, JPEG, WebP, BMP, TIFF, GIF, HEIC, AVIF; animations and pages too) and videos.

    Folders and globs too. EXIF, XMP, IPTC and the colour profile are carried over where the output
    format holds them.
    """
    if scale is not None and scale not in (2, 3, 4):
        raise UsageError(f"--scale must be 2, 3 or 4, not {scale}", hint="use --outscale for other final sizes")
    from ..pipeline.jobs import NamingSettings, plan_jobs
    from ..pipeline.sizing import target_from_options

    cluster_settings = _cluster_settings(cluster, gpus_per_worker, cpus_per_worker, cluster_files)
    target = target_from_options(fit, fill, width, height, outscale)
    preset_name = preset.value if preset else None
    piped = pipes.uses_pipes(inputs, output)
    if piped:
        pipes.check_pipe_inputs(inputs)
    auto_scale = targets.auto_scaled(model, weights_file, scale, target)
    card = None if auto_scale or piped else resolve_card(model, preset_name, weights_file, scale)
    suffix_text = suffix if suffix is not None else (target.label if target else "_x{scale}")
    rule = NamingSettings(suffix=suffix_text.replace("{scale}", f"{outscale or card.scale:g}" if card else ""),
                          image_format=image_format.value if image_format else None)
    from ..media.video.sequences import parse_rate
    from ..pipeline.dedup import parse_dedup

    dedup_settings = parse_dedup(dedup)
    sequence_rate = parse_rate(fps) if fps is not None else None
    plan = None if piped else plan_jobs(inputs, output, rule, recursive, overwrite,
                                        skip_existing or (resume and not overwrite), sequence=sequence)

    from ..media.metadata import MetadataPolicy
    from ..media.video import VideoEncodeSettings, ffmpeg_exe
    from ..pipeline.images import OutputSettings
    from ..pipeline.limits import PixelLimits
    from ..pipeline.loading import EngineSettings, load_pool
    from ..pipeline.run import run_jobs
    from ..pipeline.sizing import stored_size
    from ..pipeline.video import VideoSettings

    engine_settings = EngineSettings(device=device, precision=precision.value, tile=tile, batch=batch, tta=tta,
                          compile=compile_network, backend=backend.value)
    limits = _pixel_limits(max_input_megapixels, max_output_megapixels, PixelLimits)
    settings = OutputSettings(image_format=rule.image_format, quality=quality, outscale=outscale, overwrite=overwrite,
                              skip_existing=skip_existing, limits=limits,
                              metadata=MetadataPolicy(strip_metadata, strip_icc, to_srgb), target=target)
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    if plan is None:
        with ffmpeg_for_this_run(ffmpeg_binary):
            pipes.run_pipe(pipes.PipeRun(inputs[0], output, pipe.value, model, preset_name, weights_file, scale,
                                         rule.image_format, quiet, as_json, debug), engine_settings, settings, target)
        return
    if card is None:
        card = targets.card_for_sizes(preset_name, target, [stored_size(job.source, job.kind == "video")
                                                            for job in plan.jobs])
    with ffmpeg_for_this_run(ffmpeg_binary), RichReporter(quiet=quiet, debug=debug) as reporter:
        if ffmpeg_binary:
            ffmpeg_exe()  # checked now: a wrong path fails before any model is loaded
        video_settings = VideoSettings(VideoEncodeSettings(codec, crf, video_preset, pix_fmt, tuple(ffmpeg_args)),
                                       segment_seconds, resume, dedup_settings, sequence_rate, deinterlace)
        if cluster_settings is not None:
            from ..pipeline.cluster import run_jobs_on_cluster

            summary, pool = run_jobs_on_cluster(card, engine_settings, plan.jobs, settings, video_settings,
                                                cluster_settings, reporter, weights_path=weights_file)
        else:
            pool = load_pool(card, engine_settings, reporter, weights_path=weights_file)
            for note in pool.notes:
                reporter.note(f"note: {note}")
            summary = run_jobs(pool, plan.jobs, settings, video_settings, reporter)
    summary.skipped.extend(plan.skipped)
    report = {**_summary_dict(summary, card, pool), "ignored": [str(path) for path in plan.ignored]}
    if as_json:
        print_json(report)
    elif not quiet:
        _print_summary(report)
    if summary.failed:
        raise typer.Exit(1)


def _cluster_settings(cluster: str | None, gpus_per_worker: float, cpus_per_worker: float | None, files):
    """--cluster and its options -> ClusterSettings (None: a local run; Ray is not imported here)."""
    if cluster is None:
        return None
    from ..pipeline.cluster import ClusterSettings, FileAccess
    from ..pipeline.cluster.connect import import_ray, parse_cluster

    address = parse_cluster(cluster)
    import_ray()  # before any work: without Ray, one line saying how to install it
    return ClusterSettings(address=address, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                           files=FileAccess(files.value))


def _pixel_limits(max_input: float | None, max_output: float | None, limits_type):
    """The options where given, else the environment (settings.py), else the documented defaults."""
    from ..settings import read_settings

    settings = read_settings()
    return limits_type(max_input if max_input is not None else settings.max_input_megapixels,
                       max_output if max_output is not None else settings.max_output_megapixels)


def _summary_dict(summary, card, pool) -> dict:
    seconds = summary.seconds
    engine = pool.primary
    return {
        "model": card.id, "arch": card.arch, "scale": card.scale,
        "device": pool.device_names, "precision": engine.precision, "backend": engine.backend,
        "tile": engine.tile if engine.tile is not None else engine.stats.tile,  # the tile asked for
        "batch": engine.batch, "tta": engine.tta, "compiled": engine.compiled,
        "files": len(summary.done),
        "failed": [{"input": str(j.source), "error": about(str(j.source), e.for_cli()[0])} for j, e in summary.failed],
        "skipped": [str(j.source) for j in summary.skipped],
        "outputs": [str(j.target) for j in summary.done],
        "megapixels_in": round(summary.megapixels_in, 6), "megapixels_out": round(summary.megapixels_out, 6),
        "seconds": round(seconds, 3),
        "megapixels_out_per_second": round(summary.megapixels_out / seconds, 4) if seconds > 0 else None,
        "fp32_fallbacks": pool.fp32_fallbacks,
        **_video_summary(summary.videos),
        **({"cluster": summary.cluster} if getattr(summary, "cluster", None) else {}),
    }


def _video_summary(videos) -> dict:
    if not videos:
        return {}
    frames = sum(v.frames for v in videos)
    wall = sum(v.wall_seconds for v in videos)
    inference = sum(v.inference_seconds for v in videos)
    return {"video": {
        "frames": frames, "seconds": round(wall, 3),
        "decode_seconds": round(sum(v.decode_seconds for v in videos), 3),
        "inference_seconds": round(inference, 3),
        "encode_seconds": round(sum(v.encode_seconds for v in videos), 3),
        "end_to_end_fps": round(frames / wall, 3) if wall else None,
        "model_fps": round(frames / inference, 3) if inference else None,
        "resumed_from_frame": [v.resumed_from_frame for v in videos],
        **_dedup_summary(videos),
    }}


def _dedup_summary(videos) -> dict:
    """Frames reused by --dedup and the network time that saved: an estimate, reused frames times the
    measured network seconds per upscaled frame of the same video."""
    reused = sum(v.frames - v.frames_upscaled for v in videos)
    if not reused:
        return {}
    saved = sum((v.frames - v.frames_upscaled) * v.inference_seconds / v.frames_upscaled
                for v in videos if v.frames_upscaled)
    return {"frames_reused": reused, "frames_upscaled": sum(v.frames_upscaled for v in videos),
            "estimated_seconds_saved": round(saved, 3)}


def _print_summary(report: dict) -> None:
    done, failed, skipped = report["files"], report["failed"], report["skipped"]
    tile = "whole image" if not report["tile"] else f"{report['tile']} px"
    rate = report["megapixels_out_per_second"]
    stderr.print(f"[bold green]done[/]: {done} file{'s' if done != 1 else ''}"
                 + (f", {len(skipped)} skipped" if skipped else "")
                 + (f", [bold red]{len(failed)} failed[/]" if failed else "")
                 + f" in {report['seconds']:.2f} s")
    stderr.print(f"  {report['megapixels_in']:.2f} MP in -> {report['megapixels_out']:.2f} MP out"
                 + (f", {rate:.3f} MP/s" if rate else ""))
    stderr.print(f"  model {report['model']} ({report['arch']} x{report['scale']}) on {report['device']}, "
                 f"{report['precision']}, tile {tile}, batch {report['batch']}"
                 + (", tta" if report["tta"] else "") + (", compiled" if report["compiled"] else "")
                 + (", onnxruntime" if report["backend"] == "onnxruntime" else ""))
    if "video" in report:
        v = report["video"]
        stderr.print(f"  video: {v['frames']} frames in {v['seconds']:.2f} s = {v['end_to_end_fps']} fps end to end "
                     f"(model alone {v['model_fps']} fps); decode {v['decode_seconds']:.2f} s, inference "
                     f"{v['inference_seconds']:.2f} s, encode {v['encode_seconds']:.2f} s (overlapping)")
        if "frames_reused" in v:
            stderr.print(f"  dedup: {v['frames_reused']} of {v['frames']} frames reused (not upscaled again), "
                         f"about {v['estimated_seconds_saved']:.2f} s of network time saved (estimate)")
    if report["fp32_fallbacks"]:
        stderr.print(f"  {report['fp32_fallbacks']} tile batch(es) recomputed in fp32 after NaN/Inf in half precision")
    if report["ignored"]:
        from ..pipeline.jobs import kinds_of

        count = len(report["ignored"])
        stderr.print(f"  left alone: {count} file{'s' if count != 1 else ''} that lightsr does not read "
                     f"({kinds_of(report['ignored'])}); --json lists them", highlight=False)
    for failure in failed:
        stderr.print(f"  [red]failed[/]: {failure['input']}: {failure['error']}", markup=True, highlight=False)
