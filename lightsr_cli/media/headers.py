"""What an image file's header says (size, frames or pages, gray+alpha) without decoding any pixels.

Sizes in a header are untrusted: a 74-byte PNG may claim 60000 x 60000. Reading them first lets
the caller refuse an image too large for its limits before the decoder allocates anything, and
warn about animations and multi-page files of which only the first frame is decoded. Formats are
recognised by their signature, not by the file name. Anything not understood gives None (the
decoder then decides), never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_MAX_PAGES = 10_000  # a TIFF whose page chain loops is not walked forever


@dataclass(frozen=True)
class ImageHeader:
    format: str
    """png, jpeg, webp, bmp or tiff (from the signature)."""
    width: int
    height: int
    frames: int = 1
    """Frames of an animation or pages of a TIFF; 1 for a still image."""
    gray_alpha: bool = False
    """A PNG stored as gray + alpha (the decoder hands it back as four channels)."""

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader | None:
    """The header of an image held in ``data``; None when the format or header is not understood."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png(data: bytes) -> ImageHeader | None:
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR":
        return None
    width, height, _depth, colour_type = struct.unpack(">IIBB", data[16:26])
    frames = 1
    offset = 8
    while offset + 8 <= len(data):  # an acTL chunk before the image data marks an animated PNG
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"acTL":
            frames = max(1, struct.unpack(">I", data[offset + 8:offset + 12])[0])
        if kind in (b"IDAT", b"IEND"):
            break
        offset += 12 + length
    return ImageHeader("png", width, height, frames, gray_alpha=colour_type == 4)


_JPEG_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)


def _jpeg(data: bytes) -> ImageHeader | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if marker in _JPEG_FRAME_MARKERS:
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return ImageHeader("jpeg", width, height)
        if marker in (0xD9, 0xDA):
            return None
        offset += 2 + length
    return None


def _webp(data: bytes) -> ImageHeader | None:
    kind, _length = struct.unpack("<4sI", data[12:20])
    body = data[20:]
    if kind == b"VP8X":
        animated = bool(body[0] & 0x02)
        width = 1 + int.from_bytes(body[4:7], "little")
        height = 1 + int.from_bytes(body[7:10], "little")
        frames = _count_webp_chunks(data, b"ANMF") if animated else 1
        return ImageHeader("webp", width, height, max(frames, 2 if animated else 1))
    if kind == b"VP8L" and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return ImageHeader("webp", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if kind == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    return None


def _count_webp_chunks(data: bytes, wanted: bytes) -> int:
    count, offset = 0, 12
    while offset + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[offset:offset + 8])
        count += kind == wanted
        offset += 8 + length + (length & 1)
    return count


def _bmp(data: bytes) -> ImageHeader | None:
    info_size = struct.unpack("<I", data[14:18])[0]
    if info_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return ImageHeader("bmp", abs(width), abs(height))


def _tiff(data: bytes) -> ImageHeader | None:
    endian = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(endian + "I", data[4:8])[0]
    width = height = None
    pages, seen = 0, set()
    while offset and offset not in seen and pages < _MAX_PAGES:
        seen.add(offset)
        entries = struct.unpack(endian + "H", data[offset:offset + 2])[0]
        if pages == 0:
            for index in range(entries):
                entry = data[offset + 2 + 12 * index: offset + 14 + 12 * index]
                tag, kind = struct.unpack(endian + "HH", entry[:4])
                if tag in (256, 257):
                    value = struct.unpack(endian + ("H" if kind == 3 else "I"), entry[8:10 if kind == 3 else 12])[0]
                    width, height = (value, height) if tag == 256 else (width, value)
        pages += 1
        next_at = offset + 2 + 12 * entries
        if next_at + 4 > len(data):
            break
        offset = struct.unpack(endian + "I", data[next_at:next_at + 4])[0]
    if width is None or height is None:
        return None
    return ImageHeader("tiff", width, height, pages)
