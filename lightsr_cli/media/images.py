"""Read and write still images as numpy arrays, with their metadata. No torch.

Arrays are H x W (gray), H x W x 2 (gray+alpha), H x W x 3 (RGB) or H x W x 4 (RGBA), uint8 or uint16, upright (EXIF
orientation applied), in RGB channel order. Pixels of PNG/JPEG/WebP/BMP/TIFF are decoded by OpenCV
(which keeps 16-bit colour, where Pillow reduces it to 8 bits); Pillow opens the same bytes lazily
for metadata, frames and pages, and decodes GIF, HEIC and AVIF. 8-bit results are written by Pillow
(which writes EXIF, XMP, IPTC and ICC); 16-bit colour by OpenCV, with the metadata added as PNG
chunks (a 16-bit colour TIFF carries none: said as a loss). Animations and pages: animation.py.
Writes go to a temp file beside the target and are renamed into place only when complete; without
``overwrite`` an existing file is never replaced.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import fs
from ..errors import InputError, OutputError
from . import headers, metadata, pillow
from .metadata import Metadata

IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp",
                    ".tif": "tiff", ".tiff": "tiff", ".gif": "gif", ".heic": "heic", ".heif": "heic",
                    ".avif": "avif", ".jxl": "jxl"}
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif", "gif": ".gif",
                     "heic": ".heic", "avif": ".avif", "jxl": ".jxl"}
_EIGHT_BIT_ONLY = {"jpeg", "webp", "bmp", "gif", "heic", "avif", "jxl"}
_DECODED_BY_PILLOW = {"GIF", "HEIF", "AVIF", "JXL"}
_DEEP_BY_FFMPEG = {"AVIF", "JXL"}  # Pillow's decoders (libavif, pillow-jxl-plugin) give these at 8 bits
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def image_format(path: Path) -> str:
    try:
        return IMAGE_EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"unsupported image extension '{path.suffix}': {path}",
                         hint=f"supported: {', '.join(sorted(IMAGE_EXTENSIONS))}") from None


@dataclass(frozen=True)
class Animation:
    """How the frames of an animated GIF, WebP or PNG play."""

    durations: tuple[int, ...]
    """Milliseconds each frame shows."""
    loop: int | None
    """0 plays forever, n plays n more times (GIF) or n times (WebP, APNG); None: the file said nothing."""
    disposals: tuple[int, ...] | None = None
    """Per frame, in the format's own numbering (GIF 0-3, APNG 0-2); None where it has none (WebP)."""


@dataclass(frozen=True)
class Picture:
    """What one image file holds: one still image, the frames of an animation, or the pages of a TIFF."""

    frames: tuple[np.ndarray, ...]
    metadata: tuple[Metadata, ...] = (Metadata(),)
    """One per page for a multi-page TIFF, else one for the whole file."""
    animation: Animation | None = None
    format: str = ""
    """The format found in the bytes (png, jpeg, gif, ...); empty when unknown."""
    notes: tuple[str, ...] = field(default=())
    """Remarks about the reading, e.g. frames that could not be decoded."""

    @property
    def pages(self) -> bool:
        return len(self.frames) > 1 and self.animation is None

    def metadata_of(self, index: int) -> Metadata:
        return self.metadata[min(index, len(self.metadata) - 1)]


# -- reading --------------------------------------------------------------------------------------

def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """The image at ``path`` (the first frame or page) as an upright RGB/RGBA/gray(+alpha) uint8/uint16 array.

    With ``max_pixels``, an image whose header claims more pixels is refused before decoding.
    """
    data = read_image_bytes(path)
    size = claimed_size(data, path)
    if max_pixels is not None and size is not None and size[0] * size[1] > max_pixels:
        raise InputError(f"{path.name} is {size[0]}x{size[1]}, more than {max_pixels / 1e6:g} megapixels")
    return decode_picture(data, path).frames[0]


