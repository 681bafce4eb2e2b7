"""What a picture says about itself (EXIF, XMP, IPTC, ICC profile, comments and text, pixel density), read from
one file and written into another.

Pillow parses and writes every block (no hand-written EXIF or ICC parser). What is carried is kept as
bytes in a frozen ``Metadata``; when writing, EXIF gets orientation 1 (the pixels were rotated on
reading) and the new pixel dimensions. A block the output format cannot hold is named in the
returned list of losses, which the pipeline says once per run: never dropped silently.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, replace
from typing import Any

_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_ORIENTATION, _PIXEL_X, _PIXEL_Y = 0x0112, 0xA002, 0xA003
_XMP_TAG, _IPTC_TAG, _ICC_TAG, _PHOTOSHOP_TAG = 700, 33723, 34675, 34377
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 282, 283, 296
_IPTC_RESOURCE = 0x0404
# TIFF tags that describe how a file stores its pixels (not the picture): a TIFF's first IFD
# holds them beside the EXIF fields, and they must not travel into another file.
_STORAGE_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 282, 283, 284, 296, 297,
    317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532,
    _XMP_TAG, _IPTC_TAG, _ICC_TAG, _PHOTOSHOP_TAG, _EXIF_IFD, _GPS_IFD, _INTEROP_IFD, 50341, 59932, 59933,
})
_FORMATS_WITH = {  # JPEG XL: pillow-jxl-plugin writes EXIF and XMP boxes, but no ICC profile
    "exif": {"jpeg", "png", "webp", "tiff", "heic", "avif", "jxl"},
    "xmp": {"jpeg", "png", "webp", "tiff", "heic", "avif", "jxl"},
    "iptc": {"jpeg", "tiff"},
    "icc": {"jpeg", "png", "webp", "tiff", "heic", "avif"},
    "comment": {"jpeg", "png", "gif"},
    "texts": {"png"},
    "dpi": {"jpeg", "png", "tiff", "bmp"},
    "png_display": {"png"},
}
NAMES = {"exif": "EXIF", "xmp": "XMP", "iptc": "IPTC", "icc": "ICC profile", "comment": "comment",
         "texts": "PNG text", "dpi": "pixel density (dpi)", "png_display": "PNG gamma/chromaticity/pixel aspect"}
_CARRIED = ("exif", "xmp", "iptc", "icc", "comment", "texts", "dpi", "png_display")


@dataclass(frozen=True)
class Metadata:
    exif: bytes | None = None
    """EXIF as Pillow writes it (TIFF structure), pixel-storage tags removed; orientation as read."""
    xmp: bytes | None = None
    iptc: bytes | None = None
    """IPTC-IIM records (the bytes inside a JPEG's Photoshop block or a TIFF's IPTC tag)."""
    icc: bytes | None = None
    comment: bytes | None = None
    """Free text about the picture: a JPEG's COM segment, a GIF's comment, a PNG's "Comment" text."""
    texts: tuple[tuple[str, str], ...] = ()
    """A PNG's other text chunks (title, author, creation time, ...) as (keyword, text), in file order."""
    dpi: tuple[float, float] | None = None
    """Pixel density as stored (dots per inch); kept as it is, like EXIF's resolution fields."""
    png_display: tuple[tuple[bytes, bytes], ...] = ()
    """A PNG's gAMA, cHRM and sRGB chunks and a pixel aspect ratio without density (pHYs, unit 0), as (type,
    body): how a viewer without an ICC profile shows its colours, and how wide a pixel is."""

    def present(self) -> list[str]:
        """The blocks this metadata holds (a lone sRGB chunk says nothing other formats do not assume)."""
        held = [name for name in _CARRIED if getattr(self, name)]
        if self.png_display and all(kind == b"sRGB" for kind, _ in self.png_display):
            held.remove("png_display")
        return held


@dataclass(frozen=True)
class MetadataPolicy:
    strip: bool = False
    """Write no EXIF, XMP, IPTC, comments or text (privacy: GPS, camera serial numbers, names)."""
    strip_icc: bool = False
    """Drop the ICC profile too (the colours then look different in managed viewers)."""
    to_srgb: bool = False
    """Convert the pixels from their profile to sRGB and tag the output sRGB."""


