"""Score every model with weights on Set5/Set14 (PSNR-Y/SSIM-Y, the papers' protocol) and write a results file.

    LIGHTSR_WEIGHTS_MIRROR=../shared/weights/official python benchmarks/quality.py \\
        --benchmarks ../shared/data/benchmarks --out benchmarks/results-quality.json [--models ...] [--tta ...]

Each row puts our measured score next to the official code's (official_scores.json) and the
difference; --tta models are also scored with the 8-way self-ensemble on Set5. Rows are appended
as they finish, so a long run can be stopped and restarted (finished rows are skipped).

--backend onnxruntime scores the exported graphs instead (issue #15: within 0.01 dB of torch);
--against names the torch results file whose scores each row is compared with:

    LIGHTSR_WEIGHTS_MIRROR=../shared/weights/official python benchmarks/quality.py \
        --benchmarks ../shared/data/benchmarks --datasets Set5 --backend onnxruntime \
        --against benchmarks/results-quality.json --out benchmarks/results-quality-onnxruntime.json

--precision fp16|bf16 scores the torch path in half precision on the CPU (what ``--precision auto`` picks
for the models in engine.backends.MEASURED_CPU_HALF[fp16|bf16] on CPUs that multiply it in hardware);
architectures not proven safe in that precision are left out. Compared with the fp32 file:

    LIGHTSR_WEIGHTS_MIRROR=../shared/weights/official python benchmarks/quality.py \
        --benchmarks ../shared/data/benchmarks --precision bf16 \
        --against benchmarks/results-quality.json --out benchmarks/results-quality-cpu-avx512-bf16.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lightsr_cli.archs import get_spec
from lightsr_cli.pipeline.evaluation import evaluate
from lightsr_cli.pipeline.loading import EngineSettings, load_engine
from lightsr_cli.registry import CARDS, get_card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="*", default=[c.id for c in CARDS if c.reference_psnr])
    parser.add_argument("--datasets", nargs="*", default=["Set5", "Set14"])
    parser.add_argument("--tta", nargs="*", default=[], help="models to score with --tta on Set5 as well")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--against", type=Path, help="a torch results file to compare each score with")
    args = parser.parse_args()
    if args.backend != "torch":  # an architecture without a dynamic-size graph (GRL) has no onnxruntime path
        args.models = [m for m in args.models if not get_spec(get_card(m).arch).onnx_fixed_size]
    if args.precision != "fp32":
        safe = "fp16_safe" if args.precision == "fp16" else "bf16_safe"
        args.models = [m for m in args.models if getattr(get_spec(get_card(m).arch), safe)]
    reference = {(r["model"], r["dataset"], r["tta"]): r["psnr_y"]
                 for r in (json.loads(args.against.read_text()) if args.against else [])}
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["model"], r["dataset"], r["tta"]) for r in rows}
    jobs = [(m, d, False) for m in args.models for d in args.datasets] + [(m, "Set5", True) for m in args.tta]
    for model_id, dataset, tta in jobs:
        if (model_id, dataset, tta) in done:
            continue
        card = get_card(model_id)
        engine = load_engine(card, EngineSettings(device="cpu", precision=args.precision, tile=0, tta=tta,
                                                  backend=args.backend))
        started = time.perf_counter()
        score = evaluate(engine, args.benchmarks / dataset)
        official = card.reference_psnr.get(dataset)
        rows.append({"model": model_id, "dataset": dataset, "tta": tta, "psnr_y": round(score.psnr_y, 4),
                     "ssim_y": round(score.ssim_y, 4), "official_psnr_y": official,
                     "official_ssim_y": card.reference_ssim.get(dataset),
                     "diff_db": round(score.psnr_y - official, 4) if official is not None else None,
                     "backend": args.backend, "precision": engine.precision, "seconds": round(time.perf_counter() - started, 1)})
        torch_score = reference.get((model_id, dataset, tta))
        if torch_score is not None:
            rows[-1]["torch_psnr_y"] = torch_score
            rows[-1]["diff_vs_torch_db"] = round(score.psnr_y - torch_score, 4)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