def read_image_bytes(path: Path) -> bytes:
    """The bytes of an image file, with an error that says what is wrong with the path."""
    image_format(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an image") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


def claimed_size(data: bytes, path: Path) -> tuple[int, int] | None:
    """(width, height) as the file's header claims it, before any pixel is decoded; None when unknown.

    Our own byte-level reader goes first (it never trips a library's limit); Pillow's lazy open
    covers the formats it does not know (GIF, HEIC, AVIF). JPEG XL's Pillow plugin decodes the whole
    picture when opening it, so ffmpeg's probe (no pixel decoded) tells its size instead.
    """
    header = headers.read_header(data)
    if header is not None:
        return header.width, header.height
    if data.startswith(_JXL_SIGNATURES):
        from . import deep

        facts = deep.probe(data)
        if facts is not None:
            return facts.width, facts.height
    opened = pillow.open_image(data, path)
    return opened.size if opened is not None else None


def decode_picture(data: bytes, path: Path) -> Picture:
    """Every frame or page of an image file's bytes, upright, with its metadata (``path`` names it in errors)."""
    from . import animation

    opened = pillow.open_image(data, path)
    if opened is None:
        header = headers.read_header(data)
        if header is not None and header.format == "tiff":  # e.g. float or planar pages
            from . import tiff

            pages, carried, notes = tiff.read_pages_pillow_cannot(data, path)
            return Picture(pages, carried, format="tiff", notes=notes)
        return Picture((decode_image(data, path),))
    kind = (opened.format or "").upper()
    found = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp",
             "GIF": "gif", "HEIF": "heic", "AVIF": "avif", "JXL": "jxl"}.get(kind, kind.lower())
    frame_count = getattr(opened, "n_frames", 1)
    if kind in ("GIF", "WEBP", "PNG") and getattr(opened, "is_animated", False):
        return replace(animation.read_animation(opened, path), format=found)
    if kind == "TIFF" and frame_count > 1:
        return replace(animation.read_pages(data, opened, path), format=found)
    carried = metadata.read_metadata(opened)
    if opened.mode == "CMYK":  # print artwork: the network sees RGB only
        from . import cmyk

        pixels, carried, note = cmyk.read_as_srgb(opened, carried, path)
        return Picture((pixels,), (carried,), format=found, notes=(note,))
    if kind in _DECODED_BY_PILLOW:
        # libheif and libjxl turn the pixels upright themselves (a JPEG XL's EXIF orientation is ignored, as
        # its specification says); Pillow's AVIF decoder reports the turn as EXIF orientation instead.
        turn = metadata.orientation(opened) if kind == "AVIF" else 1
        pixels = apply_orientation(pillow_pixels(opened, data, path), turn)
        notes = (f"warning: {path.name} has {frame_count} frames; only the first is upscaled",) * (frame_count > 1)
        return Picture((pixels,), (carried,), format=found, notes=notes)
    header = headers.read_header(data) if kind == "PNG" else None  # Pillow shows 16-bit gray+alpha as RGBA
    gray_alpha = opened.mode in ("LA", "La") or header is not None and header.gray_alpha
    # OpenCV's TIFF decoder applies the TIFF orientation tag itself; for other formats it is ours to apply.
    pixels = decode_image(data, path, gray_alpha, 1 if kind == "TIFF" else metadata.orientation(opened))
    return Picture((pixels,), (carried,), format=found)


def decode_image(data: bytes, path: Path, gray_alpha: bool = False, orientation: int = 1) -> np.ndarray:
    """Decode a still image's bytes with OpenCV (``path`` names it in errors); the first frame or page only."""
    try:
        with opencv_quiet:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error as error:  # e.g. a header size beyond OpenCV's own limit
        raise InputError(f"cannot decode {path}: {_cv2_reason(error)}",
                         hint="check that the file opens in an image viewer") from None
    if pixels is None or pixels.size == 0:
        raise InputError(f"cannot decode {path}: the file is empty, truncated or not a valid image",
                         hint="check that the file opens in an image viewer")
    pixels = to_rgb_order(to_supported_depth(pixels, path))
    if gray_alpha and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[:, :, [0, 3]])  # OpenCV expands gray+alpha to RGBA
    return apply_orientation(pixels, orientation)


