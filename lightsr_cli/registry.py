"""Model cards and presets: pure data plus lookup. No torch, no network, no files.

A card says what a model is (architecture, hyperparameters, scale), where its official weights
live (URL, sha256, size), under which license, and how good it is (the PSNR-Y the official code
measured on Set5/Set14, see shared/reference/official_scores.json, and ours from `lightsr eval`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from .archs import facts
from .archs.facts import FACTS
from .errors import ModelError, UsageError

SCALES = (2, 3, 4)
PRESETS = ("fast", "balanced", "quality")

PAPERS: Mapping[str, str] = {name: arch.citation for name, arch in FACTS.items()}
"""Short citation per architecture family (from lightsr_cli.archs.facts)."""


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint file and how to check it."""

    filename: str
    url: str
    sha256: str | None
    """None when no trustworthy hash is known (then `git_blob_sha1` or a strict load checks it)."""
    size: int | None
    git_blob_sha1: str | None = None
    """Git's blob id (sha1 of b"blob <size>\\0" + bytes) when that is all upstream publishes."""

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.git_blob_sha1 is not None


@dataclass(frozen=True)
class ModelCard:
    id: str
    arch: str
    """Architecture family, a key of lightsr_cli.archs.ARCH_MODULES."""
    scale: int
    hyperparameters: Mapping[str, Any]
    checkpoint: Checkpoint
    license: str
    redistributable: bool
    """False when the upstream repository grants no license: download only, never embed."""
    params: int | None
    reference_psnr: Mapping[str, float] = field(default_factory=dict)
    """PSNR-Y the official code measured (dataset -> dB), plain full-image forward."""
    reference_ssim: Mapping[str, float] = field(default_factory=dict)
    note: str = ""
    family: str = ""
    """The network without its scale ("bsrn-s", "plainusr-m", "grl-tiny"): cards of one family differ
    only in scale. A card_for_file card is a family of its own."""
    is_custom: bool = False
    """True for the ad-hoc cards lightsr_cli.checkpoints.card_for_file makes for a user's file."""

    @property
    def measured_psnr(self) -> Mapping[str, float]:
        """PSNR-Y we measured with `lightsr eval` (CPU, fp32), dataset -> dB; see MEASURED_PSNR."""
        return MEASURED_PSNR.get(self.id, {})

    @property
    def mirror_path(self) -> str:
        """Relative path inside a mirror laid out like shared/weights/official."""
        return f"{self.arch}/{self.checkpoint.filename}"


def _as_card_data(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as cards hold them: sequences as tuples (the facts are JSON-shaped)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}


# --- BSRN (MIT, xiaom233/BSRN) -------------------------------------------------------------------

_BSRN = dict(facts.BSRN.variants["bsrn"])
_BSRN_S = dict(facts.BSRN.variants["bsrn-s"])


def _bsrn(model_id, scale, hp, filename, sha256, size, params, psnr, ssim):
    arch = facts.BSRN
    return ModelCard(model_id, arch.name, scale, hp, Checkpoint(filename, arch.url_of(filename), sha256, size),
                     arch.license, arch.redistributable, params,
                     {"Set5": psnr[0], "Set14": psnr[1]}, {"Set5": ssim[0], "Set14": ssim[1]}, family=hp["variant"])


_BSRN_CARDS = [
    _bsrn("bsrn-x2", 2, _BSRN, "net_g_BSRN_x2.pth",
          "09bd1f85e017c7902e65a9c9770ee592efe3d013f6b5cf1fe7de8cabac4ba37d", 1441677, 331628,
          (38.0840, 33.7336), (0.9608, 0.9193)),
    _bsrn("bsrn-x3", 3, _BSRN, "net_g_BSRN_x3.pth",
          "6eb73a300aaec5029bc0de7f5ae85c02b8dcd8fdaf438c77f90272939fecca7e", 1476301, 340283,
          (34.4523, 30.4719), (0.9276, 0.8449)),
    _bsrn("bsrn-x4", 4, _BSRN, "net_g_BSRN_x4.pth",
          "47518e0f549f5696da0c84ca2d65bf50d789c7ac20e621909f5fd6c8c8d70bcb", 1524813, 352400,
          (32.3501, 28.7391), (0.8965, 0.7847)),
    _bsrn("bsrn-s-x4", 4, _BSRN_S, "net_g_BSRN-S.pth",
          "f035e512bcecd2999af21999fdaeb6ed39a4492ac11d214b8164d27e6e958fec", 699603, 156288,
          (32.1628, 28.6367), (0.8949, 0.7820)),
]

