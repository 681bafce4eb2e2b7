"""lightsr_cli.checkpoints: safe loading, the one unwrap step, detection, cards for files, conversion."""

from __future__ import annotations

import importlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from lightsr_cli.archs import ARCH_MODULES, get_spec
from lightsr_cli.checkpoints import (
    CUSTOM_PREFIX,
    card_for_file,
    convert_to_safetensors,
    detect_checkpoint,
    load_state_dict,
    resolve_card,
    unwrap_state_dict,
)
from lightsr_cli.errors import ModelError, UsageError, WeightsError
from lightsr_cli.registry import CARDS, ModelCard, get_card
from lightsr_cli.weights import ensure_weights

from .conftest import REPO_ROOT, SHARED_DIR


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


# -- safe loading -----------------------------------------------------------------------------------

class _Marker:
    """Unpickling this would create a file: the proof that pickled code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(2)}, "payload": _Marker(marker)}, checkpoint,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsError) as caught:
        load_state_dict(checkpoint)
    assert re.search(r"contains pickled Python code \(it calls (builtins|io)\.open\), which lightsr refuses to run",
                     caught.value.message)
    assert "weights_only=False" in caught.value.hint and "safetensors" in caught.value.hint
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(WeightsError, match=r"plain.pkl is not a readable checkpoint \(Unsupported operand"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated-zip", "truncated-safetensors"])
def test_damaged_files_are_clear_errors(tmp_path, official_weights, content):
    source = (official_weights / "BSRN" / "net_g_BSRN_x4.pth").read_bytes()
    name = "x.safetensors" if content == "truncated-safetensors" else "x.pth"
    if content == "truncated-zip":
        content = source[: len(source) // 2]
    elif content == "truncated-safetensors":
        content = (REPO_ROOT / "weights" / "bsrn-x4.safetensors").read_bytes()[:-100]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        load_state_dict(path)
    assert caught.value.message.startswith(f"{name} is not a readable checkpoint (")
    assert "download or copy it again" in caught.value.hint


def test_missing_file_and_non_state_dicts(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        load_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match=r"contains no tensors \(top-level keys: epoch, lr\)"):
        load_state_dict(tmp_path / "meta.pth")


def _containers(state_dict: dict) -> dict:
    """The same weights the ways training code saves them."""
    decoy = {k: torch.zeros_like(v) for k, v in state_dict.items()}
    return {
        "plain": state_dict,
        "params": {"params": state_dict},
        "params_ema preferred": {"params": decoy, "params_ema": state_dict},
        "lightning": {"epoch": 7, "state_dict": {f"model.{k}": v for k, v in state_dict.items()}},
        "dataparallel": {f"module.{k}": v for k, v in state_dict.items()},
        "model": {"model": state_dict, "optimizer": {"lr": 1.0}},
        "net": {"net": {f"module.{k}": v for k, v in state_dict.items()}},
        "generator": {"generator": state_dict, "discriminator": decoy},
    }


def test_load_state_dict_unwraps_containers(tmp_path):
    reference = {"head.weight": torch.randn(4, 3, 3, 3), "head.bias": torch.randn(4), "tail.0.weight": torch.randn(12, 4)}
    for label, container in _containers(reference).items():
        path = tmp_path / f"{label}.pth"
        torch.save(container, path)
        loaded = load_state_dict(path)
        assert loaded.keys() == reference.keys(), label
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), label
    from safetensors.torch import save_file

    save_file({f"module.{k}": v.contiguous() for k, v in reference.items()}, tmp_path / "s.safetensors")
    assert load_state_dict(tmp_path / "s.safetensors").keys() == reference.keys()


# -- architecture detection -------------------------------------------------------------------------

OFFICIAL_FILES = sorted(p.relative_to(SHARED_DIR / "weights" / "official")
                        for p in (SHARED_DIR / "weights" / "official").glob("*/*")) if SHARED_DIR else []
CARD_BY_FILE = {card.mirror_path: card for card in CARDS}


def _assert_matches_card(arch: str, detected: dict, card: ModelCard) -> None:
    """Same family and scale, and the detected hyperparameters build the card's network, tensor for tensor
    (values that leave no trace in the weights, like PlainUSR-ultra's unused attn_feat, may differ)."""
    assert arch == card.arch
    assert detected["scale"] in (card.scale, None)  # None: A2N x2 and x3 are identical in shape
    spec = get_spec(arch)
    hyperparameters = {k: v for k, v in detected.items() if k != "scale"}
    # built on the CPU (these networks are small): the meta device would pull in torch._refs, seconds of imports
    from_card = spec.build(scale=card.scale, **dict(card.hyperparameters)).state_dict()
    from_detection = spec.build(scale=card.scale, **hyperparameters).state_dict()
    assert {k: v.shape for k, v in from_card.items()} == {k: v.shape for k, v in from_detection.items()}


@pytest.mark.parametrize("relative", OFFICIAL_FILES, ids=str)
def test_detect_every_official_file(relative, official_weights):
    card = CARD_BY_FILE[relative.as_posix()]
    arch, detected = detect_checkpoint(load_state_dict(official_weights / relative))
    _assert_matches_card(arch, detected, card)


@pytest.mark.parametrize("arch_dir", ["BSRN", "A2N", "EMT", "PlainUSR"])
def test_detect_through_other_containers(arch_dir, official_weights, tmp_path):
    relative = next(f for f in OFFICIAL_FILES if f.parts[0] == arch_dir)
    card = CARD_BY_FILE[relative.as_posix()]
    reference = load_state_dict(official_weights / relative)
    expected = detect_checkpoint(reference)
    _assert_matches_card(*expected, card)
    containers = _containers(reference)
    for label in ("lightning", "params_ema preferred", "dataparallel"):
        assert detect_checkpoint(containers[label]) == expected, label  # in memory, as load_state_dict returns
        path = tmp_path / f"{label}.pth"
        torch.save(containers[label], path)
        assert detect_checkpoint(load_state_dict(path)) == expected, label
    path = tmp_path / "weights.safetensors"
    convert_to_safetensors(official_weights / relative, path, card=card)
    assert detect_checkpoint(load_state_dict(path)) == expected


def test_detect_grl_in_a_lightning_checkpoint(tmp_path):
    grl = importlib.import_module(ARCH_MODULES["GRL"])
    network = grl.SPEC.build(scale=4, **grl.VARIANTS["tiny"])
    state_dict = {f"model.{k}": v for k, v in network.state_dict().items()}
    state_dict["best_val_metric"] = torch.tensor(30.0)  # Lightning keeps metric buffers beside the network
    path = tmp_path / "sr_grl_tiny_c3x4.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state_dict, "hyper_parameters": {"lr": 2e-4}}, path)
    arch, detected = detect_checkpoint(load_state_dict(path))
    assert (arch, detected["scale"], detected["embed_dim"]) == ("GRL", 4, 64)


def test_unknown_state_dict_lists_what_is_expected():
    with pytest.raises(ModelError) as caught:
        detect_checkpoint({"encoder.weight": torch.randn(8, 3, 3, 3), "decoder.bias": torch.randn(3)})
    assert caught.value.message == ("no architecture lightsr knows matches this checkpoint "
                                    "(2 tensors: encoder.weight, decoder.bias)")
    for family in ("BSRN (fea_conv", "A2N (", "EMT (", "PlainUSR (", "GRL ("):
        assert family in caught.value.hint


def test_card_for_file(official_weights, monkeypatch):
    path = official_weights / "EMT" / "EMT_LSR_x3.pth"
    card = card_for_file(path)
    assert (card.id, card.arch, card.scale) == ("custom:EMT_LSR_x3.pth", "EMT", 3)
    assert card.checkpoint.url == "" and card.checkpoint.sha256 == get_card("emt-x3").checkpoint.sha256
    assert card.note == "the same file as emt-x3"
    resolved = ensure_weights(card)
    assert (resolved.source, resolved.path) == ("file", path.resolve())
    with pytest.raises(ModelError, match="is a x3 EMT checkpoint, not x4"):
        card_for_file(path, scale=4)


def test_card_for_file_with_undecidable_scale(official_weights, tmp_path):
    known = card_for_file(official_weights / "A2N" / "aan_x3.pt")
    assert known.scale == 3  # the registry knows this exact file
    from safetensors.torch import save_file

    copy = tmp_path / "my_a2n.safetensors"
    save_file(load_state_dict(official_weights / "A2N" / "aan_x3.pt"), copy)  # same weights, other bytes
    with pytest.raises(ModelError) as caught:
        card_for_file(copy)
    assert "--scale 2 or --scale 3" in caught.value.for_cli()[1]
    assert card_for_file(copy, scale=2).scale == 2


# -- conversion and import hygiene ------------------------------------------------------------------

def test_convert_to_safetensors_is_safe_and_reproducible(official_weights, tmp_path):
    source = official_weights / "BSRN" / "net_g_BSRN_x2.pth"
    card = get_card("bsrn-x2")
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    written = convert_to_safetensors(source, first, {"license": "MIT"}, card=card)
    convert_to_safetensors(source, second, {"license": "MIT"}, card=card)
    assert first.read_bytes() == second.read_bytes()
    assert written["arch"] == "BSRN" and written["scale"] == "2" and written["license"] == "MIT"
    assert json.loads(written["hyperparameters"]) == dict(card.hyperparameters)
    from safetensors import safe_open

    with safe_open(str(first), "pt") as handle:
        assert handle.metadata() == written
    original, converted = load_state_dict(source), load_state_dict(first)
    assert all(torch.equal(original[k], converted[k]) for k in original)
    assert leftovers(tmp_path) == []


# -- one unwrap step and one card resolution ----------------------------------------------------------

def test_unwrap_keeps_the_network_beside_bookkeeping_and_other_models():
    weights = {"conv_first.weight": torch.zeros(4, 3, 3, 3), "layers.0.w": torch.zeros(2)}
    lightning = {f"model.{k}": v for k, v in weights.items()}
    lightning["best_val_metric"] = torch.tensor(31.0)
    assert unwrap_state_dict({"state_dict": lightning}).keys() == weights.keys()
    gan = {f"model_g.{k}": v for k, v in weights.items()}
    gan["model_d.conv0.weight"] = torch.zeros(1)
    assert unwrap_state_dict(gan).keys() == weights.keys()
    mixed = {"model.a.weight": torch.zeros(1), "other.weight": torch.zeros(1)}  # not a wrapper: left alone
    assert unwrap_state_dict(mixed).keys() == mixed.keys()
    assert unwrap_state_dict(unwrap_state_dict(gan)).keys() == weights.keys()  # idempotent


def test_cards_know_their_family_without_parsing_ids(official_weights):
    assert get_card("plainusr-m-x2").family == "plainusr-m" and get_card("bsrn-s-x4").family == "bsrn-s"
    assert all(card.id == f"{card.family}-x{card.scale}" and not card.is_custom for card in CARDS)
    custom = card_for_file(official_weights / "EMT" / "EMT_LSR_x3.pth")
    assert custom.is_custom and custom.id.startswith(CUSTOM_PREFIX)


def test_resolve_card_passes_the_scale_for_weights_files(official_weights, tmp_path):
    from safetensors.torch import save_file

    copy = tmp_path / "my_a2n.safetensors"
    save_file(load_state_dict(official_weights / "A2N" / "aan_x3.pt"), copy)
    assert resolve_card(None, None, copy, 2).scale == 2
    assert resolve_card("bsrn-x4", None, None, None).id == "bsrn-x4"
    with pytest.raises(UsageError) as caught:
        resolve_card("bsrn-x4", None, copy, None)
    assert caught.value.for_cli()[0] == "--weights cannot be combined with --model or --preset"


def test_library_errors_spell_settings_for_python_callers(official_weights, tmp_path):
    from safetensors.torch import save_file

    copy = tmp_path / "my_a2n.safetensors"
    save_file(load_state_dict(official_weights / "A2N" / "aan_x3.pt"), copy)
    with pytest.raises(ModelError) as caught:
        card_for_file(copy)
    assert caught.value.hint == "say which with scale=2 or scale=3"
    assert caught.value.for_cli()[1] == "say which with --scale 2 or --scale 3"


def test_python_api_passes_the_scale_for_weights_files(official_weights, tmp_path):
    from safetensors.torch import save_file

    from lightsr_cli import Upscaler

    copy = tmp_path / "my_a2n.safetensors"
    save_file(load_state_dict(official_weights / "A2N" / "aan_x2.pt"), copy)  # scale unreadable from shapes
    upscaler = Upscaler(weights=copy, scale=2, device="cpu")
    assert upscaler.scale == 2 and upscaler.card.is_custom
