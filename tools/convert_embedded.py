"""Build the checkpoints shipped in weights/ from the official BSRN files (MIT, xiaom233/BSRN).

    python tools/convert_embedded.py [--source DIR] [--out DIR]

Each official .pth is checked against its model card's sha256, loaded safely (weights_only), its
"params" state dict written as <card id>.safetensors with arch/scale/hyperparameters and
provenance in the header, read back and compared tensor by tensor. weights/PROVENANCE.md and
weights/LICENSE-BSRN are rewritten. The output is reproducible: running it twice changes nothing.

Only redistributable cards are ever embedded: A2N and PlainUSR have no license upstream.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lightsr_cli.checkpoints import convert_to_safetensors, load_state_dict  # noqa: E402
from lightsr_cli.registry import ModelCard, get_card  # noqa: E402
from lightsr_cli.weights import file_digest  # noqa: E402

EMBEDDED_IDS = ("bsrn-x2", "bsrn-x3", "bsrn-x4", "bsrn-s-x4")
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "weights" / "official"
UPSTREAM_REPO = "https://github.com/xiaom233/BSRN"

BSRN_LICENSE = """MIT License

Copyright (c) 2022 Hoven Li

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def convert(card: ModelCard, source_dir: Path, out_dir: Path) -> str:
    """Convert one official file; return the sha256 of the safetensors file written."""
    if not card.redistributable:
        raise SystemExit(f"{card.id}: {card.license} - not redistributable, never embedded")
    source = source_dir / card.mirror_path
    upstream = file_digest(source)
    if upstream.sha256 != card.checkpoint.sha256:
        raise SystemExit(f"{source}: sha256 {upstream.sha256} differs from the card's {card.checkpoint.sha256}")
    dest = out_dir / f"{card.id}.safetensors"
    convert_to_safetensors(source, dest, {
        "model_id": card.id,
        "source_url": card.checkpoint.url,
        "upstream_sha256": upstream.sha256,
        "license": f"{card.license} ({UPSTREAM_REPO}, see LICENSE-BSRN)",
    }, card=card)
    original, converted = load_state_dict(source), load_state_dict(dest)
    if original.keys() != converted.keys() or any(not original[k].equal(converted[k]) for k in original):
        raise SystemExit(f"{dest}: read back differently from {source}")
    return file_digest(dest).sha256


def provenance(rows: list[tuple[ModelCard, str]]) -> str:
    lines = [
        "# Embedded checkpoints",
        "",
        "Shipped with lightsr so the default presets work offline. Each file is the official checkpoint's",
        '`"params"` state dict, unchanged, re-saved as safetensors by `tools/convert_embedded.py`',
        "(header metadata: arch, scale, hyperparameters, source URL, upstream sha256, license).",
        "Only models whose upstream repository grants a license are embedded (A2N and PlainUSR have none).",
        "",
        "| file | source URL | upstream sha256 | our safetensors sha256 | license |",
        "| --- | --- | --- | --- | --- |",
    ]
    for card, ours in rows:
        lines.append(f"| {card.id}.safetensors | {card.checkpoint.url} | {card.checkpoint.sha256} | {ours} "
                     f"| {card.license} ([LICENSE-BSRN](LICENSE-BSRN)) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder laid out as <ARCH>/<file>")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "weights")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model_id in EMBEDDED_IDS:
        card = get_card(model_id)
        rows.append((card, convert(card, args.source, args.out)))
        print(f"{card.id}.safetensors  {rows[-1][1]}")
    (args.out / "PROVENANCE.md").write_text(provenance(rows))
    (args.out / "LICENSE-BSRN").write_text(BSRN_LICENSE)


if __name__ == "__main__":
    main()
