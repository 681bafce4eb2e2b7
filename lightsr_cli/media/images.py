"""Read and write images as numpy arrays. No torch.

Arrays are H x W (gray), H x W x 2 (gray+alpha), H x W x 3 (RGB) or H x W x 4 (RGBA), uint8 or uint16, upright (EXIF
orientation applied), in RGB channel order. Writes go to a temp file beside the target and are
renamed into place only when complete; without ``overwrite`` an existing file is never replaced.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import fs
from ..errors import InputError, OutputError
from . import headers

IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp",
                    ".tif": "tiff", ".tiff": "tiff"}
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
_EIGHT_BIT_ONLY = {"jpeg", "webp", "bmp"}


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def image_format(path: Path) -> str:
    try:
        return IMAGE_EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"unsupported image extension '{path.suffix}': {path}",
                         hint=f"supported: {', '.join(sorted(IMAGE_EXTENSIONS))}") from None


# -- reading --------------------------------------------------------------------------------------

def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """The image at ``path`` as an upright RGB/RGBA/gray(+alpha) uint8 or uint16 array.

    With ``max_pixels``, an image whose header claims more pixels is refused before decoding.
    """
    data = read_image_bytes(path)
    header = headers.read_header(data)
    if max_pixels is not None and header is not None and header.pixels > max_pixels:
        raise InputError(f"{path.name} is {header.width}x{header.height}, more than {max_pixels / 1e6:g} megapixels")
    return decode_image(data, path, header)


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


def decode_image(data: bytes, path: Path, header: headers.ImageHeader | None = None) -> np.ndarray:
    """Decode an image file's bytes (``path`` names it in errors); the first frame or page only."""
    try:
        with _opencv_quiet:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error as error:  # e.g. a header size beyond OpenCV's own limit
        raise InputError(f"cannot decode {path}: {_cv2_reason(error)}",
                         hint="check that the file opens in an image viewer") from None
    if pixels is None or pixels.size == 0:
        raise InputError(f"cannot decode {path}: the file is empty, truncated or not a valid image",
                         hint="check that the file opens in an image viewer")
    pixels = _to_rgb_order(_to_supported_depth(pixels, path))
    if header is not None and header.gray_alpha and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[:, :, [0, 3]])  # OpenCV expands gray+alpha to RGBA
    return apply_orientation(pixels, read_exif_orientation(data))


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


_opencv_quiet = _OpenCVQuiet()


def _cv2_reason(error: cv2.error) -> str:
    """OpenCV's message without its source location: '... error: (-215:Assertion failed) x in f' -> 'x'."""
    text = str(error).strip().splitlines()[-1] if str(error).strip() else "OpenCV error"
    text = text.split(") ", 1)[1] if text.count(")") and "error: (" in text else text
    return text.split(" in function ")[0].strip() or "OpenCV error"


def _to_supported_depth(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    if pixels.dtype in (np.float32, np.float64):  # float TIFF: keep full precision as 16-bit
        return np.round(np.clip(pixels, 0.0, 1.0) * 65535).astype(np.uint16)
    raise InputError(f"unsupported pixel type {pixels.dtype} in {path}", hint="convert it to 8- or 16-bit first")


def _to_rgb_order(pixels: np.ndarray) -> np.ndarray:
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


def read_exif_orientation(data: bytes) -> int:
    """EXIF orientation (1-8) from JPEG APP1, PNG eXIf or WebP EXIF data; 1 when absent or unreadable."""
    try:
        tiff = _find_exif_tiff(data)
        return _orientation_from_tiff(tiff) if tiff else 1
    except (struct.error, IndexError, ValueError):
        return 1  # damaged metadata must not stop an otherwise good image


def _find_exif_tiff(data: bytes) -> bytes | None:
    if data[:2] == b"\xff\xd8":  # JPEG: walk the segments up to the image data
        offset = 2
        while offset + 4 <= len(data) and data[offset] == 0xFF:
            marker = data[offset + 1]
            if marker in (0xD9, 0xDA):
                return None
            length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
            segment = data[offset + 4:offset + 2 + length]
            if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
                return segment[6:]
            offset += 2 + length
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        offset = 8
        while offset + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[offset:offset + 8])
            if kind == b"eXIf":
                return data[offset + 8:offset + 8 + length]
            if kind == b"IDAT":
                return None
            offset += 12 + length
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        offset = 12
        while offset + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[offset:offset + 8])
            if kind == b"EXIF":
                chunk = data[offset + 8:offset + 8 + length]
                return chunk[6:] if chunk.startswith(b"Exif\x00\x00") else chunk
            offset += 8 + length + (length & 1)
    return None


def _orientation_from_tiff(tiff: bytes) -> int:
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    ifd_offset = struct.unpack(endian + "I", tiff[4:8])[0]
    entries = struct.unpack(endian + "H", tiff[ifd_offset:ifd_offset + 2])[0]
    for index in range(entries):
        entry = tiff[ifd_offset + 2 + 12 * index: ifd_offset + 14 + 12 * index]
        tag, _kind, _count = struct.unpack(endian + "HHI", entry[:8])
        if tag == 0x0112:
            value = struct.unpack(endian + "H", entry[8:10])[0]
            return value if 1 <= value <= 8 else 1
    return 1


# -- writing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageEncodeSettings:
    format: str
    """One of FORMAT_EXTENSIONS' keys."""
    quality: int | None = None
    """JPEG/WebP quality 1-100 (None: 95 for JPEG, lossless 101 for WebP is not used: 95)."""


def encode_image(pixels: np.ndarray, options: ImageEncodeSettings) -> bytes:
    """Encode an RGB/RGBA/gray array; 16-bit data goes to 8-bit only for formats that cannot hold it."""
    if options.format in _EIGHT_BIT_ONLY and pixels.dtype == np.uint16:
        pixels = np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        if options.format == "png":
            return _gray_alpha_png(pixels)
        # Other formats hold no gray+alpha: equal colour channels (or gray alone for JPEG).
        gray, alpha = pixels[:, :, 0], pixels[:, :, 1]
        pixels = gray if options.format == "jpeg" else np.dstack([gray, gray, gray, alpha])
    if options.format == "jpeg" and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]  # JPEG has no alpha channel
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    params: list[int] = []
    quality = options.quality if options.quality is not None else 95
    if options.format == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif options.format == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    elif options.format == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buffer = cv2.imencode(FORMAT_EXTENSIONS[options.format], pixels, params)
    if not ok:
        raise OutputError(f"could not encode the result as {options.format}")
    return buffer.tobytes()


def _gray_alpha_png(pixels: np.ndarray) -> bytes:
    """A gray+alpha PNG (colour type 4), which OpenCV cannot write; 8 or 16 bits per sample."""
    height, width = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    samples = pixels.astype(">u2") if depth == 16 else pixels
    rows = np.zeros((height, 1 + samples[0].nbytes), np.uint8)  # filter byte 0 before each row
    rows[:, 1:] = samples.reshape(height, -1).view(np.uint8)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def write_image(path: Path, pixels: np.ndarray, options: ImageEncodeSettings, overwrite: bool = False) -> None:
    fs.write_bytes(path, encode_image(pixels, options), overwrite=overwrite)


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize for --outscale: Lanczos when enlarging, area averaging when shrinking."""
    shrinking = width < pixels.shape[1] or height < pixels.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
    return resized if resized.ndim == pixels.ndim else resized[:, :, None]
