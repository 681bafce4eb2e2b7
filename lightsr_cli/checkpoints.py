"""What is this checkpoint: safe loading, one unwrap step, detection, and the card it makes.

The split follows the way a checkpoint is understood (as spandrel does it, in our own words):

1. **load** (:func:`load_state_dict`): safetensors, or ``torch.load(weights_only=True)``; pickled
   code is never run, and a file that needs it is refused with a hint;
2. **unwrap** (:func:`unwrap_state_dict`), the one place that knows training frameworks'
   habits: container keys (``params_ema`` before ``params``, Lightning's ``state_dict``...),
   non-tensor entries, and the prefix in front of the network's keys (``module.``, ``model.``,
   a GAN's ``model_g.``). Every architecture receives state dicts unwrapped by this step;
3. **detect** (:func:`detect_checkpoint`): each architecture's own ``detect`` reads the family and
   hyperparameters from keys and shapes;
4. **card** (:func:`card_for_file`, :func:`resolve_card`): a model card for a file, or the one
   card that (model | preset | weights file, scale) means.

Importing this module does not import torch (each function imports it when it needs it).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from . import fs
from .archs.facts import FACTS
from .errors import ModelError, UsageError, WeightsError
from .registry import CARDS, Checkpoint, ModelCard, resolve_model
from .weights import file_digest

if TYPE_CHECKING:
    import torch

CUSTOM_PREFIX = "custom:"
"""Id prefix of the cards made by card_for_file (``card.is_custom`` says so without parsing)."""

_CONTAINER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net",
                   "generator")
"""Keys under which training frameworks nest the weights, most preferred first (EMA weights win)."""
_WRAPPER_PREFIXES = ("module.", "model.")
"""Prefixes that DataParallel and Lightning put on every key."""
_NETWORK_PREFIXES = ("model_g.", "model.module.", "model.", "module.")
"""Prefixes in front of the network's keys when other entries sit beside it: Lightning keeps metric
buffers ("best_val_metric") next to ``model.*``, a GAN checkpoint keeps ``model_d.*`` next to ``model_g.*``."""


# -- load -------------------------------------------------------------------------------------------

def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from the usual containers, on the CPU.

    Never runs pickled code: safetensors, or ``torch.load(weights_only=True)``. A file that needs
    arbitrary code to unpickle, or that is damaged, raises WeightsError with a hint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist", hint="check the path")
    if _looks_like_safetensors(path):
        loaded: Any = _load_safetensors(path)
    else:
        loaded = _load_pickled(path)
    return unwrap_state_dict(loaded, source=path.name)


def _looks_like_safetensors(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    with open(path, "rb") as handle:
        return handle.read(10)[8:] == b'{"'  # 8-byte header length, then the JSON header


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError, or OSError
        raise _unreadable_error(path, error) from None


def _load_pickled(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses two kinds of file: ones that name a Python callable (GLOBAL: code we
        # would have to run) and ones that are not torch pickles at all (unsupported opcodes).
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise _pickled_code_error(path, found.group(1)) from None
        raise _unreadable_error(path, _weights_only_reason(error)) from None
    except Exception as error:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, KeyError...
        raise _unreadable_error(path, error) from None


def _weights_only_reason(error: Exception) -> str:
    """The one informative line of torch's long weights_only message ("Unsupported operand 110")."""
    lines = [line.strip() for line in str(error).split("WeightsUnpickler error:")[-1].splitlines()]
    return next((line for line in lines if line), "not a PyTorch checkpoint")


def _pickled_code_error(path: Path, callable_name: str) -> WeightsError:
    return WeightsError(
        f"{path.name} contains pickled Python code (it calls {callable_name}), which lightsr refuses to run",
        hint="only if you trust where the file came from: load it once in your own Python session with "
             "torch.load and weights_only=False, save its state dict with "
             "safetensors.torch.save_file(state_dict, 'model.safetensors'), and use that file")


def _unreadable_error(path: Path, error: BaseException | str) -> WeightsError:
    text = error if isinstance(error, str) else str(error).strip() or type(error).__name__
    first_sentence = text.splitlines()[0].split(". ")[0].rstrip(".") if text else "unknown error"
    return WeightsError(f"{path.name} is not a readable checkpoint ({first_sentence[:200]})",
                        hint="the file is damaged or incomplete (an interrupted download or copy?), or not a "
                             "PyTorch/safetensors checkpoint at all: download or copy it again")