def pillow_pixels(opened: Any, data: bytes, path: Path) -> np.ndarray:
    """The current frame of a Pillow image as our array (HEIC deeper than 8 bits stays 16-bit)."""
    if (opened.format or "").upper() == "HEIF" and (opened.info.get("bit_depth") or 8) > 8:
        import io

        import pillow_heif

        deep = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        return np.ascontiguousarray(np.asarray(deep))
    try:
        pixels = from_pillow(opened)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise InputError(f"cannot decode {path}: {error}",
                         hint="check that the file opens in an image viewer") from None
    if (opened.format or "").upper() in _DEEP_BY_FFMPEG:
        return _full_depth(data, pixels)
    return pixels


def _full_depth(data: bytes, eight_bit: np.ndarray) -> np.ndarray:
    """An AVIF's or JPEG XL's pixels at 16 bits when the file holds more than 8 (else, or when ffmpeg cannot
    decode it, the 8-bit ones); alpha from the 8-bit decode when ffmpeg's has none (an AVIF's alpha is apart)."""
    from . import deep

    facts = deep.probe(data)
    if facts is None or facts.bit_depth <= 8 or (facts.height, facts.width) != eight_bit.shape[:2]:
        return eight_bit
    colour = deep.decode_sixteen_bit(data, facts, as_stored=not data.startswith(_JXL_SIGNATURES))
    if colour is None:
        return eight_bit
    channels = 1 if eight_bit.ndim == 2 else eight_bit.shape[2]
    alpha = eight_bit[:, :, -1].astype(np.uint16) * 257 if channels in (2, 4) else None
    if colour.shape[2] == 4:
        colour, alpha = colour[:, :, :3], colour[:, :, 3]
    if channels <= 2:  # gray: ffmpeg gave it as equal RGB
        colour = colour[:, :, :1]
    layers = [colour] if alpha is None else [colour, alpha[:, :, None]]
    pixels = np.concatenate(layers, axis=2)
    return np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def from_pillow(frame: Any) -> np.ndarray:
    """A decoded Pillow frame as gray, gray+alpha, RGB or RGBA, 8- or 16-bit."""
    mode = frame.mode
    if mode in ("I;16", "I;16L", "I;16B"):
        return np.asarray(frame, dtype=np.uint16).copy()
    if mode in ("I", "F"):
        return np.round(np.clip(np.asarray(frame, dtype=np.float64), 0, 65535)).astype(np.uint16)
    if mode == "P":
        mode = "RGBA" if "transparency" in frame.info or frame.palette.mode == "RGBA" else "RGB"
    elif mode in ("La", "PA"):
        mode = "LA" if mode == "La" else "RGBA"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        mode = "RGBA" if "A" in mode else "RGB"
    if mode != frame.mode:
        frame = frame.convert(mode)
    return np.array(frame)


class _OpenCVQuiet:
    """Silences OpenCV's own '[ WARN ]' lines while we decode: every failure becomes our error anyway.

    OpenCV's log level is process-wide, so overlapping sections (one per device thread) are
    counted and the level the first one found is restored when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 0

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                cv2.utils.logging.setLogLevel(self._saved)


opencv_quiet = _OpenCVQuiet()


def _cv2_reason(error: cv2.error) -> str:
    """OpenCV's message without its source location: '... error: (-215:Assertion failed) x in f' -> 'x'."""
    text = str(error).strip().splitlines()[-1] if str(error).strip() else "OpenCV error"
    text = text.split(") ", 1)[1] if text.count(")") and "error: (" in text else text
    return text.split(" in function ")[0].strip() or "OpenCV error"


def to_supported_depth(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    if pixels.dtype in (np.float32, np.float64):  # float TIFF: keep full precision as 16-bit
        finite = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)  # NaN is black, not a cast's accident
        return np.round(np.clip(finite, 0.0, 1.0) * 65535).astype(np.uint16)
    raise InputError(f"unsupported pixel type {pixels.dtype} in {path}", hint="convert it to 8- or 16-bit first")


def to_rgb_order(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip so that an image with EXIF ``orientation`` (1-8) is upright."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1, :],
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(pixels)) if transform else pixels


# -- writing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageEncodeSettings:
    format: str
    """One of FORMAT_EXTENSIONS' keys."""
    quality: int | None = None
    """JPEG/WebP/HEIC/AVIF quality 1-100 (None: 95); above 100, lossless WebP."""
    to_srgb: bool = False
    """Convert 8-bit colour from its ICC profile to sRGB (and tag it sRGB); else pixels stay as stored."""


