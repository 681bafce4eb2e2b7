"""Hand-written mutants: break one feature at a time in a copy of the repo and run the tests that
should notice. A mutant the tests miss ("survived") is a gap in the suite.

    python tools/mutation_check.py                    # every mutant -> tools/mutation-results.json
    python tools/mutation_check.py tta-ignored alpha  # only these (names or substrings)

Each mutant names a code pattern, not a file: the script finds the one file under lightsr_cli/
that contains it, so mutants survive modules moving into packages. A pattern found nowhere is
reported as "not-applied" (update the mutant), never silently skipped. Not part of CI's test
command: it runs the relevant tests once per mutant (minutes). Survivors are explained in
tools/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GAPS = "tests/test_mutation_gaps.py"
CLAIMS = "tests/test_claims.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    find: str
    replace: str
    tests: tuple[str, ...]


MUTANTS = [
    # -- the audit's table (issue 17) --------------------------------------------------------------
    Mutant("tta-ignored", "the engine ignores --tta",
           "if self.tta:", "if False:",
           (f"{GAPS}::test_tta_averages_the_eight_transforms_of_a_non_equivariant_network",
            f"{GAPS}::test_tta_flag_reaches_the_engine_from_the_cli")),
    Mutant("16bit-over-255", "16-bit pixels scaled by 1/255 instead of 1/65535",
           "frames.astype(np.float32) / 65535.0", "frames.astype(np.float32) / 255.0",
           (f"{GAPS}::test_sixteen_bit_pixels_are_scaled_by_65535",
            f"{GAPS}::test_sixteen_bit_png_matches_its_eight_bit_twin_through_the_cli")),
    Mutant("video-batch-reversed", "each batch of video frames returned in reverse order",
           "results = list(upscale_rgb(engine, np.stack(batch)))",
           "results = list(upscale_rgb(engine, np.stack(batch)))[::-1]",
           (f"{GAPS}::test_video_frames_are_the_input_frames_upscaled_in_order",)),
    Mutant("resume-starts-over", "--resume ignores finished segments and starts over",
           "first_segment = parts.start(settings.resume)", "first_segment = parts.start(False)",
           (f"{GAPS}::test_resume_reuses_finished_segments",)),
    Mutant("avi-refusal-crashes", "the .avi-cannot-hold-subtitles refusal replaced by a crash",
           'raise StreamCopyError(f".avi output cannot hold subtitles',
           'raise RuntimeError(f".avi output cannot hold subtitles',
           (f"{GAPS}::test_avi_refuses_subtitles_with_its_own_message",)),
    Mutant("audio-reencoded", "audio re-encoded to AAC instead of copied",
           'if stream.kind == "audio":\n            codec = "copy"',
           'if stream.kind == "audio":\n            codec = "aac"',
           (f"{GAPS}::test_audio_is_stream_copied_packet_for_packet",)),
    Mutant("alpha-lanczos", "alpha resized with Lanczos instead of through the network",
           "upscaled_alpha = upscale_pixels(engine, alpha, reporter)",
           "upscaled_alpha = __import__('cv2').resize(alpha, color.shape[1::-1], interpolation=4)",
           (f"{GAPS}::test_alpha_goes_through_the_network_not_a_resize",)),
    # -- engine ----------------------------------------------------------------------------------
    Mutant("tta-rotation-not-undone", "TTA undoes the flip but rotates the wrong way back",
           "result = torch.rot90(result, -rotations, dims=(-2, -1))",
           "result = torch.rot90(result, rotations, dims=(-2, -1))",
           (f"{GAPS}::test_tta_averages_the_eight_transforms_of_a_non_equivariant_network",)),
    Mutant("nan-guard-off", "NaN/Inf outputs of half precision are not recomputed in fp32",
           "if bool(launched.finite):", "if True:",
           ("tests/test_engine.py::test_nan_in_half_precision_is_recomputed_in_fp32",)),
    Mutant("tiles-not-blended", "tiles pasted over each other instead of blended",
           "].addcmul_(result, ramps[(r, c)])", "].copy_(result)",
           ("tests/test_engine.py::test_tiled_equals_untiled_for_a_local_network",)),
    Mutant("input-range-not-undone", "a 0-255 network's output is not scaled back to 0-1",
           "y = y / self.spec.input_range", "y = y",
           ("tests/test_engine.py::test_input_range_is_applied_around_the_network",)),
    Mutant("oom-not-retried", "out of memory is not retried with a smaller tile",
           "if not is_out_of_memory(error):\n                    raise", "if True:\n                    raise",
           ("tests/test_engine.py::test_out_of_memory_halves_the_tile_until_it_fits",)),
    # -- pixels ----------------------------------------------------------------------------------
    Mutant("gray-takes-first-channel", "gray output takes the red channel instead of the mean",
           "np.round(result.astype(np.float32).mean(axis=2)).astype(pixels.dtype)", "result[:, :, 0]",
           (f"{GAPS}::test_sixteen_bit_pixels_are_scaled_by_65535",
           f"{GAPS}::test_gray_is_the_mean_of_the_networks_three_channels")),
    Mutant("constant-alpha-through-network", "a varying alpha plane is filled with its first value",
           "if alpha.min() == alpha.max():", "if True:",
           (f"{GAPS}::test_alpha_goes_through_the_network_not_a_resize",)),
    Mutant("uint16-not-rounded", "16-bit results truncated instead of rounded",
           "result = engine.upscale(scaled, reporter).clamp(0, 1).mul(65535.0).round()",
           "result = engine.upscale(scaled, reporter).clamp(0, 1).mul(65535.0)",
           (f"{GAPS}::test_sixteen_bit_pixels_are_scaled_by_65535",)),
    # -- video pipeline ---------------------------------------------------------------------------
    Mutant("queues-unbounded", "the frame queues are unbounded (memory grows with the video)",
           "queue.Queue(maxsize=2 * engine.batch * len(pool) + 2)", "queue.Queue()",
           (f"{CLAIMS}::test_memory_stays_bounded_for_long_videos",)),
    Mutant("video-outscale-ignored", "video --outscale ignored (frames keep the network's scale)",
           "if outscale and outscale != engine.scale:\n            results = [", "if False:\n            results = [",
           (f"{CLAIMS}::test_libx265_and_outscale_for_video",)),
    Mutant("segments-joined-reversed", "segments joined in reverse order",
           "video.concat_segments([parts.segment(i) for i in range(math.ceil(info.frame_count / per_segment))]",
           "video.concat_segments([parts.segment(i) for i in\n"
           "                       reversed(range(math.ceil(info.frame_count / per_segment)))]",
           (f"{GAPS}::test_resume_reuses_finished_segments",)),
    Mutant("vfr-times-dropped", "variable-rate frames are encoded at a constant rate (issue 11 item 4)",
           "timing = video.segment_timing(info, video.segment_frame_range(index, per_segment, total))",
           "timing = None",
           ("tests/test_video_timing.py::test_variable_frame_rate_keeps_every_frame_time",)),
    Mutant("hdr-side-data-dropped", "HDR10 mastering display / MaxCLL not given to the encoder",
           "source.hdr if source is not None else None), *self._copy_args]", "None), *self._copy_args]",
           ("tests/test_video_timing.py::test_hdr10_keeps_transfer_primaries_and_side_data_at_ten_bits",)),
    Mutant("resume-plan-ignores-tta", "a resume with other settings (--tta) reuses the old segments",
           '"precision": engine.precision, "tta": engine.tta,', '"precision": engine.precision,',
           ("tests/test_video_pipeline.py", "tests/test_device_pool.py",
           f"{GAPS}::test_resume_reuses_finished_segments")),
    Mutant("subtitles-dropped", "subtitle streams are not copied",
           'elif stream.kind == "subtitle":\n            codec = _subtitle_codec_for(suffix, stream)',
           'elif stream.kind == "subtitle":\n            continue',
           (f"{GAPS}::test_subtitle_text_and_timing_are_preserved",)),
    # -- CLI ----------------------------------------------------------------------------------------
    Mutant("crash-exits-1", "the catch-all crash handler exits 1 like a user error",
           "raise typer.Exit(int(ExitCode.INTERNAL))", "raise typer.Exit(int(ExitCode.FAILURE))",
           (f"{CLAIMS}::test_a_crash_gets_its_own_exit_code_and_never_passes_for_a_user_error",)),
    Mutant("quality-ignored", "--quality is not passed on to the encoder",
           "quality=quality, outscale=outscale", "quality=None, outscale=outscale",
           (f"{CLAIMS}::test_quality_sets_the_jpeg_quantization",)),
    # -- weights (patterns in public functions: they hold wherever weights.py's code moves) --------
    Mutant("sha256-not-checked", "a download with the wrong sha256 is accepted",
           "if sha256 is not None and digest.sha256 != sha256.lower():", "if False:",
           ("tests/test_weights.py", f"{CLAIMS}::test_models_download_verify_and_rm")),
    Mutant("pickle-allowed", "checkpoints loaded with weights_only=False (pickled code runs)",
           'torch.load(path, map_location="cpu", weights_only=True)',
           'torch.load(path, map_location="cpu", weights_only=False)',
           ("tests/test_checkpoints.py::test_malicious_pickle_is_refused",)),
]


def _copy_repo(destination: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.pyc", ".ruff_cache")
    shutil.copytree(REPO, destination, ignore=ignore, symlinks=True)


def _locate(root: Path, pattern: str) -> list[Path]:
    return [path for path in sorted((root / "lightsr_cli").rglob("*.py")) if pattern in path.read_text()]


def _shared_dir() -> str | None:
    for candidate in (os.environ.get("LIGHTSR_SHARED_DIR"), REPO.parent / "shared", REPO / "shared"):
        if candidate and (Path(candidate) / "weights" / "official").is_dir():
            return str(Path(candidate).resolve())
    return None


def run_mutant(mutant: Mutant, timeout: float) -> dict:
    started = time.perf_counter()
    result = {"mutant": mutant.name, "what": mutant.what, "tests": list(mutant.tests)}
    with tempfile.TemporaryDirectory(prefix=f"lightsr-mutant-{mutant.name}-") as temp:
        copy = Path(temp) / "repo"
        _copy_repo(copy)
        files = _locate(copy, mutant.find)
        if len(files) != 1:
            result.update(file=[str(f.relative_to(copy)) for f in files], status="not-applied",
                          detail=f"pattern found in {len(files)} files (expected exactly 1)")
            return result
        path = files[0]
        text = path.read_text()
        if text.count(mutant.find) != 1 and mutant.name != "queues-unbounded":
            result.update(file=str(path.relative_to(copy)), status="not-applied",
                          detail=f"pattern occurs {text.count(mutant.find)} times")
            return result
        path.write_text(text.replace(mutant.find, mutant.replace))
        result["file"] = str(path.relative_to(copy))
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        shared = _shared_dir()
        if shared:
            env["LIGHTSR_SHARED_DIR"] = shared
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests]
        try:
            done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
            tail = [line for line in done.stdout.splitlines() if line.strip()][-3:]
            # pytest exit codes: 0 all passed, 1 some failed, 2-4 interrupted/usage, 5 nothing collected.
            status = {0: "survived", 1: "killed"}.get(done.returncode, f"error (pytest exit {done.returncode})")
            result.update(status=status, pytest_summary=tail[-1] if tail else "")
            if status == "killed":
                failed = [line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
                result["failed"] = failed
        except subprocess.TimeoutExpired:
            result.update(status="killed (timeout)", detail=f"the tests ran past {timeout:.0f} s")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="mutant names (or parts of names) to run; default: all")
    parser.add_argument("--out", type=Path, default=REPO / "tools" / "mutation-results.json")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(part in m.name for part in args.only)]
    results = []
    for mutant in chosen:
        outcome = run_mutant(mutant, args.timeout)
        results.append(outcome)
        print(f"{outcome['status']:<10} {outcome.get('seconds', '-'):>7} s  {mutant.name}: "
              f"{mutant.what}", flush=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() and args.only else {"mutants": []}
    merged = {r["mutant"]: r for r in previous.get("mutants", [])}
    merged.update({r["mutant"]: r for r in results})
    order = [m.name for m in MUTANTS]
    report = {
        "command": "python tools/mutation_check.py" + (" " + " ".join(args.only) if args.only else ""),
        "python": sys.version.split()[0],
        "mutants": sorted(merged.values(), key=lambda r: order.index(r["mutant"]) if r["mutant"] in order else 999),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    survivors = [r["mutant"] for r in results if r["status"] != "killed" and not r["status"].startswith("killed")]
    print(f"{len(results) - len(survivors)} of {len(results)} killed; not killed: {survivors or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