def read_metadata(picture: Any) -> Metadata:
    """The metadata of an opened Pillow image (its current frame or page); nothing is decoded."""
    info = picture.info
    exif = _portable_exif(picture)
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    iptc = None
    icc = info.get("icc_profile")
    tags = getattr(picture, "tag_v2", None)
    if tags is not None:  # TIFF: the page's own tags (Pillow's info keeps an earlier page's profile after a seek)
        xmp = tags.get(_XMP_TAG)
        iptc = tags.get(_IPTC_TAG)
        icc = tags.get(_ICC_TAG)
    photoshop = info.get("photoshop")
    if isinstance(photoshop, dict):  # JPEG APP13: Pillow splits the resources, 0x0404 is IPTC
        iptc = iptc or photoshop.get(_IPTC_RESOURCE)
    comment, texts = _comment_and_texts(picture)
    return Metadata(exif=exif, xmp=_as_bytes(xmp), iptc=_as_bytes(iptc), icc=_as_bytes(icc), comment=comment,
                    texts=texts, dpi=_density(picture), png_display=_png_display(picture))


def _comment_and_texts(picture: Any) -> tuple[bytes | None, tuple[tuple[str, str], ...]]:
    """The comment (JPEG COM, GIF comment, PNG "Comment") and a PNG's other text chunks read before its pixels
    (where writers put them; those after the pixels would need a full decode to reach)."""
    comment = _as_bytes(picture.info.get("comment"))
    if picture.format != "PNG":
        return comment, ()
    texts = [(key, str(value)) for key, value in picture.info.items()
             if isinstance(key, str) and isinstance(value, str) and key != "XML:com.adobe.xmp"]
    for key, value in texts:
        if key == "Comment":
            comment = comment or value.encode("utf-8")
    return comment, tuple((key, value) for key, value in texts if key != "Comment")


def _density(picture: Any) -> tuple[float, float] | None:
    """The density the file itself stores. Pillow's ``dpi`` is that, except that for a JPEG whose JFIF header has
    no unit it comes from the EXIF (which travels with the EXIF) or is a made-up 72, and for a TIFF without a
    resolution unit it is a bare ratio; some files store 0 or nonsense."""
    if picture.format in ("JPEG", "MPO") and picture.info.get("jfif_unit") not in (1, 2):
        return None
    if picture.format == "TIFF" and getattr(picture, "tag_v2", {}).get(_RESOLUTION_UNIT) not in (2, 3):
        return None
    try:
        x, y = (float(value) for value in picture.info.get("dpi"))
    except (TypeError, ValueError):
        return None
    return (x, y) if 0 < x < 1e6 and 0 < y < 1e6 else None


def _png_display(picture: Any) -> tuple[tuple[bytes, bytes], ...]:
    """A PNG's gAMA, cHRM, sRGB and aspect-only pHYs chunks as Pillow read them, back in their standard form."""
    if picture.format != "PNG":
        return ()
    info, chunks = picture.info, []
    try:
        if "gamma" in info:
            chunks.append((b"gAMA", struct.pack(">I", round(float(info["gamma"]) * 100000))))
        if "chromaticity" in info and len(info["chromaticity"]) == 8:
            chunks.append((b"cHRM", struct.pack(">8I", *(round(float(v) * 100000) for v in info["chromaticity"]))))
        if "srgb" in info:
            chunks.append((b"sRGB", bytes([int(info["srgb"]) & 0xFF])))
        if "aspect" in info and "dpi" not in info:
            chunks.append((b"pHYs", struct.pack(">IIB", *(int(v) for v in info["aspect"]), 0)))
    except (TypeError, ValueError, struct.error):  # a damaged chunk is dropped, not fatal
        return ()
    return tuple(chunks)


def _as_bytes(value: Any) -> bytes | None:
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (tuple, list)):  # a TIFF BYTE tag read as a tuple of ints
        return bytes(value)
    return bytes(value)


def _portable_exif(picture: Any) -> bytes | None:
    """EXIF that can go into another file: a JPEG/PNG/WebP/HEIC/AVIF's own block as it is (checked and
    updated when written); a TIFF's first IFD without the tags that describe its pixel storage."""
    raw = picture.info.get("exif")
    if raw and getattr(picture, "tag_v2", None) is None:
        return bytes(raw)
    try:
        source = picture.getexif()
    except Exception:  # noqa: BLE001 - damaged EXIF must not stop an otherwise good image
        return None
    from PIL import Image

    exif = Image.Exif()
    for tag, value in source.items():
        if tag not in _STORAGE_TAGS:
            exif[tag] = value
    for pointer in (_EXIF_IFD, _GPS_IFD):
        try:
            sub = source.get_ifd(pointer)
        except Exception:  # noqa: BLE001 - a damaged sub-IFD is dropped, the rest kept
            sub = {}
        if sub:
            exif.get_ifd(pointer).update({tag: value for tag, value in sub.items() if tag != _INTEROP_IFD})
    if not len(exif) and not exif.get_ifd(_EXIF_IFD) and not exif.get_ifd(_GPS_IFD):
        return None
    try:
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - a value Pillow cannot write back must not stop an otherwise good image
        return None