def encode_image(pixels: np.ndarray, options: ImageEncodeSettings, carried: Metadata | None = None) -> bytes:
    """Encode an RGB/RGBA/gray(+alpha) array with ``carried`` metadata (what the format can hold).

    16-bit data goes to 8-bit only for formats that cannot hold it.
    """
    carried = carried or Metadata()
    pixels = to_format_depth(pixels, options.format)
    if options.format == "gif":
        from . import animation

        return animation.encode_gif([pixels], None, carried)
    if pixels.dtype == np.uint8 and options.format != "bmp" or pixels.ndim == 2 and options.format == "tiff":
        return _pillow_encode(pixels, options, carried)
    if options.format == "tiff":  # 16-bit colour: Pillow's image modes cannot hold it
        from . import tiff

        return tiff.encode_pages_with_metadata([pixels], [carried])
    encoded = _opencv_encode(pixels, options)
    if options.format == "png":
        return png_with_metadata(encoded, carried, pixels.shape[1], pixels.shape[0])
    if options.format == "bmp" and carried.dpi:
        return metadata.bmp_with_density(encoded, carried.dpi)
    return encoded



def encoding_losses(pixels: np.ndarray, options: ImageEncodeSettings, carried: Metadata) -> list[str]:
    """What ``carried`` holds that encoding ``pixels`` as ``options.format`` cannot keep."""
    lost = metadata.losses(carried, options.format)
    notes = [f"{', '.join(lost)} cannot be written to {options.format.upper()}"] if lost else []
    if options.to_srgb and carried.icc and to_format_depth(pixels, options.format).dtype == np.uint16:
        notes.append("16-bit colour is written in its own profile: --to-srgb converts 8-bit outputs only")
    return notes


def to_format_depth(pixels: np.ndarray, image_format: str) -> np.ndarray:
    if image_format in _EIGHT_BIT_ONLY and pixels.dtype == np.uint16:
        return np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
    return pixels


def to_pillow(pixels: np.ndarray, image_format: str) -> Any:
    """A Pillow image of ``pixels`` in a mode ``image_format`` holds (JPEG: no alpha; others: no gray+alpha)."""
    image_module = pillow.image_module()
    if pixels.ndim == 3 and pixels.shape[2] == 2 and image_format not in ("png", "tiff"):
        gray, alpha = pixels[:, :, 0], pixels[:, :, 1]
        pixels = gray if image_format == "jpeg" else np.dstack([gray, gray, gray, alpha])
    if image_format == "jpeg" and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]  # JPEG has no alpha channel
    if pixels.ndim == 2 and image_format in ("webp", "heic", "avif"):
        pixels = np.dstack([pixels] * 3)
    return image_module.fromarray(np.ascontiguousarray(pixels))


def pillow_save_options(options: ImageEncodeSettings, carried: Metadata, width: int, height: int) -> dict[str, Any]:
    """Pillow's save arguments for a format: compression, quality and the carried metadata."""
    quality = options.quality if options.quality is not None else 95
    extra: dict[str, Any] = {
        "png": {"compress_level": 3},
        "jpeg": {"quality": quality},
        "webp": {"lossless": True} if quality > 100 else {"quality": quality},
        "tiff": {"compression": "tiff_adobe_deflate"},
        "heic": {"quality": min(quality, 100)},
        "avif": {"quality": min(quality, 100)},
        "jxl": {"lossless": True} if quality > 100 else {"quality": quality},
    }.get(options.format, {})
    saved = {**extra, **metadata.pillow_save_options(carried, options.format, width, height)}
    tags = saved.get("tiffinfo")
    if tags is not None and (0x8769 in tags or 0x8825 in tags):
        # Pillow compresses TIFF through libtiff, which cannot write EXIF's sub-IFDs: keep the EXIF, uncompressed.
        saved.pop("compression")
    return saved


