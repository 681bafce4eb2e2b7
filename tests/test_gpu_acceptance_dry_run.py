"""benchmarks/gpu_acceptance.py --dry-run: the GPU proof script runs on the CPU, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_acceptance_dry_run_passes_and_writes_its_result(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_acceptance.py"), "--dry-run",
                           "--data", str(tmp_path / "no-data"), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["failed"] == []
    checks = report["checks"]
    assert {"cuda_tests", "parity", "quality", "forced_overflow", "bsrn_4k", "oom_recovery", "two_engines",
            "bench_vs_events", "sanitizer", "speed", "onnxruntime"} <= set(checks)
    assert checks["oom_recovery"]["first_call_retries"] >= 1 and checks["oom_recovery"]["second_call_retries"] == 0
    assert checks["forced_overflow"]["fp32_fallbacks"] >= 1
    assert checks["onnxruntime"]["status"] in ("pass", "skip")
