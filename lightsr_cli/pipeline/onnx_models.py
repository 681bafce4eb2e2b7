"""Model cards -> ONNX graphs: `lightsr models export --onnx`, and the cached graphs of `--backend onnxruntime`.

A cached graph lives in the user cache beside the checkpoints (``<cache>/onnx/``), named by what
makes it: model, precision, opset, lightsr version and the checkpoint's sha256. It is exported under
the checkpoint's file lock (two processes never export the same graph at once; the second waits and
then finds it), verified against the torch network before it is renamed into place (three inputs,
one of them a natural-statistics image, see ``engine.onnx_export``), and recorded with its own
sha256 in a JSON file beside it: a graph whose bytes no longer match is exported again.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from ..archs import get_spec
from ..engine.onnx_export import DEFAULT_OPSET, ExportResult, ExportSettings, export_onnx
from ..errors import UsageError
from ..fs import write_bytes
from ..progress import NullReporter, Reporter
from ..registry import ModelCard
from ..settings import read_settings
from ..weights import ensure_weights, file_digest, file_lock
from .loading import EngineSettings, load_network


def lightsr_version() -> str:
    """The installed lightsr's version (part of every cache key: a new lightsr exports again)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightsr")
    except PackageNotFoundError:
        return "0+unknown"


PADDING_RULE = ("pad the input at the bottom and right to at least min_size and to a multiple of size_multiple "
                "(reflect, or replicate where the padding is not smaller than the side), crop the output to "
                "scale x the unpadded size")


def weights_file(card: ModelCard, weights_path: Path | None, reporter: Reporter) -> tuple[Path, str]:
    """The verified checkpoint file and its sha256 (a registry card's pinned hash, else the file's)."""
    path = weights_path or ensure_weights(card, reporter).path
    sha256 = card.checkpoint.sha256 if weights_path is None and card.checkpoint.sha256 else None
    return path, sha256 or file_digest(path).sha256


def onnx_metadata(card: ModelCard, sha256: str, settings: ExportSettings) -> dict[str, str]:
    """What a consumer of the file needs to run it right, as ONNX metadata_props."""
    spec = get_spec(card.arch)
    return {
        "lightsr.model_id": card.id, "lightsr.architecture": card.arch, "lightsr.scale": str(card.scale),
        "lightsr.hyperparameters": json.dumps(dict(card.hyperparameters), sort_keys=True),
        "lightsr.input": "float RGB, N x 3 x H x W, range 0-1",
        "lightsr.output": "float RGB, N x 3 x (scale*H) x (scale*W), range 0-1 (not clamped)",
        "lightsr.network_input_range": f"0-{spec.input_range:g} (folded into the graph)",
        "lightsr.size_multiple": str(spec.size_multiple), "lightsr.min_size": str(spec.min_size),
        "lightsr.padding": PADDING_RULE, "lightsr.tile_overlap": str(spec.tile_overlap),
        "lightsr.precision": "fp16" if settings.fp16 else "fp32", "lightsr.opset": str(settings.opset),
        "lightsr.dynamic_size": "no: " + "x".join(map(str, settings.static)) if settings.static else "yes",
        "lightsr.license": card.license, "lightsr.weights_sha256": sha256, "lightsr.version": lightsr_version(),
        "lightsr.description": f"{card.id}: {card.arch} x{card.scale} super-resolution, exported by lightsr "
                               f"{lightsr_version()}",
    }


def export_model(card: ModelCard, target: Path, settings: ExportSettings, *, weights_path: Path | None = None,
                 overwrite: bool = False, reporter: Reporter | None = None) -> ExportResult:
    """`lightsr models export --onnx`: one verified ONNX file at ``target``."""
    reporter = reporter or NullReporter()
    if target.exists() and not overwrite:
        from ..fs import output_exists_error

        raise output_exists_error(target)
    path, sha256 = weights_file(card, weights_path, reporter)
    network = load_network(card, reporter, path)
    return export_onnx(network, get_spec(card.arch), card.scale, target, settings,
                       onnx_metadata(card, sha256, settings), overwrite=overwrite)


