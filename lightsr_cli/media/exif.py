"""EXIF made right for an upscaled output in place: orientation 1, the new pixel dimensions, no stale thumbnail.

Pillow parses EXIF (metadata.py reads it with Pillow) but writes it back only by rebuilding every
directory: that moves the maker note, whose own offsets then point at the wrong bytes for makers
that count from the start of the block (exiftool warns), retypes some fields (UserComment), and
costs most of the metadata work per photo. Here the block keeps its bytes and only three values
change, found by walking the standard TIFF directory layout (a 2-byte entry count, 12-byte entries,
a 4-byte link to the next directory): orientation (IFD0), PixelX/YDimension (the Exif sub-IFD),
and the link to IFD1, the thumbnail of the old pixels in the old orientation, which is cut (its
bytes zeroed, or removed where they end the block). Nothing else is interpreted. Where this cannot
be done cleanly (a dimension that no longer fits its SHORT, a structure out of bounds), the caller
gets None and rebuilds with Pillow.
"""

from __future__ import annotations

import struct

_PREFIX = b"Exif\x00\x00"
_ORIENTATION, _EXIF_IFD, _PIXEL_X, _PIXEL_Y = 0x0112, 0x8769, 0xA002, 0xA003
_THUMBNAIL_AT, _THUMBNAIL_LENGTH = 0x0201, 0x0202
_SHORT, _LONG = 3, 4
_MAX_ENTRIES = 1000  # more entries than any real directory: a damaged count


class _Damaged(Exception):
    """The block does not have the layout it claims."""


def updated_in_place(block: bytes, width: int, height: int) -> bytes | None:
    """``block`` (EXIF as a JPEG holds it, with or without the ``Exif\\0\\0`` prefix) with orientation 1, the
    pixel dimensions ``width`` x ``height`` and no IFD1 thumbnail; None when it cannot be done in place."""
    prefix = _PREFIX if block.startswith(_PREFIX) else b""
    tiff = bytearray(block[len(prefix):])
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        if _read(tiff, order + "H", 2) != 42:
            return None
        first = _read(tiff, order + "I", 4)
        entries, link_at = _directory(tiff, order, first)
        if _ORIENTATION in entries:
            _write_number(tiff, order, entries[_ORIENTATION], 1)
        if _EXIF_IFD in entries:
            camera, _ = _directory(tiff, order, _number(tiff, order, entries[_EXIF_IFD]))
            for tag, value in ((_PIXEL_X, width), (_PIXEL_Y, height)):
                if tag in camera:
                    _write_number(tiff, order, camera[tag], value)
        thumbnail_ifd = _read(tiff, order + "I", link_at)
        if thumbnail_ifd:
            tiff = _without_thumbnail(tiff, order, link_at, thumbnail_ifd)
    except (_Damaged, KeyError, struct.error):
        return None
    return prefix + bytes(tiff)


def _read(tiff: bytearray, fmt: str, at: int) -> int:
    if at < 0 or at + struct.calcsize(fmt) > len(tiff):
        raise _Damaged
    return struct.unpack_from(fmt, tiff, at)[0]


def _directory(tiff: bytearray, order: str, at: int) -> tuple[dict[int, int], int]:
    """{tag: where its 12-byte entry starts} of the directory at ``at``, and where its next-directory link is."""
    count = _read(tiff, order + "H", at)
    if count > _MAX_ENTRIES or at + 2 + 12 * count + 4 > len(tiff):
        raise _Damaged
    entries = {_read(tiff, order + "H", at + 2 + 12 * index): at + 2 + 12 * index for index in range(count)}
    return entries, at + 2 + 12 * count


def _number(tiff: bytearray, order: str, entry: int) -> int:
    """The single SHORT or LONG value of an entry (held in the entry itself)."""
    kind, count = _read(tiff, order + "H", entry + 2), _read(tiff, order + "I", entry + 4)
    if count != 1 or kind not in (_SHORT, _LONG):
        raise _Damaged
    return _read(tiff, order + ("H" if kind == _SHORT else "I"), entry + 8)


def _write_number(tiff: bytearray, order: str, entry: int, value: int) -> None:
    kind = _read(tiff, order + "H", entry + 2)
    _number(tiff, order, entry)  # checks the type and count
    if kind == _SHORT and value > 0xFFFF:
        raise _Damaged  # no room in place: Pillow rebuilds it as a LONG
    struct.pack_into(order + ("H" if kind == _SHORT else "I"), tiff, entry + 8, value)


def _without_thumbnail(tiff: bytearray, order: str, link_at: int, at: int) -> bytearray:
    """Unlink IFD1 and blank it and its JPEG thumbnail; bytes that end the block are removed."""
    entries, end = _directory(tiff, order, at)
    spans = [(at, end + 4)]
    if _THUMBNAIL_AT in entries and _THUMBNAIL_LENGTH in entries:
        start = _number(tiff, order, entries[_THUMBNAIL_AT])
        length = _number(tiff, order, entries[_THUMBNAIL_LENGTH])
        if start + length > len(tiff):
            raise _Damaged
        spans.append((start, start + length))
    struct.pack_into(order + "I", tiff, link_at, 0)
    for start, stop in spans:
        tiff[start:stop] = bytes(stop - start)
    for start, stop in sorted(spans, reverse=True):  # the thumbnail usually ends the block, its IFD just before it
        if stop == len(tiff):
            del tiff[start:]
    return tiff