# --- A2N (no license, haoyuc/A2N: download only) -------------------------------------------------

_A2N = dict(facts.A2N.variants["a2n"])


def _a2n(scale, sha256, size, psnr, ssim, params=1036443, git_blob_sha1=None, note=""):
    arch, filename = facts.A2N, f"aan_x{scale}.pt"
    return ModelCard(f"a2n-x{scale}", arch.name, scale, _A2N,
                     Checkpoint(filename, arch.url_of(filename), sha256, size, git_blob_sha1),
                     arch.license, arch.redistributable, params,
                     {"Set5": psnr[0], "Set14": psnr[1]} if psnr else {},
                     {"Set5": ssim[0], "Set14": ssim[1]} if ssim else {}, note, family="a2n")


_A2N_CARDS = [
    _a2n(2, "076f3ef50212a0641262d71210aeeda71e03324ecec14032630d1f2225887dfb", 4172225,
         (38.0603, 33.7232), (0.9607, 0.9186),
         note="published scores use EDSR forward_chop: Set5 38.0627, Set14 33.7570"),
    _a2n(3, "7fe6fa3a4b9d666f5b0afe2c9e91ce30551477114ffc7971c218c70899bc84ea", 4172225,
         (34.4684, 30.3863), (0.9278, 0.8424),
         note="published scores use EDSR forward_chop: Set5 34.4759, Set14 30.4400"),
    _a2n(4, None, None, None, None, params=1047459, git_blob_sha1="4e9b8e575cefb11619338587c41a45a144a4cea5",
         note="sha256 unknown: checked against the upstream git blob id"),
]

# --- EMT (MIT, Fried-Rice-Lab/EMT) ----------------------------------------------------------------

_EMT = dict(facts.EMT.variants["emt"])


def _emt(scale, sha256, size, params, psnr, ssim):
    arch, filename = facts.EMT, f"EMT_LSR_x{scale}.pth"
    return ModelCard(f"emt-x{scale}", arch.name, scale, _EMT, Checkpoint(filename, arch.url_of(filename), sha256, size),
                     arch.license, arch.redistributable, params,
                     {"Set5": psnr[0], "Set14": psnr[1]}, {"Set5": ssim[0], "Set14": ssim[1]}, family="emt")


_EMT_CARDS = [
    _emt(2, "a0ccded9cac60a55a23bc43c08dcaef84887530ac14724f07a0c12e8a928f36e", 3135945, 741876,
         (38.2944, 34.1919), (0.9615, 0.9230)),
    _emt(3, "04991327b0eaca4f3d59b7ca7f348484d6993626051b0152443464e0d11cfcf5", 3168393, 749991,
         (34.7982, 30.6976), (0.9303, 0.8490)),
    _emt(4, "c66235c55c92bc753098372cfe6d53c8b259c302adeac48aace9b154ed9f872e", 3213897, 761352,
         (32.6401, 28.9722), (0.9003, 0.7901)),
]

# --- PlainUSR (no license, icandle/PlainUSR: download only) ---------------------------------------

_PLAINUSR_SIZES = ("u", "t", "s", "m", "", "l")
"""Size letters of the released models: the id part ("plainusr-m") and, upper-case, the file's."""

# (size, scale): sha256, file size, params, (Set5, Set14) PSNR, (Set5, Set14) SSIM
_PLAINUSR_FILES = {
    ("u", 2): ("8c6c9f82bceaab6b84bacad643443c367bee93e9ecdabb7c7e4cc595dc82df81", 61094, 13628, (37.1016, 32.7545), (0.9569, 0.9101)),
    ("u", 4): ("d64a40ab30019a20a34bb89dd4c6b5d0ab8b16911c65c63ce31b842f4079d15a", 85926, 19820, (30.7719, 27.7238), (0.8698, 0.7602)),
    ("t", 2): ("65af9f10f65ec806849bc5eaffadfa0e39101f7a6d7d8f394b13090fce4ae1d4", 201596, 48724, (37.4669, 32.9814), (0.9584, 0.9122)),
    ("t", 4): ("43f254de7f5f349256aaf7e5b40484d2c9fb3573ca1ef89478c5dd11b86331dc", 247164, 60100, (31.2041, 28.0245), (0.8786, 0.7670)),
    ("s", 2): ("7517940668d25eb28fbc27751cd9e42258ab0277e474b65ab782bb61cac7e81d", 248766, 57236, (37.6366, 33.1682), (0.9592, 0.9147)),
    ("s", 4): ("874b274f27c0174df744fd22eec9dea907f484014100479f822e609dda86f919", 294450, 68612, (31.5647, 28.1720), (0.8855, 0.7714)),
    ("m", 2): ("f83f3afee4467e7a239e88b85cb0849cd627d06650bc71dd67370d9bc7c87d54", 615486, 148932, (37.7874, 33.3779), (0.9597, 0.9166)),
    ("m", 4): ("5f277afeb3dcfc8014a1ae2fb8f79286147f670e68d43fc9d6ccbc3a9650d3d8", 681790, 165492, (31.7940, 28.3797), (0.8889, 0.7760)),
    ("", 2): ("2fdda1ffebfb07352e11651f1814b74bf36446aeb2b9541bea55d0b94d55e52e", 1265476, 311364, (37.9462, 33.5602), (0.9603, 0.9179)),
    ("", 4): ("afdf923f7bb2e1904d26673653466bd11d809d2daf19a2c7bd6a38391a70efc2", 1352516, 333108, (32.0172, 28.5432), (0.8922, 0.7800)),
    ("l", 2): ("695596b258962f2e17cea71ff94cfa64067f061c748546f0d1d4b3aa46f520c2", 2851834, 707076, (38.0675, 33.8202), (0.9608, 0.9202)),
    ("l", 4): ("050a1d20f2046d01eadab9efd8918a5d9ef705586faab16192d42b897d99ec4e", 2959610, 734004, (32.2573, 28.7135), (0.8956, 0.7837)),
}


def _plainusr(size: str, scale: int) -> ModelCard:
    arch = facts.PLAINUSR
    family = f"plainusr-{size}" if size else "plainusr"
    sha256, file_size, params, psnr, ssim = _PLAINUSR_FILES[(size, scale)]
    filename = f"PlainUSR{size.upper()}_Rep_x{scale}.pth"
    return ModelCard(f"{family}-x{scale}", arch.name, scale, dict(arch.variants[family]),
                     Checkpoint(filename, arch.url_of(filename), sha256, file_size),
                     arch.license, arch.redistributable, params,
                     {"Set5": psnr[0], "Set14": psnr[1]}, {"Set5": ssim[0], "Set14": ssim[1]}, family=family)


_PLAINUSR_CARDS = [_plainusr(size, scale) for size in _PLAINUSR_SIZES for scale in (2, 4)]

# --- GRL (MIT, ofsoundof/GRL-Image-Restoration, release v1.0.0) ------------------------------------

# Parameter counts of our modules built with these configurations (checked in tests/archs/test_grl.py style).
_GRL_PARAMS = {"tiny": {2: 885420, 3: 894075, 4: 906192}, "small": {2: 3340003, 3: 3524643, 4: 3487715},
               "base": {2: 20053587, 3: 20238227, 4: 20201299}}


def _grl(variant: str, scale: int) -> ModelCard:
    arch, filename = facts.GRL, f"sr_grl_{variant}_c3x{scale}.ckpt"
    return ModelCard(f"grl-{variant}-x{scale}", arch.name, scale, _as_card_data(arch.variants[variant]),
                     Checkpoint(filename, arch.url_of(filename), None, None), arch.license, arch.redistributable,
                     _GRL_PARAMS[variant][scale], family=f"grl-{variant}",
                     note="no sha256 published: unpinned, checked structurally by a strict load")


_GRL_CARDS = [_grl(variant, scale) for variant in ("tiny", "small", "base") for scale in SCALES]

