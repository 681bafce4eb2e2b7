"""TIFF pages that Pillow cannot write from an image (16-bit colour), with every page's metadata kept.

Pillow's TIFF writer takes only its own image modes, and none holds 16-bit colour; OpenCV writes
16-bit colour but no metadata. Here each page's directory is serialized by Pillow's
``ImageFileDirectory_v2`` (the class Pillow's own TIFF writer uses: it types every tag, writes
EXIF's camera and GPS fields as sub-IFDs, and places the strip offsets after its own data), with
the carried EXIF, XMP, IPTC and ICC tags beside the storage tags. The pixels follow as
deflate-compressed strips with the horizontal predictor (TIFF 6.0 with Adobe deflate, as libtiff
writes them), so any TIFF reader (libtiff, OpenCV, tifffile, exiftool) reads the result.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

_HEADER = b"II*\x00"  # little-endian TIFF; the first directory follows right after the 8-byte header
_STRIP_BYTES = 1 << 18  # about 256 KiB of pixels per strip: readers decode a strip at a time
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR, _PREDICTOR, _EXTRA_SAMPLES = (
    273, 277, 278, 279, 284, 317, 338)
_ICC = 34675
_ADOBE_DEFLATE, _HORIZONTAL = 8, 2


def encode_tiff(pages: Sequence[np.ndarray], tags: Sequence[Any | None], icc: Sequence[bytes | None]) -> bytes:
    """A TIFF of ``pages`` (gray, RGB or RGBA; uint8 or uint16), page i with Pillow tag directory ``tags[i]``
    (EXIF fields and sub-IFDs, XMP, IPTC, as metadata.pillow_save_options builds them) and profile ``icc[i]``."""
    from PIL import TiffImagePlugin, TiffTags

    out = bytearray(_HEADER + struct.pack("<I", 8))
    link_at = 4  # where the offset of the next page's directory goes
    for pixels, page_tags, profile in zip(pages, tags, icc, strict=True):
        directory = TiffImagePlugin.ImageFileDirectory_v2()
        strips, rows_per_strip = _strips(pixels)
        _storage_tags(directory, pixels, strips, rows_per_strip)
        if page_tags is not None:
            for tag, value in page_tags.items():
                if tag not in directory:
                    directory.tagtype[tag] = page_tags.tagtype[tag]
                    directory[tag] = value
        if profile:
            directory.tagtype[_ICC] = TiffTags.UNDEFINED
            directory[_ICC] = profile
        out += b"\x00" * (len(out) % 2)  # directories start on a word boundary
        struct.pack_into("<I", out, link_at, len(out))
        start = len(out)
        out += directory.tobytes(start)  # strip offsets are made absolute: the strips follow at once
        link_at = start + 2 + 12 * len(directory)  # after the entry count and the 12-byte entries
        for strip in strips:
            out += strip
    return bytes(out)


def _strips(pixels: np.ndarray) -> tuple[list[bytes], int]:
    """The pixels as deflate-compressed strips of whole rows, each row differenced left to right."""
    samples = pixels.astype(pixels.dtype.newbyteorder("<"), copy=True)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    samples[:, 1:] -= pixels.reshape(samples.shape)[:, :-1]  # the horizontal predictor (wraps, as the spec says)
    row_bytes = samples[0].nbytes
    rows_per_strip = max(1, _STRIP_BYTES // max(row_bytes, 1))
    strips = [zlib.compress(samples[top:top + rows_per_strip].tobytes(), 6)
              for top in range(0, samples.shape[0], rows_per_strip)]
    return strips, rows_per_strip


def _storage_tags(directory: Any, pixels: np.ndarray, strips: list[bytes], rows_per_strip: int) -> None:
    from PIL import TiffTags

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f"no TIFF layout for {channels} channels here")
    bits = pixels.dtype.itemsize * 8
    directory[_WIDTH], directory[_LENGTH] = pixels.shape[1], pixels.shape[0]
    directory[_BITS] = (bits,) * channels
    directory[_COMPRESSION] = _ADOBE_DEFLATE
    directory[_PHOTOMETRIC] = 1 if channels == 1 else 2  # black is zero / RGB
    directory[_SAMPLES] = channels
    directory[_ROWS_PER_STRIP] = rows_per_strip
    directory[_PLANAR] = 1
    directory[_PREDICTOR] = _HORIZONTAL
    if channels == 4:
        directory[_EXTRA_SAMPLES] = 2  # unassociated alpha, as the pipeline's RGBA is
    offsets, position = [], 0
    for strip in strips:
        offsets.append(position)  # relative: Pillow adds where its directory data ends
        position += len(strip)
    for tag, values in ((_STRIP_OFFSETS, offsets), (_STRIP_COUNTS, [len(strip) for strip in strips])):
        directory.tagtype[tag] = TiffTags.LONG
        directory[tag] = tuple(values)


def encode_pages_with_metadata(pages: Sequence[np.ndarray], carried: Sequence[Any]) -> bytes:
    """A TIFF of ``pages`` (any of the pipeline's layouts and depths), page i carrying ``carried[i]`` (a Metadata)."""
    from . import metadata

    tags, profiles, layouts = [], [], []
    for pixels, page_metadata in zip(pages, carried, strict=True):
        if pixels.ndim == 3 and pixels.shape[2] == 2:  # gray+alpha as RGBA: equal colour channels
            gray, alpha = pixels[:, :, 0], pixels[:, :, 1]
            pixels = np.dstack([gray, gray, gray, alpha])
        saved = metadata.pillow_save_options(page_metadata, "tiff", pixels.shape[1], pixels.shape[0])
        layouts.append(pixels)
        tags.append(saved.get("tiffinfo"))
        profiles.append(saved.get("icc_profile"))
    return encode_tiff(layouts, tags, profiles)


def read_pages_pillow_cannot(data: bytes, path: Any) -> tuple[tuple[np.ndarray, ...], tuple[Any, ...], tuple[str, ...]]:
    """Every page of a TIFF that Pillow cannot open (float samples, planar layout, ...), read by tifffile, with
    each page's ICC profile, XMP, IPTC and density (:func:`_page_metadata`), and a note where EXIF is left.

    OpenCV decodes such files too, but not reliably: a planar float64 page came back as different
    garbage on every call. Pages come out upright, as (H, W) or (H, W, C) arrays of uint8/uint16;
    float samples (0..1) keep their precision as 16 bits.
    """
    import io

    import tifffile

    from ..errors import InputError
    from .images import apply_orientation, to_supported_depth

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as opened:
            pages = [(page.asarray(), page.planarconfig, page.samplesperpixel, page.tags.get(274))
                     for page in opened.pages]
            carried = tuple(_page_metadata(page, opened.byteorder) for page in opened.pages)
            has_exif = any(34665 in page.tags for page in opened.pages)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as error:
        raise InputError(f"cannot decode {path}: {error}", hint="check that the file opens in an image viewer") from None
    frames = []
    for pixels, planar, samples, orientation in pages:
        if planar == tifffile.PLANARCONFIG.SEPARATE and samples > 1 and pixels.ndim == 3:
            pixels = np.moveaxis(pixels, 0, -1)  # (C, H, W) -> (H, W, C)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        if pixels.ndim not in (2, 3) or pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4):
            raise InputError(f"cannot decode {path}: a page of shape {pixels.shape} is not an image lightsr reads",
                             hint="convert it to 8- or 16-bit RGB, RGBA or gray first")
        pixels = np.ascontiguousarray(to_supported_depth(pixels, path))
        frames.append(apply_orientation(pixels, int(orientation.value) if orientation is not None else 1))
    notes = (f"note: {path.name}'s EXIF is not carried (its ICC profile, XMP, IPTC and density are): its pixel "
             "layout is one Pillow, which lightsr writes EXIF with, cannot read",) if has_exif else ()
    return tuple(frames), carried[:len(frames)], notes


def _page_metadata(page: Any, byteorder: str) -> Any:
    """What a page's own tags say that an output keeps: ICC profile, XMP, IPTC and density (EXIF is not read
    here: Pillow, which lightsr writes EXIF with, cannot open these files)."""
    from .metadata import Metadata

    def raw(code: int) -> bytes | None:
        tag = page.tags.get(code)
        if tag is None:
            return None
        value = tag.value
        if isinstance(value, (tuple, list)):  # IPTC is often stored as LONGs (Photoshop's way)
            return struct.pack(f"{byteorder}{len(value)}I", *value)
        return bytes(value) if isinstance(value, (bytes, bytearray)) else None

    return Metadata(icc=raw(34675), xmp=raw(700), iptc=raw(33723), dpi=_density(page))


def _density(page: Any) -> tuple[float, float] | None:
    """Dots per inch from XResolution/YResolution and their unit (inches or centimetres); None without a unit."""
    x, y, unit = (page.tags.get(code) for code in (282, 283, 296))
    per_inch = {2: 1.0, 3: 2.54}.get(int(unit.value) if unit is not None else 2)
    if x is None or y is None or per_inch is None:
        return None
    try:
        return tuple(float(n) / float(d) * per_inch for n, d in (x.value, y.value))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
