"""Frames of animated GIF, WebP and PNG, and pages of multi-page TIFF: read all, write all.

Animations are read as full frames (Pillow composites each frame over the previous ones as the
file's disposal and blend say), so every frame stands alone and can be upscaled on its own. They
are written back as full frames with the same durations, loop count and (GIF/APNG) disposal; APNG
frames replace the canvas (blend "source") so transparency never shows an older frame. GIF
palettes are rebuilt from each upscaled frame (median cut, Floyd-Steinberg dithering), never
reused from the input. TIFF pages are decoded by OpenCV (16-bit kept) with each page's metadata
from Pillow, and written page by page with their own metadata.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, OutputError
from . import images, metadata, pillow
from .images import Animation, ImageEncodeSettings, Picture
from .metadata import Metadata

_GIF_TRANSPARENT = 255  # the palette index kept for transparent pixels


def read_animation(opened: Any, path: Path) -> Picture:
    """Every frame of an animated GIF/WebP/PNG: RGBA where the file stores an alpha channel (an RGBA APNG stays
    RGBA even where every pixel is opaque, as a still RGBA PNG does) or any frame has transparency, else RGB."""
    carried = metadata.read_metadata(opened)
    stores_alpha = opened.mode in ("RGBA", "RGBa", "LA", "La", "PA")
    claimed = opened.n_frames
    frames, durations, disposals = [], [], []
    loop = opened.info.get("loop")
    gif = (opened.format or "").upper() == "GIF"
    for index in range(claimed):
        try:
            opened.seek(index)
            frames.append(np.array(opened.convert("RGBA")))
        except (EOFError, OSError, ValueError, SyntaxError) as error:
            if not frames:
                raise InputError(f"cannot decode {path}: {error}",
                                 hint="check that the file opens in an image viewer") from None
            break
        durations.append(int(opened.info.get("duration") or 0))
        disposal = getattr(opened, "disposal_method", None) if gif else opened.info.get("disposal")
        disposals.append(int(disposal) if disposal is not None else 0)
    notes = (_partly_decoded(path, len(frames), claimed, "frames"),) if len(frames) < claimed else ()
    if not stores_alpha and all(frame[:, :, 3].min() == 255 for frame in frames):
        frames = [np.ascontiguousarray(frame[:, :, :3]) for frame in frames]
    has_disposal = (opened.format or "").upper() in ("GIF", "PNG")
    timing = Animation(tuple(durations), int(loop) if loop is not None else None,
                       tuple(disposals) if has_disposal else None)
    if len(frames) == 1:
        return Picture((frames[0],), (carried,), notes=notes)
    return Picture(tuple(frames), (carried,), timing, notes=notes)


def read_pages(data: bytes, opened: Any, path: Path) -> Picture:
    """Every page of a multi-page TIFF: pixels by OpenCV (16-bit kept), each page's metadata by Pillow."""
    try:
        with images.opencv_quiet:
            ok, decoded = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        ok, decoded = False, []
    if not ok or not decoded:
        raise InputError(f"cannot decode {path}: the pages could not be read",
                         hint="check that the file opens in an image viewer")
    pages, carried = [], []
    for index, pixels in enumerate(decoded):
        try:
            opened.seek(index)
        except (EOFError, OSError, ValueError):
            break
        page = images.to_rgb_order(images.to_supported_depth(pixels, path))
        if opened.mode in ("LA", "La") and page.ndim == 3 and page.shape[2] == 4:
            page = np.ascontiguousarray(page[:, :, [0, 3]])
        pages.append(page)  # OpenCV's TIFF decoder has applied each page's orientation tag
        carried.append(metadata.read_metadata(opened))
    claimed = opened.n_frames
    notes = (_partly_decoded(path, len(pages), claimed, "pages"),) if len(pages) < claimed else ()
    return Picture(tuple(pages), tuple(carried), notes=notes)


def _partly_decoded(path: Path, decoded: int, claimed: int, what: str) -> str:
    upscaled = "that one is upscaled" if decoded == 1 else "those are upscaled"
    return f"warning: only {decoded} of the {claimed} {what} of {path.name} could be decoded; {upscaled}"


# -- writing --------------------------------------------------------------------------------------

def encode_picture(picture: Picture, options: ImageEncodeSettings) -> bytes:
    """Encode every frame or page of ``picture`` (metadata already filtered by the policy)."""
    if len(picture.frames) == 1:
        return images.encode_image(picture.frames[0], options, picture.metadata_of(0))
    if picture.animation is not None:
        return encode_animation(picture.frames, picture.animation, options, picture.metadata_of(0))
    if options.format == "tiff":
        return encode_pages(picture.frames, [picture.metadata_of(i) for i in range(len(picture.frames))], options)
    return images.encode_image(picture.frames[0], options, picture.metadata_of(0))


