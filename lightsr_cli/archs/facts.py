"""Each architecture's facts, stated once and torch-free: paper, key signature, repository,
license, where the official weights are published, and (GRL) the variant table.

The registry builds its cards from these, :mod:`lightsr_cli.checkpoints` lists the key
signatures when nothing matches, and the architecture modules read their variants from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ArchFacts:
    name: str
    """Family name as used in model cards and the weights mirror layout ("BSRN")."""
    citation: str
    """Short citation ("Li et al., BSRN, CVPRW 2022")."""
    paper: str
    """Full paper title and venue (ArchSpec.paper)."""
    key_signature: str
    """The state-dict keys that identify the family, in words (shown when nothing matches)."""
    repository: str
    """Official GitHub repository, owner/name."""
    license: str
    redistributable: bool
    """False when the upstream repository grants no license: download only, never embed."""
    weights_url: str
    """Where an official checkpoint is published; ``{filename}`` stands for its file name."""
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Named hyperparameter sets of the released models, where the family has several."""

    def url_of(self, filename: str) -> str:
        return self.weights_url.format(filename=filename)


def _github_raw(repo: str, folder: str) -> str:
    return f"https://github.com/{repo}/raw/main/{folder}/{{filename}}"


_NO_LICENSE = "none (no license in the upstream repository)"

BSRN = ArchFacts(
    name="BSRN", citation="Li et al., BSRN, CVPRW 2022",
    paper="Blueprint Separable Residual Network for Efficient Image Super-Resolution (CVPRW 2022)",
    key_signature="fea_conv.pw.weight, B1..Bn.*, upsampler.upsampleOneStep.0.weight",
    repository="xiaom233/BSRN", license="MIT", redistributable=True,
    weights_url=_github_raw("xiaom233/BSRN", "experiments/pretrained_models"),
    variants={"bsrn": {"variant": "bsrn", "num_feat": 64, "num_block": 8},
              "bsrn-s": {"variant": "bsrn-s", "num_feat": 48, "num_block": 5}},
)

A2N = ArchFacts(
    name="A2N", citation="Chen et al., A2N, arXiv 2021",
    paper="Attention in Attention Network for Image Super-Resolution (arXiv 2021)",
    key_signature="conv_first.weight, AAB_trunk.<i>.*, att1.conv.weight, upconv1.weight",
    repository="haoyuc/A2N", license=_NO_LICENSE, redistributable=False,
    weights_url=_github_raw("haoyuc/A2N", "code/experiment/model"),
    variants={"a2n": {"nf": 40, "unf": 24, "nb": 16}},
)

EMT = ArchFacts(
    name="EMT", citation="Zheng et al., EMT, arXiv 2023",
    paper="Efficient Mixed Transformer for Single Image Super-Resolution (arXiv 2023)",
    key_signature="sub_mean.weight, head.weight, body.<i>.sa_list.*, tail.0.weight",
    repository="Fried-Rice-Lab/EMT", license="MIT", redistributable=True,
    weights_url=_github_raw("Fried-Rice-Lab/EMT", "modelzoo/EMT"),
    variants={"emt": {"dim": 60, "n_blocks": 6, "n_layers": 6, "num_heads": 3, "mlp_ratio": 2, "n_GTLs": 2,
                      "window_list": ((32, 8), (8, 32)), "shift_list": ((16, 4), (4, 16))}},
)

PLAINUSR = ArchFacts(
    name="PlainUSR", citation="Wang et al., PlainUSR, ACCV 2024",
    paper="PlainUSR: Chasing Faster ConvNet for Efficient Super-Resolution (ACCV 2024)",
    key_signature="head.weight, block1.body.*, blockm.body.*, tail.0.weight",
    repository="icandle/PlainUSR", license=_NO_LICENSE, redistributable=False,
    weights_url=_github_raw("icandle/PlainUSR", "2024_PlainUSR_ACCV/pretrained_model"),
    variants={  # family -> hyperparameters; the official file names use the size letter
        "plainusr-u": {"block": "ultra", "n_feat": 16, "im_feat": (16, 8), "attn_feat": 1},
        "plainusr-t": {"block": "ultra", "n_feat": 32, "im_feat": (32, 16), "attn_feat": 4},
        "plainusr-s": {"block": "general", "n_feat": 32, "im_feat": (32, 16, 8), "attn_feat": 4},
        "plainusr-m": {"block": "general", "n_feat": 48, "im_feat": (48, 32, 16), "attn_feat": 8},
        "plainusr": {"block": "general", "n_feat": 64, "im_feat": (64, 48, 32), "attn_feat": 16},
        "plainusr-l": {"block": "large", "n_feat": 80, "im_feat": (80, 64, 48), "attn_feat": 16},
    },
)


def _grl_variant(embed_dim: int, depths: list[int], heads: int, down: int, local: bool, upsampler: str) -> dict:
    # Settings shared by the SR release checkpoints (models/grl/grl_*.yaml overridden by
    # experiment/sr/grl/grl_p256.yaml: window 32, 64x64 stripes, no stripe groups; the anchor down
    # factor set by scripts/grl/grl_test.md: 4 for tiny/small, 2 for base). JSON-shaped (lists).
    return {"in_channels": 3, "embed_dim": embed_dim, "depths": depths, "num_heads_window": [heads] * len(depths),
            "num_heads_stripe": [heads] * len(depths), "window_size": 32, "stripe_size": [64, 64],
            "stripe_shift": True, "mlp_ratio": 2.0, "qkv_bias": True, "qkv_proj_type": "linear",
            "anchor_proj_type": "avgpool", "anchor_window_down_factor": down, "local_connection": local,
            "upsampler": upsampler}


GRL = ArchFacts(
    name="GRL", citation="Li et al., GRL, CVPR 2023",
    paper="Efficient and Explicit Modelling of Image Hierarchies for Image Restoration (Li et al., CVPR 2023)",
    key_signature="conv_first.weight, norm_start.weight, layers.<i>.blocks.*, norm_end.weight",
    repository="ofsoundof/GRL-Image-Restoration", license="MIT", redistributable=True,
    weights_url="https://github.com/ofsoundof/GRL-Image-Restoration/releases/download/v1.0.0/{filename}",
    variants={"tiny": _grl_variant(64, [4, 4, 4, 4], 2, 4, False, "pixelshuffledirect"),
              "small": _grl_variant(128, [4, 4, 4, 4], 2, 4, False, "pixelshuffle"),
              "base": _grl_variant(180, [4, 4, 8, 8, 8, 4, 4], 3, 2, True, "pixelshuffle")},
)

FACTS: Mapping[str, ArchFacts] = {facts.name: facts for facts in (BSRN, A2N, EMT, PLAINUSR, GRL)}
"""Every architecture's facts by family name, in the order of lightsr_cli.archs.ARCH_MODULES."""