def cached_graph_path(card: ModelCard, sha256: str, fp16: bool, opset: int = DEFAULT_OPSET) -> Path:
    """Where the backend's graph for this checkpoint, precision, opset and lightsr version is cached."""
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", card.id)
    name = f"{safe_id}-{'fp16' if fp16 else 'fp32'}-opset{opset}-lightsr{lightsr_version()}-{sha256[:16]}.onnx"
    return read_settings().cache_dir / "onnx" / name


def _record_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def _trusted(graph: Path) -> bool:
    """Whether a cached graph is there and its bytes are the ones that passed verification."""
    try:
        record = json.loads(_record_path(graph).read_text())
        return graph.is_file() and file_digest(graph).sha256 == record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_graph(card: ModelCard, weights_path: Path | None, fp16: bool, reporter: Reporter | None = None,
                 opset: int = DEFAULT_OPSET) -> Path:
    """The verified cached graph of a card, exported (once, under a lock) when missing or damaged."""
    reporter = reporter or NullReporter()
    path, sha256 = weights_file(card, weights_path, reporter)
    graph = cached_graph_path(card, sha256, fp16, opset)
    if _trusted(graph):
        return graph
    with file_lock(graph, reporter=reporter):
        if _trusted(graph):  # another process exported it while this one waited
            return graph
        reporter.note(f"exporting {card.id} to ONNX for onnxruntime (once; cached in {graph.parent})")
        settings = ExportSettings(opset=opset, fp16=fp16)
        result = export_onnx(load_network(card, reporter, path), get_spec(card.arch), card.scale, graph, settings,
                             onnx_metadata(card, sha256, settings), overwrite=True)
        record = {"sha256": file_digest(graph).sha256, "checks": [asdict(check) for check in result.checks]}
        write_bytes(_record_path(graph), json.dumps(record, indent=1).encode(), overwrite=True)
    return graph


def load_onnx_engine(card: ModelCard, settings: EngineSettings, reporter: Reporter | None = None,
                     weights_path: Path | None = None, device: str | None = None):
    """An OnnxEngine for a card: providers from ``--device``, the cached graph, sessions."""
    from ..engine.onnx_engine import OnnxEngine, choose_providers, make_session

    reporter = reporter or NullReporter()
    if settings.compile:
        raise UsageError("{--compile} is a torch feature", hint="drop it, or use {--backend torch}")
    spec = get_spec(card.arch)
    if spec.onnx_fixed_size:
        raise UsageError(f"{card.arch} does not run on {{--backend onnxruntime}}: {spec.onnx_fixed_size}",
                         hint="use {--backend torch}")
    choice = choose_providers(device or settings.device)
    requested = (settings.precision or "auto").lower()
    on_gpu = choice.providers[0] != "CPUExecutionProvider"
    fp16 = on_gpu and spec.fp16_safe and requested in ("auto", "fp16")
    if requested not in ("auto", "fp32", "fp16", "tf32"):
        raise UsageError(f"{{--precision {requested}}} is not available with {{--backend onnxruntime}}",
                         hint="use fp32 or fp16")
    graph = cached_graph(card, weights_path, fp16, reporter)
    session = make_session(graph, choice)
    fp32_session = make_session(cached_graph(card, weights_path, False, reporter), choice) if fp16 else None
    engine = OnnxEngine(session, spec, card.scale, choice=choice, fp16=fp16, fp32_session=fp32_session,
                        tile=settings.tile, batch=settings.batch, tta=settings.tta)
    if requested == "fp16" and not fp16:
        engine.stats.notes.append("fp16 with onnxruntime only on a GPU provider and for fp16-safe networks; "
                                  "using fp32")
    return engine
