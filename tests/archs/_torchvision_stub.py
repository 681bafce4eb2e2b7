"""A stand-in for ``torchvision.transforms.functional``, enough for ``import spandrel``.

spandrel (a test-only reference for architecture ports) imports torchvision at package import
time, for two architectures the tests never build (LaMa: ``InterpolationMode``, ``rotate``;
RestoreFormer: ``normalize``). torchvision has no build for the CPU torch used here, so when it
is missing these modules are registered in ``sys.modules`` before spandrel is imported. The
functions raise if anything actually calls them.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _unavailable(name: str):
    def function(*args, **kwargs):
        raise NotImplementedError(f"torchvision.transforms.functional.{name} is stubbed out in the tests")

    function.__name__ = name
    return function


def install() -> None:
    """Register the stub unless a real torchvision is importable (idempotent)."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    torchvision = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode
    for name in ("rotate", "normalize", "resize", "to_tensor", "to_pil_image"):
        setattr(functional, name, _unavailable(name))
    transforms.functional = functional
    torchvision.transforms = transforms
    torchvision.__version__ = "0.0.0+lightsr-test-stub"
    sys.modules.update(
        {
            "torchvision": torchvision,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )
