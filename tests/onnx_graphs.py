"""Exported ONNX graphs shared by the ONNX tests: each model exported once per test session.

Graphs go into one session folder; ``install_cached`` copies one (with its verification record)
into the current test's isolated cache, where ``--backend onnxruntime`` looks for it, so pipeline
tests do not export again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime (lightsr[onnx]) is not installed")

from lightsr_cli.engine.onnx_export import ExportResult, ExportSettings  # noqa: E402
from lightsr_cli.pipeline import onnx_models  # noqa: E402
from lightsr_cli.progress import NullReporter  # noqa: E402
from lightsr_cli.registry import get_card  # noqa: E402
from lightsr_cli.weights import file_digest  # noqa: E402

_FOLDER = Path(tempfile.mkdtemp(prefix="lightsr-onnx-tests-"))
_EXPORTED: dict[tuple[str, bool], ExportResult] = {}


def exported(model_id: str, weights: Path | None = None, fp16: bool = False) -> ExportResult:
    """The verified fp32 (or fp16) graph of a model (weights: the card's own, or this file)."""
    key = (model_id, fp16)
    if key not in _EXPORTED:
        target = _FOLDER / f"{model_id}-{'fp16' if fp16 else 'fp32'}.onnx"
        _EXPORTED[key] = onnx_models.export_model(get_card(model_id), target, ExportSettings(fp16=fp16),
                                                  weights_path=weights, overwrite=True)
    return _EXPORTED[key]


def install_cached(model_id: str, weights: Path | None = None) -> Path:
    """Put a model's fp32 graph where the backend's cache (this test's LIGHTSR_CACHE_DIR) expects it."""
    result = exported(model_id, weights)
    card = get_card(model_id)
    _path, sha256 = onnx_models.weights_file(card, weights, NullReporter())
    target = onnx_models.cached_graph_path(card, sha256, fp16=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.path, target)
    record = {"sha256": file_digest(target).sha256, "checks": [asdict(check) for check in result.checks]}
    target.with_name(target.name + ".json").write_text(json.dumps(record))
    return target
