"""The architectures lightsr knows, listed explicitly (no directory scanning).

Each module exports ``SPEC`` (an :class:`~lightsr_cli.archs.spec.ArchSpec`). Modules are imported
on first use so that listing models or printing help never pays for building every network.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import ArchSpec

ARCH_MODULES: dict[str, str] = {
    "BSRN": "lightsr_cli.archs.bsrn",
    "A2N": "lightsr_cli.archs.a2n",
    "EMT": "lightsr_cli.archs.emt",
    "PlainUSR": "lightsr_cli.archs.plainusr",
    "GRL": "lightsr_cli.archs.grl",
}


def get_spec(arch: str) -> "ArchSpec":
    """The ArchSpec of one architecture family, by the name model cards use."""
    return importlib.import_module(ARCH_MODULES[arch]).SPEC


def build_network(arch: str, scale: int, hyperparameters, state_dict):
    """Build one network from a card's data and load its checkpoint strictly, in eval mode."""
    spec = get_spec(arch)
    network = spec.build(scale=scale, **dict(hyperparameters))
    network.load_state_dict(spec.prepare_state_dict(state_dict), strict=True)
    network.requires_grad_(False)
    return network.eval()