def orientation(picture: Any) -> int:
    """The EXIF orientation (1-8) of an opened Pillow image; 1 when absent or damaged."""
    try:
        value = picture.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged metadata must not stop an otherwise good image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def for_output(metadata: Metadata, policy: MetadataPolicy) -> Metadata:
    """What the policy lets through. With --strip-metadata, what says how to show the pixels stays (the ICC profile
    unless --strip-icc, the density, PNG gamma): dropping those changes colours or print size, and names no one."""
    kept = Metadata(icc=metadata.icc, dpi=metadata.dpi, png_display=metadata.png_display) if policy.strip else metadata
    return replace(kept, icc=None) if policy.strip_icc else kept


def losses(metadata: Metadata, image_format: str) -> list[str]:
    """Names of the blocks that ``metadata`` has and ``image_format`` cannot hold."""
    return [NAMES[name] for name in metadata.present() if image_format not in _FORMATS_WITH[name]]


def updated_exif(exif_bytes: bytes, width: int, height: int) -> Any | None:
    """A Pillow Exif with orientation 1 and the new pixel dimensions; None when the block cannot be read."""
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(exif_bytes)
    except Exception:  # noqa: BLE001 - a damaged block is not written rather than failing the image
        return None
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    exif_ifd = exif.get_ifd(_EXIF_IFD)
    if _PIXEL_X in exif_ifd or _PIXEL_Y in exif_ifd:
        exif_ifd[_PIXEL_X], exif_ifd[_PIXEL_Y] = width, height
    return exif


_XMP_NUMBERS = ("tiff:Orientation", "exif:PixelXDimension", "exif:PixelYDimension", "tiff:ImageWidth",
                "tiff:ImageLength")


def updated_xmp(xmp: bytes, width: int, height: int) -> bytes:
    """XMP whose copies of the EXIF orientation and sizes say 1 and the new sizes (as an attribute or an element;
    the way Pillow's exif_transpose finds the orientation in XMP). Everything else is kept as it is."""
    values = dict(zip(_XMP_NUMBERS, (1, width, height, width, height), strict=True))
    if not any(name.encode() in xmp for name in values):
        return xmp
    for name, value in values.items():
        key = re.escape(name.encode())
        xmp = re.sub(rb"(" + key + rb'=["\'])\d+(["\'])', rb"\g<1>" + str(value).encode() + rb"\g<2>", xmp)
        xmp = re.sub(rb"(<" + key + rb">)\s*\d+\s*(</" + key + rb">)", rb"\g<1>" + str(value).encode() + rb"\g<2>", xmp)
    return xmp


def exif_block_for_output(exif_bytes: bytes, width: int, height: int) -> bytes | None:
    """The EXIF block to write beside new pixels, rebuilt by Pillow (orientation 1, new sizes, no old thumbnail);
    None when it cannot be read. Pillow does all EXIF parsing and writing: lightsr has no EXIF parser of its own."""
    rebuilt = updated_exif(exif_bytes, width, height)
    return rebuilt.tobytes() if rebuilt is not None else None


def pillow_save_options(metadata: Metadata, image_format: str, width: int, height: int) -> dict[str, Any]:
    """Keyword arguments for Pillow's ``save`` that write ``metadata`` into ``image_format``."""
    options: dict[str, Any] = {}
    if metadata.xmp:
        metadata = replace(metadata, xmp=updated_xmp(metadata.xmp, width, height))
    if metadata.icc and image_format in _FORMATS_WITH["icc"]:
        options["icc_profile"] = metadata.icc
    if metadata.dpi and image_format in ("jpeg", "png"):
        options["dpi"] = metadata.dpi
    if metadata.comment and image_format in ("jpeg", "gif"):
        options["comment"] = metadata.comment
    if image_format == "tiff":
        exif = updated_exif(metadata.exif, width, height) if metadata.exif else None
        return {**options, "tiffinfo": _tiff_tags(metadata, exif)}
    if metadata.exif and image_format in _FORMATS_WITH["exif"]:
        block = exif_block_for_output(metadata.exif, width, height)
        if block is not None:
            options["exif"] = block
    if image_format == "png":
        options["pnginfo"] = _png_info(metadata)
    elif metadata.xmp and image_format in _FORMATS_WITH["xmp"]:
        options["xmp"] = metadata.xmp
    if metadata.iptc and image_format == "jpeg":
        options["extra"] = jpeg_iptc_segment(metadata.iptc)
    return options