def picture_losses(picture: Picture, options: ImageEncodeSettings) -> list[str]:
    """What ``picture`` holds that ``options.format`` cannot keep (frames, pages, metadata)."""
    notes = []
    if picture.animation is not None and options.format not in ("gif", "webp", "png"):
        notes.append(f"{options.format.upper()} holds no animation: only the first frame is written")
    if picture.pages and options.format != "tiff":
        notes.append(f"{options.format.upper()} holds one page: only the first page is written")
    if picture.animation is not None and options.format in ("gif", "webp", "png"):
        lost = metadata.losses(picture.metadata_of(0), options.format)
        return notes + ([f"{', '.join(lost)} cannot be written to {options.format.upper()}"] if lost else [])
    return notes + images.encoding_losses(picture.frames[0], options, picture.metadata_of(0))


def encode_animation(frames: tuple[np.ndarray, ...], timing: Animation, options: ImageEncodeSettings,
                     carried: Metadata) -> bytes:
    if options.format == "gif":
        return encode_gif(list(frames), timing, carried)
    if options.format not in ("webp", "png"):
        return images.encode_image(frames[0], options, carried)
    eight_bit = [images.to_format_depth(frame, "gif") for frame in frames]  # animations are 8-bit
    pictures = [images.to_pillow(frame, options.format) for frame in eight_bit]
    first = pictures[0]
    save = images.pillow_save_options(options, carried, first.width, first.height)
    save.update(save_all=True, append_images=pictures[1:], duration=list(timing.durations),
                loop=timing.loop if timing.loop is not None else 0)
    if options.format == "webp" and first.mode == "RGBA":
        # libwebp 1.6's animation encoder drops the alpha flag when it writes frames as sub-frame
        # differences, and readers then show no transparency; every frame a key frame keeps it.
        save.update(kmin=1, kmax=1)
    if options.format == "png":
        save.update(disposal=list(timing.disposals or [0] * len(frames)), blend=[0] * len(frames))
    if options.format == "png":
        return images.with_png_aspect(_save(first, "PNG", save), carried)
    return _save(first, "WEBP", save)


def encode_gif(frames: list[np.ndarray], timing: Animation | None, carried: Metadata) -> bytes:
    """A GIF whose palettes are rebuilt from each frame; of the metadata, GIF holds only a comment."""
    pictures = [_palette_frame(images.to_format_depth(frame, "gif")) for frame in frames]
    save: dict[str, Any] = {"optimize": False}
    if carried is not None and carried.comment:
        save["comment"] = carried.comment
    if timing is not None:
        save.update(save_all=True, append_images=pictures[1:], duration=list(timing.durations),
                    disposal=list(timing.disposals or [0] * len(frames)))
        if timing.loop is not None:
            save["loop"] = timing.loop
    return _save(pictures[0], "GIF", save)


def _palette_frame(pixels: np.ndarray) -> Any:
    """One frame as a palette image quantized from its own colours; alpha below half is transparent."""
    image_module = pillow.image_module()
    alpha = None
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        alpha = pixels[:, :, -1]
        pixels = pixels[:, :, 0] if pixels.shape[2] == 2 else pixels[:, :, :3]
    if pixels.ndim == 2:
        pixels = np.dstack([pixels] * 3)
    transparent = alpha < 128 if alpha is not None else None
    colours = 255 if transparent is not None and transparent.any() else 256
    quantized = image_module.fromarray(np.ascontiguousarray(pixels)).quantize(
        colours, method=image_module.Quantize.MEDIANCUT, dither=image_module.Dither.FLOYDSTEINBERG)
    if colours == 256:
        return quantized
    indices = np.array(quantized)
    indices[transparent] = _GIF_TRANSPARENT
    palette = (quantized.getpalette() or [])[:3 * _GIF_TRANSPARENT]
    palette += [0] * (3 * 256 - len(palette))
    result = image_module.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    result.putpalette(palette)
    result.info["transparency"] = _GIF_TRANSPARENT
    return result


def encode_pages(pages: tuple[np.ndarray, ...], carried: list[Metadata], options: ImageEncodeSettings) -> bytes:
    """A multi-page TIFF, each page with its own metadata (16-bit colour pages: media/tiff.py writes them)."""
    if any(page.dtype == np.uint16 and page.ndim == 3 for page in pages):
        from . import tiff

        return tiff.encode_pages_with_metadata(pages, carried)
    from PIL import TiffImagePlugin

    buffer = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buffer, new=True) as writer:
        for page, page_metadata in zip(pages, carried, strict=True):
            picture = images.to_pillow(page, "tiff")
            save = images.pillow_save_options(options, page_metadata, picture.width, picture.height)
            try:
                picture.save(writer, "TIFF", **save)
            except (OSError, ValueError, KeyError) as error:
                raise OutputError(f"could not encode the result as TIFF: {error}") from None
            writer.newFrame()
    return buffer.getvalue()


def _save(picture: Any, save_format: str, options: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    try:
        picture.save(buffer, save_format, **options)
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(f"could not encode the result as {save_format}: {error}") from None
    return buffer.getvalue()
