"""Model cards: plain data that stays consistent with the architectures and the official files."""

from __future__ import annotations

import pytest
import torch

from lightsr_cli.archs import get_spec
from lightsr_cli.errors import ModelError, UsageError
from lightsr_cli.registry import CARDS, get_card, resolve_model


def test_ids_are_unique_and_lowercase():
    ids = [card.id for card in CARDS]
    assert len(ids) == len(set(ids)) and all(i == i.lower() for i in ids)


def test_grl_cards_carry_the_architecture_variants():
    from lightsr_cli.archs.grl import RELEASE_FILES, VARIANTS

    for card in (c for c in CARDS if c.arch == "GRL"):
        variant = card.id.split("-")[1]
        as_data = {k: list(v) if isinstance(v, tuple) else v for k, v in card.hyperparameters.items()}
        assert as_data == VARIANTS[variant]
        assert card.checkpoint.filename == RELEASE_FILES[variant][card.scale]
        assert not card.checkpoint.pinned


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.id)
def test_every_card_builds_with_its_parameter_count(card):
    with torch.device("meta"):
        network = get_spec(card.arch).build(scale=card.scale, **dict(card.hyperparameters))
    assert sum(p.numel() for p in network.parameters()) == card.params


def test_unlicensed_weights_are_never_redistributable():
    for card in CARDS:
        assert card.redistributable == (card.arch in {"BSRN", "EMT", "GRL"}), card.id


def test_resolution_errors_name_what_exists():
    with pytest.raises(ModelError, match="exists at x2, x4"):
        get_card("plainusr-m-x3")
    with pytest.raises(ModelError, match="upscales x4, not x2"):
        resolve_model("emt-x4", None, 2)
    with pytest.raises(UsageError):
        resolve_model(None, "balanced", 5)
    assert resolve_model(None, None, None).scale == 4