def png_text_chunks(metadata: Metadata) -> list[tuple[bytes, bytes]]:
    """(type, body) of the PNG chunks for the colour chunks, the comment, the text and the XMP, in that order."""
    chunks = list(metadata.png_display)
    texts = ([("Comment", metadata.comment.decode("utf-8", "replace"))] if metadata.comment else []) + list(metadata.texts)
    for keyword, text in texts:
        name = keyword.encode("latin-1", "replace")[:79] or b"Comment"
        try:
            chunks.append((b"tEXt", name + b"\x00" + text.encode("latin-1")))
        except UnicodeEncodeError:  # tEXt is Latin-1; iTXt holds UTF-8 (uncompressed, no language)
            chunks.append((b"iTXt", name + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")))
    if metadata.xmp:
        chunks.append((b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + metadata.xmp))
    return chunks


def _png_info(metadata: Metadata) -> Any:
    """Pillow's PngInfo holding :func:`png_text_chunks` (Pillow writes the colour chunks before the palette), but
    an aspect-only pHYs, which Pillow does not pass on: see images.with_png_aspect."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for kind, body in png_text_chunks(metadata):
        if kind != b"pHYs":
            info.add(kind, body)
    return info


def _tiff_tags(metadata: Metadata, exif: Any) -> Any:
    """EXIF fields as TIFF tags (sub-IFDs as dicts, which Pillow writes as IFDs), plus XMP and IPTC."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    if exif is not None:
        for tag, value in exif.items():
            if tag not in _STORAGE_TAGS:
                tags[tag] = value
        for pointer in (_EXIF_IFD, _GPS_IFD):
            sub = exif.get_ifd(pointer)
            if sub:
                tags[pointer] = dict(sub)
    if metadata.xmp:
        tags[_XMP_TAG] = metadata.xmp
    if metadata.iptc:
        tags[_IPTC_TAG] = metadata.iptc
    if metadata.dpi:
        tags[_RESOLUTION_UNIT], (tags[_X_RESOLUTION], tags[_Y_RESOLUTION]) = 2, metadata.dpi  # 2: inches
    return tags


def jpeg_iptc_segment(iptc: bytes) -> bytes:
    """A JPEG APP13 segment holding IPTC records: 'Photoshop 3.0', one 8BIM resource 0x0404.

    Pillow reads this block but has no option to write it; the container is four fixed fields
    (the IPTC records themselves are carried unchanged).
    """
    body = iptc + (b"\x00" if len(iptc) % 2 else b"")
    resource = b"8BIM" + struct.pack(">H", _IPTC_RESOURCE) + b"\x00\x00" + struct.pack(">I", len(iptc)) + body
    payload = b"Photoshop 3.0\x00" + resource
    if len(payload) + 2 > 0xFFFF:
        return b""  # too large for one segment; said as a loss by the caller's check of the result
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def convert_to_srgb(picture: Any, icc: bytes, output_mode: str | None = None, colorimetric: bool = False) -> Any:
    """An 8-bit Pillow image converted from the profile ``icc`` to sRGB, in ``output_mode`` (default: its own
    mode), perceptual intent unless ``colorimetric`` (relative colorimetric, as print previews use)."""
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    target = ImageCms.createProfile("sRGB")
    intent = ImageCms.Intent.RELATIVE_COLORIMETRIC if colorimetric else ImageCms.Intent.PERCEPTUAL
    return ImageCms.profileToProfile(picture, source, target, renderingIntent=intent,
                                     outputMode=output_mode or picture.mode)


def profile_colour_space(icc: bytes) -> str | None:
    """The colour space an ICC profile describes ("RGB", "CMYK", "GRAY", ...), None where lcms cannot read it."""
    from PIL import ImageCms

    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def bmp_with_density(encoded: bytes, dpi: tuple[float, float]) -> bytes:
    """A BMP with its pixel density set, the one piece of metadata BMP holds: the info header's pixels-per-metre
    fields (bytes 38-45 of the file, in every header version since BITMAPINFOHEADER), which OpenCV, which
    writes lightsr's BMPs, leaves at 0."""
    header_size = struct.unpack_from("<I", encoded, 14)[0]
    if header_size < 40:  # an OS/2 BITMAPCOREHEADER has no density fields; OpenCV never writes one
        return encoded
    per_metre = struct.pack("<ii", *(round(value / 0.0254) for value in dpi))
    return encoded[:38] + per_metre + encoded[46:]
