"""A torch network -> a verified ONNX file with the metadata a consumer needs.

The exported graph takes RGB in [0,1] (N x 3 x H x W float) and returns [0,1] (unclamped), whatever
range the network itself works in (EMT and A2N take 0-255: the scaling is part of the graph). Height
and width are dynamic unless a static size is asked for. Before the file is renamed into place it is
run in ONNX Runtime (CPU) and compared with the torch network on three inputs: uniform noise, a smooth
random field, and a deterministic natural-statistics image (:func:`natural_image`). Uses torch's
TorchScript-based exporter: it needs no onnxscript and, unlike the dynamo exporter, keeps EMT's
shape-dependent window padding dynamic.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..archs.spec import ArchSpec
from ..errors import LightsrError, ModelError, UsageError
from ..fs import create_temp_beside, output_exists_error, place_file

DEFAULT_OPSET = 17
MIN_OPSET = 14
# Tolerance of the fp32 check, on the [0,1] scale; fp16 graphs are compared with torch's fp32 output.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2
# Outside this range (on the [0,1] scale) a network's own output on noise has run away.
_SANE_OUTPUT = (-2.0, 3.0)


@dataclass(frozen=True)
class ExportSettings:
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    static: tuple[int, int] | None = None
    """(width, height) of a fixed-size graph; None: dynamic batch, height and width."""


@dataclass(frozen=True)
class ExportCheck:
    """One comparison of the ONNX graph (ONNX Runtime, CPU) with the torch network."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    """On the [0,1] scale."""
    enforced: bool
    note: str = ""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    checks: tuple[ExportCheck, ...]
    metadata: dict[str, str]


class ZeroToOne(nn.Module):
    """The network with its input range folded in: [0,1] in, [0,1] out."""

    def __init__(self, network: nn.Module, input_range: float) -> None:
        super().__init__()
        self.network = network
        self.input_range = float(input_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range == 1.0:
            return self.network(x)
        return self.network(x * self.input_range) / self.input_range


def parse_static(text: str | None) -> tuple[int, int] | None:
    """'640x360' -> (640, 360); None stays None."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise UsageError(f"{{--static {text}}}: write the input size as WIDTHxHEIGHT, e.g. 640x360")
    return int(match[1]), int(match[2])


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic H x W x 3 float32 image in [0,1] with natural statistics.

    A 1/f amplitude spectrum (the power law of photographs) with random phases gives textures at
    every scale; a few hard-edged discs add edges; colour is a shared luminance plus weaker
    per-channel variation. Pure noise is no test for some networks (EMT's output runs away on it
    in every implementation), real pixels are.
    """
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))

    def field() -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        plane = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
        return (plane - plane.mean()) / (plane.std() + 1e-12)

    luminance = field()
    image = np.stack([luminance + 0.35 * field() for _ in range(3)], axis=-1)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(4):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.3) * min(height, width)
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 < radius**2
        image[inside] = image[inside] * 0.3 + rng.uniform(-1.5, 1.5, 3)
    return np.clip(0.5 + 0.18 * image, 0.0, 1.0).astype(np.float32)


def smooth_random(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H x W x 3 in [0,1]: uniform noise on a coarse grid, interpolated (a random but smooth input)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth[0].permute(1, 2, 0).numpy().astype(np.float32)


def blocking_operator(error: BaseException) -> str | None:
    """The operator named in an exporter error (e.g. 'aten::nonzero'), if any."""
    match = re.search(r"\b((?:aten|prim|onnx|torchvision)::[A-Za-z_0-9.]+)", str(error))
    return match.group(1) if match else None


def export_onnx(network: nn.Module, spec: ArchSpec, scale: int, target: Path, settings: ExportSettings,
                metadata: dict[str, str], *, overwrite: bool = False) -> ExportResult:
    """Export, annotate, verify in ONNX Runtime, then rename into place (never half-written)."""
    onnx, ort = _onnx_modules()
    if settings.opset < MIN_OPSET:
        raise UsageError(f"{{--opset {settings.opset}}} is too old: lightsr exports opset {MIN_OPSET} or later")
    if not settings.static and spec.onnx_fixed_size:
        raise ModelError(f"{spec.name} cannot be exported with a dynamic input size: {spec.onnx_fixed_size}",
                         hint="export one size with {--static WxH}")
    if target.exists() and not overwrite:
        raise output_exists_error(target)
    wrapped = ZeroToOne(network, spec.input_range).eval()
    dtype = torch.float16 if settings.fp16 else torch.float32
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = create_temp_beside(target, ".onnx-part")
    os.close(descriptor)
    try:
        _trace_to(wrapped, spec, scale, temp, settings, dtype)
        model = onnx.load(str(temp))
        model.producer_name, model.producer_version = "lightsr", metadata.get("lightsr.version", "")
        model.doc_string = metadata.get("lightsr.description", "")
        del model.metadata_props[:]
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(model, str(temp))
        session = ort.InferenceSession(str(temp), providers=["CPUExecutionProvider"])
        checks = verify_session(session, wrapped.float(), spec, scale, settings)
        failed = [check for check in checks if check.enforced and not _within(check, settings)]
        if failed:
            worst = max(failed, key=lambda check: check.max_abs_diff)
            raise ModelError(f"the ONNX graph differs from the torch network by {worst.max_abs_diff:.3g} on the "
                             f"{worst.name} input {worst.shape} (allowed {_tolerance(settings):g})",
                             hint="report this with the model id and --opset; the file was not written")
        place_file(temp, target, overwrite=overwrite)
    finally:
        temp.unlink(missing_ok=True)
        wrapped.float()
    return ExportResult(target, tuple(checks), dict(metadata))


def _tolerance(settings: ExportSettings) -> float:
    return FP16_TOLERANCE if settings.fp16 else FP32_TOLERANCE


def _within(check: ExportCheck, settings: ExportSettings) -> bool:
    return check.max_abs_diff <= _tolerance(settings)


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise LightsrError(f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing)",
                           hint="pip install 'lightsr[onnx]'") from None
    return onnx, onnxruntime


def _trace_size(spec: ArchSpec, settings: ExportSettings) -> tuple[int, int]:
    if settings.static:
        width, height = settings.static
        return height, width
    # Not a multiple of anything the networks care about, so no size-specific shortcut gets traced.
    side = max(spec.min_size, 40)
    return side + 3, side + 9


def _trace_to(wrapped: nn.Module, spec: ArchSpec, scale: int, path: Path, settings: ExportSettings,
              dtype: torch.dtype) -> None:
    height, width = _trace_size(spec, settings)
    example = torch.from_numpy(natural_image(height, width, seed=1)).permute(2, 0, 1)[None].to(dtype)
    dynamic = None if settings.static else {"input": {0: "batch", 2: "height", 3: "width"},
                                             "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    wrapped.to(dtype)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes=dynamic, opset_version=settings.opset,
                              do_constant_folding=True)
    except Exception as error:  # noqa: BLE001 - every exporter failure becomes one clear line
        operator = blocking_operator(error)
        what = f"operator {operator}" if operator else type(error).__name__
        raise ModelError(f"{spec.name} cannot be exported to ONNX opset {settings.opset}: {what} is not supported "
                         f"({str(error).splitlines()[0][:200] if str(error) else 'no message'})",
                         hint="try a newer {--opset}, or run it with {--backend torch}") from None


def _check_inputs(spec: ArchSpec, settings: ExportSettings) -> list[tuple[str, np.ndarray]]:
    if settings.static:
        width, height = settings.static
        shapes = [(1, height, width)] * 3
    else:
        side = max(spec.min_size, 24)
        shapes = [(1, side + 5, side + 1), (2, side + 2, side + 11), (1, side + 16, side + 7)]
    (n1, h1, w1), (n2, h2, w2), (n3, h3, w3) = shapes
    rng = np.random.default_rng(7)
    noise = rng.random((n1, h1, w1, 3), dtype=np.float32)
    smooth = np.stack([smooth_random(h2, w2, seed=i) for i in range(n2)])
    natural = np.stack([natural_image(h3, w3, seed=i) for i in range(n3)])
    return [("uniform noise", noise), ("smooth random", smooth), ("natural image", natural)]


def verify_session(session, network: nn.Module, spec: ArchSpec, scale: int,
                   settings: ExportSettings) -> list[ExportCheck]:
    """Compare an ONNX Runtime session with the [0,1] torch network on three inputs.

    Noise is only enforced where the torch network's own output stays in a sane range: EMT's runs
    away on uniform noise (to thousands), and two correct implementations then differ by whole units.
    """
    name = session.get_inputs()[0].name
    dtype = np.float16 if settings.fp16 else np.float32
    checks = []
    for label, pixels in _check_inputs(spec, settings):
        x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        with torch.no_grad():
            reference = network(torch.from_numpy(x)).numpy()
        got = session.run(None, {name: x.astype(dtype)})[0].astype(np.float32)
        if got.shape != reference.shape:
            raise ModelError(f"the ONNX graph returned shape {got.shape} for {label} {x.shape}, "
                             f"torch {reference.shape}")
        diff = float(np.abs(got - reference).max())
        sane = _SANE_OUTPUT[0] <= float(reference.min()) and float(reference.max()) <= _SANE_OUTPUT[1]
        note = "" if sane else (f"not enforced: the torch network's own output runs away on this input "
                                f"(range {reference.min():.3g}..{reference.max():.3g})")
        checks.append(ExportCheck(label, tuple(x.shape), diff, sane, note))
    return checks