def damaged_checkpoint_error(card: ModelCard, path: Path, error: BaseException) -> WeightsError:
    """The error for a checkpoint that loads but does not fit its card's network (a strict-load failure)."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    message = f"{path.name} does not fit the {card.arch} x{card.scale} network of {card.id} ({first_line[:200]})"
    if card.is_custom:
        hint = "the file's tensors do not match the detected architecture; check that it is a complete checkpoint"
    elif card.checkpoint.pinned:
        hint = f"this is a lightsr bug or a damaged install; report it with `lightsr models verify {card.id}` output"
    else:
        hint = (f"{card.id} has no published checksum, so a wrong download only shows here: "
                f"run `lightsr models remove {card.id}` and try again")
    return WeightsError(message, hint=hint)


# -- unwrap -----------------------------------------------------------------------------------------

def unwrap_state_dict(checkpoint: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the network's tensors in a training checkpoint: descend into the usual container keys
    (params_ema before params), keep tensor values, and strip the prefix in front of the network's
    keys. Idempotent: an unwrapped state dict comes back unchanged."""
    import torch

    current = checkpoint
    for _ in range(4):  # containers nest a couple of levels at most (Lightning: state_dict -> model.*)
        if not isinstance(current, Mapping):
            break
        inner = next((current[key] for key in _CONTAINER_KEYS if isinstance(current.get(key), Mapping)), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping):
        raise WeightsError(f"{source} holds a {type(current).__name__}, not a state dict",
                           hint="lightsr reads state dicts (name -> tensor), as saved by torch.save or safetensors")
    tensors = {str(key): value for key, value in current.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(current)[:8])) or "none"
        raise WeightsError(f"{source} contains no tensors (top-level keys: {keys})",
                           hint="lightsr reads state dicts (name -> tensor), as saved by torch.save or safetensors")
    return _network_keys(_strip_shared_prefixes(tensors))


def _strip_shared_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix):]: value for key, value in tensors.items()}
                stripped = True
    return tensors


def _network_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's entries when it sits under a prefix beside bookkeeping (dot-free names such as
    Lightning's metric buffers) or another model (``model_d.*``); otherwise everything, unchanged."""
    for prefix in _NETWORK_PREFIXES:
        inside = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        if not inside:
            continue
        others = [key for key in tensors if not key.startswith(prefix)]
        if all("." not in key or key.startswith("model_") for key in others):
            return inside
        return tensors
    return tensors


# -- detect -----------------------------------------------------------------------------------------

def detect_checkpoint(state_dict: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture name, {"scale": s, **hyperparameters}) for a state dict, from keys and shapes.

    The state dict is unwrapped first (:func:`unwrap_state_dict`); then each architecture's own
    prepare_state_dict + detect decides. Architectures whose module is not part of this build are
    skipped; any other error in them is a bug and propagates. The scale is None where the weights
    cannot tell (A2N x2 and x3 are identical in shape).
    """
    from . import archs

    tensors = unwrap_state_dict(state_dict)
    missing: list[str] = []
    for name in archs.ARCH_MODULES:
        spec = _spec_if_present(name)
        if spec is None or spec.detect is None:
            missing.append(name)
            continue
        try:
            found = spec.detect(spec.prepare_state_dict(tensors))
        except ValueError as error:  # the architecture's way of saying "mine, but inconsistent"
            raise ModelError(f"this checkpoint looks like {name} but does not fit lightsr's {name}: {error}",
                             hint=f"check that it is a complete, unmodified {name} checkpoint") from None
        if found is not None:
            return spec.name, dict(found)
    families = "; ".join(f"{name} ({facts.key_signature})" for name, facts in FACTS.items())
    absent = f" (not in this build: {', '.join(missing)})" if missing else ""
    sample = ", ".join(list(tensors)[:4]) + (", ..." if len(tensors) > 4 else "")
    count = f"{len(tensors)} tensor{'s' * (len(tensors) != 1)}"
    raise ModelError(f"no architecture lightsr knows matches this checkpoint ({count}: {sample})",
                     hint=f"lightsr reads these families, recognised by their keys: {families}{absent}")


def _spec_if_present(name: str) -> Any:
    """The ArchSpec, or None when that architecture's module does not exist in this build."""
    from . import archs

    try:
        return archs.get_spec(name)
    except ModuleNotFoundError as error:
        if error.name == archs.ARCH_MODULES[name]:
            return None
        raise


