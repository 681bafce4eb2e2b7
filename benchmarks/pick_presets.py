"""Pick the fast / balanced / quality presets from `lightsr bench --json` output and Set14 PSNR.

    lightsr bench --all --json > bench.json
    python benchmarks/pick_presets.py bench.json benchmarks/results-quality.json

Time per model = the lower of its model-only and end-to-end medians (on a shared machine, load only
ever adds time). Prints the table for registry.PRESET_MODELS; the rule is in lightsr_cli/presets.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightsr_cli.presets import Measured, pick_presets
from lightsr_cli.registry import get_card
from lightsr_cli.weights import embedded_path


def measured_from(bench: dict | list, quality: list) -> list[Measured]:
    """`lightsr bench --json` rows (or a results file holding them) + results-quality.json -> Measured."""
    bench = bench["rows"] if isinstance(bench, dict) else bench
    psnr = {r["model"]: r["psnr_y"] for r in quality if r["dataset"] == "Set14" and not r["tta"]}
    for row in bench:  # not scored yet: the official code's score, which our eval reproduces
        psnr.setdefault(row["model"], get_card(row["model"]).reference_psnr.get("Set14"))
    psnr = {model: value for model, value in psnr.items() if value is not None}
    return [Measured(row["model"], row["scale"], psnr[row["model"]], min(row["model_ms"], row["end_to_end_ms"]),
                     embedded_path(get_card(row["model"])) is not None)
            for row in bench if row["model"] in psnr]


def main() -> None:
    measured = measured_from(json.loads(Path(sys.argv[1]).read_text()), json.loads(Path(sys.argv[2]).read_text()))
    for m in sorted(measured, key=lambda m: (m.scale, m.milliseconds)):
        print(f"{m.model_id:15s} x{m.scale} {m.milliseconds:10.1f} ms {m.psnr:8.4f} dB  shippable={m.shippable}")
    print(json.dumps(pick_presets(measured), indent=1))


if __name__ == "__main__":
    main()