def _pillow_encode(pixels: np.ndarray, options: ImageEncodeSettings, carried: Metadata) -> bytes:
    import io

    image = to_pillow(pixels, options.format)
    if options.to_srgb and carried.icc and image.mode in ("RGB", "RGBA"):
        image = metadata.convert_to_srgb(image, carried.icc)
        carried = replace(carried, icc=metadata.srgb_profile())
    buffer = io.BytesIO()
    save_format = {"heic": "HEIF"}.get(options.format, options.format.upper())  # jxl: "JXL"
    try:
        image.save(buffer, save_format, **pillow_save_options(options, carried, image.width, image.height))
    except (OSError, ValueError, KeyError) as error:
        if options.format == "heic" and not pillow.has_heif():
            raise OutputError("cannot write HEIC: no HEIF encoder installed", hint=pillow.HEIF_HINT) from None
        if options.format == "jxl" and not pillow.has_jxl():
            raise OutputError("cannot write JPEG XL: no JPEG XL encoder installed", hint=pillow.JXL_HINT) from None
        raise OutputError(f"could not encode the result as {options.format}: {error}") from None
    return with_png_aspect(buffer.getvalue(), carried) if options.format == "png" else buffer.getvalue()


def with_png_aspect(png: bytes, carried: Metadata) -> bytes:
    """A PNG from Pillow with the source's aspect-only pHYs (non-square pixels, no density) put back after IHDR:
    Pillow writes pHYs only from a density."""
    aspect = b"".join(_png_chunk(kind, body) for kind, body in carried.png_display if kind == b"pHYs")
    header_end = 8 + 25  # signature + IHDR chunk
    return png[:header_end] + aspect + png[header_end:] if aspect else png


def _opencv_encode(pixels: np.ndarray, options: ImageEncodeSettings) -> bytes:
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        if options.format == "png":
            return _gray_alpha_png(pixels)
        gray, alpha = pixels[:, :, 0], pixels[:, :, 1]  # no gray+alpha here: equal colour channels
        pixels = np.dstack([gray, gray, gray, alpha])
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if options.format == "png" else []
    ok, buffer = cv2.imencode(FORMAT_EXTENSIONS[options.format], pixels, params)
    if not ok:
        raise OutputError(f"could not encode the result as {options.format}")
    return buffer.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _gray_alpha_png(pixels: np.ndarray) -> bytes:
    """A gray+alpha PNG (colour type 4), which OpenCV cannot write; 8 or 16 bits per sample."""
    height, width = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    samples = pixels.astype(">u2") if depth == 16 else pixels
    rows = np.zeros((height, 1 + samples[0].nbytes), np.uint8)  # filter byte 0 before each row
    rows[:, 1:] = samples.reshape(height, -1).view(np.uint8)
    header = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def png_with_metadata(png: bytes, carried: Metadata, width: int, height: int) -> bytes:
    """``png`` (from an encoder that writes no metadata) with the carried chunks after its header: iCCP, eXIf,
    pHYs, the colour chunks, comment, text and XMP.

    Pillow encodes the EXIF (via Pillow's Exif); only the standard chunk wrapping is ours.
    """
    chunks = b""
    if carried.icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(carried.icc))
    written = metadata.exif_block_for_output(carried.exif, width, height) if carried.exif else None
    if written is not None:
        chunks += _png_chunk(b"eXIf", written[6:] if written.startswith(b"Exif\x00\x00") else written)
    if carried.dpi:  # pHYs counts pixels per metre
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", *(round(dpi / 0.0254) for dpi in carried.dpi), 1))
    xmp = metadata.updated_xmp(carried.xmp, width, height) if carried.xmp else None
    for kind, body in metadata.png_text_chunks(replace(carried, xmp=xmp)):
        chunks += _png_chunk(kind, body)
    header_end = 8 + 25  # signature + IHDR chunk
    return png[:header_end] + chunks + png[header_end:] if chunks else png


def write_image(path: Path, pixels: np.ndarray, options: ImageEncodeSettings, overwrite: bool = False,
                carried: Metadata | None = None) -> None:
    fs.write_bytes(path, encode_image(pixels, options, carried), overwrite=overwrite)


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize for --outscale: Lanczos when enlarging, area averaging when shrinking."""
    shrinking = width < pixels.shape[1] or height < pixels.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
    return resized if resized.ndim == pixels.ndim else resized[:, :, None]