# -- cards ------------------------------------------------------------------------------------------

def card_for_file(path: Path, scale: int | None = None) -> ModelCard:
    """An ad-hoc model card for a checkpoint the user points at (``--weights PATH``).

    Its id is ``custom:<file name>``, its checkpoint names the absolute path (url "", sha256 of the
    file), and arch, scale and hyperparameters come from detect_checkpoint, so the rest of lightsr
    treats it like any card. `scale` settles what the weights cannot tell (A2N x2 vs x3); a file
    identical to a registry checkpoint takes that card's scale.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist", hint="check the path given to {--weights}")
    digest = file_digest(path)
    arch, detected = detect_checkpoint(load_state_dict(path))
    detected_scale = detected.pop("scale", None)
    known = next((card for card in CARDS if card.checkpoint.sha256 == digest.sha256), None)
    if detected_scale is None and known is not None:
        detected_scale = known.scale
    if scale is not None and detected_scale is not None and scale != detected_scale:
        raise ModelError(f"{path.name} is a x{detected_scale} {arch} checkpoint, not x{scale}",
                         hint=f"drop the scale, or use {{--outscale {scale}}} to resize the x{detected_scale} result")
    final_scale = detected_scale if detected_scale is not None else scale
    if final_scale is None:
        raise ModelError(f"the scale of {path.name} cannot be read from its weights ({arch} x2 and x3 look the same)",
                         hint="say which with {--scale 2} or {--scale 3}")
    note = f"the same file as {known.id}" if known is not None else ""
    return ModelCard(id=f"{CUSTOM_PREFIX}{path.name}", arch=arch, scale=final_scale, hyperparameters=detected,
                     checkpoint=Checkpoint(str(path.resolve()), "", digest.sha256, digest.size),
                     license="unknown (a file supplied by the user)", redistributable=False, params=None,
                     note=note, family=f"{CUSTOM_PREFIX}{path.name}", is_custom=True)


def resolve_card(model: str | None, preset: str | None, weights: Path | None, scale: int | None) -> ModelCard:
    """The one way from (model id | preset | checkpoint file, scale) to a model card.

    A weights file gets an ad-hoc card (:func:`card_for_file`; `scale` settles what its shapes
    cannot tell); otherwise the registry resolves the model id or the preset at `scale`.
    """
    if weights is not None:
        if model or preset:
            raise UsageError("{--weights} cannot be combined with {--model} or {--preset}")
        weights = Path(weights)
        card = card_for_file(weights, scale)
        if scale is not None and scale != card.scale:
            raise UsageError(f"{weights.name} is a x{card.scale} model, not x{scale}",
                             hint=f"drop {{--scale}}, or use {{--outscale {scale}}}")
        return card
    return resolve_model(model, preset, scale)


# -- conversion to safetensors ----------------------------------------------------------------------

def convert_to_safetensors(src: Path, dest: Path, metadata: Mapping[str, str] | None = None, *,
                           card: ModelCard | None = None) -> dict[str, str]:
    """Write `src`'s state dict as safetensors at `dest` (temp file, then rename); return the header
    metadata written: arch, scale and hyperparameters (JSON) from `card`, or detected from the
    weights, plus the extra string entries in `metadata` (e.g. provenance).

    Loading is the safe kind (weights_only), so converting an untrusted .pth is harmless.
    The output is byte-for-byte reproducible (sorted header), unlike safetensors' own writer.
    """
    tensors = load_state_dict(src)
    if card is None:
        card = card_for_file(Path(src))
    header = {"format": "pt", "arch": card.arch, "scale": str(card.scale),
              "hyperparameters": json.dumps(dict(card.hyperparameters), sort_keys=True)}
    header.update(metadata or {})
    fs.write_bytes(dest, safetensors_bytes(tensors, header), overwrite=True, hidden=False)
    return header


_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file in memory, with keys and metadata in sorted order so the same tensors always
    give the same bytes (the format: u64 header length, JSON header, then the raw little-endian data)."""
    import torch

    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs: list[bytes] = []
    offset = 0
    # Larger element types first keeps every tensor aligned to its element size, as safetensors does.
    for name in sorted(tensors, key=lambda key: (-tensors[key].element_size(), key)):
        tensor = tensors[name].detach().to("cpu").contiguous()
        dtype = _SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise WeightsError(f"tensor {name} has dtype {tensor.dtype}, which safetensors cannot store")
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)