# Measured by benchmarks/quality.py (`lightsr eval`, CPU fp32, whole images); results-quality.json.
MEASURED_PSNR: Mapping[str, Mapping[str, float]] = {
    "bsrn-x2": {"Set5": 38.084, "Set14": 33.7336},
    "bsrn-x3": {"Set5": 34.4523, "Set14": 30.4719},
    "bsrn-x4": {"Set5": 32.3501, "Set14": 28.7391},
    "bsrn-s-x4": {"Set5": 32.1627, "Set14": 28.6367},
    "a2n-x2": {"Set5": 38.0603, "Set14": 33.7232},
    "a2n-x3": {"Set5": 34.4684, "Set14": 30.3863},
    "emt-x2": {"Set5": 38.2944, "Set14": 34.1919},
    "emt-x3": {"Set5": 34.7982, "Set14": 30.6976},
    "emt-x4": {"Set5": 32.6401, "Set14": 28.9722},
    "plainusr-u-x2": {"Set5": 37.1016, "Set14": 32.7545},
    "plainusr-u-x4": {"Set5": 30.7719, "Set14": 27.7238},
    "plainusr-t-x2": {"Set5": 37.4669, "Set14": 32.9814},
    "plainusr-t-x4": {"Set5": 31.2041, "Set14": 28.0245},
    "plainusr-s-x2": {"Set5": 37.6366, "Set14": 33.1682},
    "plainusr-s-x4": {"Set5": 31.5647, "Set14": 28.172},
    "plainusr-m-x2": {"Set5": 37.7874, "Set14": 33.3779},
    "plainusr-m-x4": {"Set5": 31.794, "Set14": 28.3797},
    "plainusr-x2": {"Set5": 37.9462, "Set14": 33.5602},
    "plainusr-x4": {"Set5": 32.0172, "Set14": 28.5432},
    "plainusr-l-x2": {"Set5": 38.0675, "Set14": 33.8202},
    "plainusr-l-x4": {"Set5": 32.2573, "Set14": 28.7135},
}

CARDS: tuple[ModelCard, ...] = tuple(_BSRN_CARDS + _A2N_CARDS + _EMT_CARDS + _PLAINUSR_CARDS + _GRL_CARDS)
_BY_ID = {card.id: card for card in CARDS}
_FAMILIES: Mapping[str, list[int]] = {card.family: sorted(c.scale for c in CARDS if c.family == card.family)
                                      for card in CARDS}

# Presets per scale, picked by the rule in presets.py from measured CPU speed
# (benchmarks/results-bench-cpu-320x180.json) and Set14 PSNR-Y (benchmarks/results-quality.json):
# `python benchmarks/pick_presets.py benchmarks/results-bench-cpu-320x180.json benchmarks/results-quality.json`.
PRESET_MODELS: Mapping[int, Mapping[str, str]] = {
    2: {"fast": "plainusr-m-x2", "balanced": "bsrn-x2", "quality": "emt-x2"},
    3: {"fast": "bsrn-x3", "balanced": "bsrn-x3", "quality": "emt-x3"},
    4: {"fast": "plainusr-m-x4", "balanced": "bsrn-x4", "quality": "emt-x4"},
}
PRESETS_MEASURED_ON = "CPU (2 vCPU), benchmarks/results-bench-cpu-320x180.json"
DEFAULT_PRESET = "balanced"
DEFAULT_SCALE = 4


def get_card(model_id: str) -> ModelCard:
    try:
        return _BY_ID[model_id.lower()]
    except KeyError:
        wanted = model_id.lower()
        family = max((f for f in _FAMILIES if wanted.startswith(f"{f}-x")), key=len, default=None)
        if family is not None:
            siblings = _FAMILIES[family]
            raise ModelError(f"model '{family}' has no x{wanted[len(family) + 2:]} checkpoint",
                             hint=f"'{family}' exists at x{', x'.join(map(str, siblings))}: "
                                  + ", ".join(f"{family}-x{s}" for s in siblings)) from None
        close = difflib.get_close_matches(wanted, _BY_ID, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelError(f"unknown model '{model_id}'",
                         hint=f"{hint}valid models: {', '.join(_BY_ID)} (see `lightsr models`)") from None


def scales_of_family(card: ModelCard) -> list[int]:
    """Scales that exist for the same network as `card` (its family)."""
    return sorted(c.scale for c in CARDS if c.family == card.family)


def resolve_model(model_id: str | None, preset: str | None, scale: int | None) -> ModelCard:
    """(model | preset, scale) -> one card, with clear errors for what does not exist."""
    if model_id and preset:
        raise UsageError("{--model} and {--preset} cannot be used together", hint="pick one")
    if model_id:
        card = get_card(model_id)
        if scale is not None and scale != card.scale:
            scales = scales_of_family(card)
            alternatives = ", ".join(f"{card.family}-x{s}" for s in scales)
            raise ModelError(f"model '{card.id}' upscales x{card.scale}, not x{scale}",
                             hint=f"this network exists at x{', x'.join(map(str, scales))} ({alternatives});"
                                  f" use {{--outscale {scale}}} to resize a x{card.scale} result")
        return card
    scale = scale or DEFAULT_SCALE
    if scale not in PRESET_MODELS:
        raise UsageError(f"scale {scale} is not supported", hint=f"choose one of {', '.join(map(str, SCALES))}")
    return get_card(PRESET_MODELS[scale][preset or DEFAULT_PRESET])
