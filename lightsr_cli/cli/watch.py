"""`lightsr watch IN_DIR -o OUT_DIR`: keep the model loaded and upscale files as they appear."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer

from ..checkpoints import resolve_card
from ..errors import UsageError
from . import options
from .handling import handles_errors
from .render import RichReporter, print_json, stderr


@handles_errors
def watch(
    ctx: typer.Context,
    in_dir: Path = typer.Argument(..., metavar="IN_DIR", help="The folder to watch."),
    output: Path = typer.Option(..., "--output", "-o", help="Where the results go (created if missing; outside IN_DIR)."),
    scale: Optional[int] = options.SCALE,
    model: Optional[str] = options.MODEL,
    preset: Optional[options.Preset] = options.PRESET,
    weights_file: Optional[Path] = options.WEIGHTS,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Watch subfolders too; the output tree mirrors them."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Appended to output names (default _x{scale})."),
    image_format: Optional[options.ImageFormat] = options.IMAGE_FORMAT,
    quality: Optional[int] = options.QUALITY,
    outscale: Optional[float] = typer.Option(None, "--outscale", min=0.01, help="Resize the result to this final factor."),
    fit: Optional[str] = options.FIT,
    fill: Optional[str] = options.FILL,
    width: Optional[int] = options.WIDTH,
    height: Optional[int] = options.HEIGHT,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that exist already."),
    existing: bool = typer.Option(True, "--existing/--no-existing", help="Also upscale the files already in IN_DIR "
                                  "(those whose output does not exist yet)."),
    stable_seconds: float = typer.Option(2.0, "--stable-seconds", min=0.01, help="A file is read once its size and "
                                         "time have not changed for this long."),
    poll: bool = typer.Option(False, "--poll", help="Rescan the folder instead of waiting for filesystem events "
                              "(network mounts); also used when watchfiles is not installed."),
    tile: Optional[int] = options.TILE,
    batch: int = options.BATCH,
    device: str = options.DEVICES,
    precision: options.Precision = options.PRECISION,
    tta: bool = options.TTA,
    compile_network: bool = options.COMPILE,
    codec: str = typer.Option("libx264", "--codec", help="Video encoder for videos dropped in.", rich_help_panel="Video"),
    as_json: bool = typer.Option(False, "--json", help="Print one summary on stdout when the watch stops."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-file lines (errors still print)."),
) -> None:
    """Upscale every image or video that appears in IN_DIR, once it is completely written, into OUT_DIR.

    The model stays loaded. Files already there are done first (--no-existing leaves them). Bad
    files are reported and the watch goes on; Ctrl-C stops it (exit 130) and leaves no partial file.
    """
    if scale is not None and scale not in (2, 3, 4):
        raise UsageError(f"--scale must be 2, 3 or 4, not {scale}", hint="use --outscale for other final sizes")
    from ..media.video import VideoEncodeSettings
    from ..pipeline.images import OutputSettings
    from ..pipeline.jobs import NamingSettings
    from ..pipeline.limits import PixelLimits
    from ..pipeline.loading import EngineSettings, load_pool
    from ..pipeline.sizing import target_from_options
    from ..pipeline.video import VideoSettings
    from ..pipeline.watch import FolderWatch, WatchSettings, check_folders
    from ..settings import read_settings

    check_folders(in_dir, output, recursive)
    target = target_from_options(fit, fill, width, height, outscale)
    # Sizes of files to come are unknown: with a target size and no model named, the preset's x4 model.
    card = resolve_card(model, preset.value if preset else None, weights_file, scale)
    suffix_text = suffix if suffix is not None else (target.label if target else "_x{scale}")
    naming = NamingSettings(suffix_text.replace("{scale}", f"{outscale or card.scale:g}"),
                            image_format.value if image_format else None)
    env = read_settings()
    settings = OutputSettings(image_format=naming.image_format, quality=quality, outscale=outscale,
                              overwrite=overwrite, limits=PixelLimits(env.max_input_megapixels,
                                                                      env.max_output_megapixels), target=target)
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    engine_settings = EngineSettings(device=device, precision=precision.value, tile=tile, batch=batch, tta=tta,
                                     compile=compile_network)
    with RichReporter(quiet=quiet, debug=debug) as reporter:
        pool = load_pool(card, engine_settings, reporter, weights_path=weights_file)
        output.mkdir(parents=True, exist_ok=True)
        folder_watch = FolderWatch(pool, in_dir, output, naming, settings,
                                   VideoSettings(VideoEncodeSettings(codec)),
                                   WatchSettings(stable_seconds, existing, poll, recursive), reporter)
        try:
            folder_watch.run(threading.Event())
        finally:
            summary = folder_watch.summary
            if as_json:
                print_json({"model": card.id, "done": [str(j.target) for j in summary.done],
                            "failed": [str(j.source) for j in summary.failed],
                            "skipped": [str(j.source) for j in summary.skipped]})
            elif not quiet:
                stderr.print(f"watch stopped: {len(summary.done)} done, {len(summary.failed)} failed, "
                             f"{len(summary.skipped)} skipped")
