"""Photos keep everything: EXIF (GPS, dates, orientation reset, sizes updated), XMP, IPTC, ICC; animations,
pages, HEIC and AVIF (issue 12). Tiny generated inputs through a toy x2 network (nearest neighbour)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin, TiffImagePlugin

from lightsr_cli.media import images, metadata
from lightsr_cli.media.metadata import MetadataPolicy
from lightsr_cli.pipeline.images import OutputSettings
from lightsr_cli.pipeline.jobs import Job, MediaKind
from lightsr_cli.pipeline.run import run_jobs

from .test_hostile_runs import Recorder as NoteRecorder
from .test_hostile_runs import cli, toy_pool

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description>lightsr-xmp-marker</rdf:Description>'
       b"</rdf:RDF></x:xmpmeta>")
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x05\x00\x0bBridge Test" + b"\x1c\x02\x74\x00\x07(c) Ada"
GPS_LATITUDE = (48.0, 51.0, 29.5)


def icc_profile(tags: list[tuple[bytes, bytes]], device_class: bytes, colour_space: bytes, pcs: bytes) -> bytes:
    """An ICC v2 profile from its tags (signature, data), built field by field."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += b"\x00" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + device_class + colour_space + pcs
              + bytes(12) + b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4) + bytes(8) + bytes(4)
              + struct.pack(">iii", 63190, 65536, 54061) + b"lcms" + bytes(44))
    assert len(header) == 128
    return header + table + body


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + struct.pack(">iii", *(round(v * 65536) for v in (x, y, z)))


def _desc(description: bytes) -> bytes:
    return (b"desc\x00\x00\x00\x00" + struct.pack(">I", len(description) + 1) + description + b"\x00"
            + b"\x00" * 12 + b"\x00\x00" + b"\x00" + b"\x00" * 67)


_COPYRIGHT = (b"cprt", b"text\x00\x00\x00\x00none\x00\x00\x00\x00")
_D50 = (0.9642, 1.0, 0.8249)


def display_p3_profile() -> bytes:
    """A Display P3 matrix/TRC ICC v2 profile (D50-adapted primaries, gamma 2.2)."""
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, int(2.2 * 256)) + b"\x00\x00"
    tags = [(b"desc", _desc(b"Display P3 (test)")), (b"wtpt", _xyz(*_D50)), (b"rXYZ", _xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", _xyz(0.2920, 0.6922, 0.0419)), (b"bXYZ", _xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), _COPYRIGHT]
    return icc_profile(tags, b"mntr", b"RGB ", b"XYZ ")


def _srgb_to_lab(rgb: np.ndarray) -> tuple[float, float, float]:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz_d50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                           [0.0139322, 0.0971045, 0.7141733]])
    xyz = to_xyz_d50 @ linear / np.array(_D50)
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def swapped_inks_cmyk_profile() -> bytes:
    """A CMYK printer profile (Lab PCS, a 2-point lut8 A2B0) whose cyan ink shows as magenta and magenta
    as cyan: a conversion through it is told apart from the plain ink formula at a glance."""
    clut = b""
    for c, m, y, k in np.ndindex(2, 2, 2, 2):  # the first input channel varies slowest, as the lut wants
        lightness, a, b = _srgb_to_lab(np.array([(1 - m) * (1 - k), (1 - c) * (1 - k), (1 - y) * (1 - k)], float))
        clut += bytes([round(lightness / 100 * 255), *(round(min(max(v + 128, 0), 255)) for v in (a, b))])
    identity = bytes(range(256))
    a2b0 = (b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536)
            + identity * 4 + clut + identity * 3)
    tags = [(b"desc", _desc(b"Swapped inks (test)")), (b"wtpt", _xyz(*_D50)), (b"A2B0", a2b0), _COPYRIGHT]
    return icc_profile(tags, b"prtr", b"CMYK", b"Lab ")


P3 = display_p3_profile()
SWAPPED_INKS = swapped_inks_cmyk_profile()


class Recorder(NoteRecorder):
    """Notes, failures and the progress tasks opened (description, total)."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[tuple[str, float | None]] = []

    def task(self, description, total, unit=""):
        self.tasks.append((description, total))
        return super().task(description, total, unit)


def photo_exif(orientation: int, width: int, height: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "LightCam"  # Make
    exif[0x0110] = "LC-1"  # Model
    exif[0x0112] = orientation
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    exif_ifd[0xA002], exif_ifd[0xA003] = width, height
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", GPS_LATITUDE
    return exif


def jpeg_iptc(iptc: bytes) -> bytes:
    """An APP13 'Photoshop 3.0' segment with one 8BIM IPTC resource (built here independently of the code)."""
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def make_photo(path: Path, fmt: str, orientation: int = 6, size=(10, 6), icc: bytes = P3, depth16=False) -> Path:
    """A photo stored ``size`` (w, h) with EXIF (GPS, date, orientation), XMP, IPTC (JPEG/TIFF) and an ICC profile."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(30, 220, (size[1], size[0], 3)).astype(np.uint8)
    exif = photo_exif(orientation, *size)
    options: dict = {"icc_profile": icc}
    if fmt == "jpeg":
        options.update(exif=exif, xmp=XMP, extra=jpeg_iptc(IPTC), quality=100)
    elif fmt == "png":
        text = PngImagePlugin.PngInfo()
        text.add_itxt("XML:com.adobe.xmp", XMP.decode())
        options.update(exif=exif, pnginfo=text)
    elif fmt == "webp":
        options.update(exif=exif, xmp=XMP, lossless=True)
    elif fmt == "tiff":
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, value in exif.items():
            tags[tag] = value
        tags[0x8769], tags[0x8825] = dict(exif.get_ifd(0x8769)), dict(exif.get_ifd(0x8825))
        tags[700], tags[33723] = XMP, IPTC
        options = {"tiffinfo": tags, "icc_profile": icc}
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt.upper(), **options)
    return path


def upscale(source: Path, target: Path, policy: MetadataPolicy | None = None, recorder: Recorder | None = None,
            quality: int | None = None):
    settings = OutputSettings(quality=quality, metadata=policy or MetadataPolicy())
    summary = run_jobs(toy_pool(), [Job(source, target, MediaKind.IMAGE)], settings, reporter=recorder or Recorder())
    assert not summary.failed, summary.failed
    return Image.open(target)


def iptc_of(picture: Image.Image) -> bytes | None:
    return metadata.read_metadata(picture).iptc


def xmp_of(picture: Image.Image) -> bytes:
    return metadata.read_metadata(picture).xmp or b""


# -- metadata carried over --------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff"])
def test_every_kind_of_metadata_is_carried_with_orientation_normal_and_sizes_updated(tmp_path, fmt, orientation):
    suffix = images.FORMAT_EXTENSIONS[fmt]
    source = make_photo(tmp_path / f"photo{suffix}", fmt, orientation, size=(10, 6))
    out = upscale(source, tmp_path / f"photo_x2{suffix}")
    assert out.size == (12, 20)  # stored 10 x 6, turned upright (6 x 10), doubled
    exif = out.getexif()
    assert exif.get(0x0112, 1) == 1
    assert exif[0x010F] == "LightCam" and exif[0x0110] == "LC-1"
    assert exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == (12, 20)
    gps = exif.get_ifd(0x8825)
    assert gps[1] == "N" and tuple(float(v) for v in gps[2]) == GPS_LATITUDE
    assert b"lightsr-xmp-marker" in xmp_of(out)
    assert out.info.get("icc_profile") == P3
    if fmt in ("jpeg", "tiff"):
        assert iptc_of(out) == IPTC


def test_orientation_6_turns_the_pixels_clockwise(tmp_path):
    stored = np.zeros((6, 10, 3), np.uint8)
    stored[:, 5:] = 255  # right half white
    source = tmp_path / "turned.png"
    Image.fromarray(stored).save(source, exif=photo_exif(6, 10, 6))
    out = np.asarray(upscale(source, tmp_path / "turned_x2.png"))
    assert out.shape == (20, 12, 3)
    assert out[:8].mean() < 10 and out[12:].mean() > 245  # clockwise: the stored left half ends on top


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_strip_metadata_leaves_only_the_icc_profile_and_strip_icc_drops_it(tmp_path, fmt):
    suffix = images.FORMAT_EXTENSIONS[fmt]
    source = make_photo(tmp_path / f"p{suffix}", fmt)
    stripped = upscale(source, tmp_path / f"s{suffix}", MetadataPolicy(strip=True))
    assert not stripped.getexif() and not xmp_of(stripped) and iptc_of(stripped) is None
    assert stripped.info.get("icc_profile") == P3
    assert b"LightCam" not in (tmp_path / f"s{suffix}").read_bytes()
    bare = upscale(source, tmp_path / f"b{suffix}", MetadataPolicy(strip=True, strip_icc=True))
    assert not bare.getexif() and "icc_profile" not in bare.info


def test_cli_strip_flags_and_a_loss_note_said_once(tmp_path):
    make_photo(tmp_path / "in" / "a.jpg", "jpeg")
    make_photo(tmp_path / "in" / "b.jpg", "jpeg")
    code, _, err = cli("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "bmp"), "-f", "bmp", "-s", "2",
                       "--device", "cpu")
    assert code == 0, err
    assert err.count("EXIF, XMP, IPTC, ICC profile cannot be written to BMP") == 1
    code, _, err = cli("upscale", str(tmp_path / "in" / "a.jpg"), "-o", str(tmp_path / "s.jpg"), "-s", "2",
                       "--strip-metadata", "--device", "cpu")
    assert code == 0, err
    out = Image.open(tmp_path / "s.jpg")
    assert not out.getexif() and not xmp_of(out) and out.info.get("icc_profile") == P3
    code, _, err = cli("upscale", str(tmp_path / "in" / "a.jpg"), "-o", str(tmp_path / "n.jpg"), "-s", "2",
                       "--strip-metadata", "--strip-icc", "--device", "cpu")
    assert code == 0, err and "icc_profile" not in Image.open(tmp_path / "n.jpg").info


def test_a_format_without_iptc_says_so(tmp_path):
    source = make_photo(tmp_path / "p.jpg", "jpeg")
    recorder = Recorder()
    upscale(source, tmp_path / "p_x2.webp", recorder=recorder)
    assert recorder.notes == ["note: IPTC cannot be written to WEBP"]


def test_colours_stay_as_stored_unless_to_srgb_is_asked(tmp_path):
    source = tmp_path / "p3.png"
    Image.fromarray(np.full((4, 4, 3), (200, 100, 50), np.uint8)).save(source, icc_profile=P3)
    kept = upscale(source, tmp_path / "kept.png")
    assert tuple(np.asarray(kept)[0, 0]) == (200, 100, 50) and kept.info["icc_profile"] == P3
    converted = upscale(source, tmp_path / "srgb.png", MetadataPolicy(to_srgb=True))
    expected = ImageCms.profileToProfile(Image.open(source), ImageCms.ImageCmsProfile(io.BytesIO(P3)),
                                         ImageCms.createProfile("sRGB"))
    assert tuple(np.asarray(converted)[0, 0]) == tuple(np.asarray(expected)[0, 0]) != (200, 100, 50)
    assert converted.info["icc_profile"] == metadata.srgb_profile()


def test_sixteen_bit_png_keeps_depth_and_metadata(tmp_path):
    import cv2

    deep = (np.random.default_rng(2).integers(0, 65535, (5, 7, 3))).astype(np.uint16)
    encoded = images.encode_image(deep, images.ImageEncodeSettings("png"),
                                  metadata.Metadata(exif=photo_exif(1, 7, 5).tobytes(), xmp=XMP, icc=P3))
    source = tmp_path / "deep.png"
    source.write_bytes(encoded)
    out = upscale(source, tmp_path / "deep_x2.png")
    pixels = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.shape == (10, 14, 3)
    np.testing.assert_array_equal(pixels[::2, ::2, ::-1], deep)
    assert out.info["icc_profile"] == P3 and b"lightsr-xmp-marker" in xmp_of(out)
    assert out.getexif().get_ifd(0x8769)[0xA002] == 14


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_keeps_depth_and_every_kind_of_metadata(tmp_path, channels):
    import cv2

    deep = np.random.default_rng(5).integers(0, 65535, (5, 7, channels)).astype(np.uint16)
    source = tmp_path / "deep.png"
    source.write_bytes(images.encode_image(deep, images.ImageEncodeSettings("png"), metadata.Metadata(
        exif=photo_exif(1, 7, 5).tobytes(), xmp=XMP, icc=P3)))
    recorder = Recorder()
    upscale(source, tmp_path / "deep_x2.tif", recorder=recorder)
    target = tmp_path / "deep_x2.tif"
    pixels = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.shape == (10, 14, channels)
    order = [2, 1, 0, 3][:channels]  # OpenCV reads BGR(A)
    np.testing.assert_array_equal(pixels[::2, ::2, order], deep)
    out = Image.open(target)
    exif = out.getexif()
    assert exif[0x010F] == "LightCam" and exif.get(0x0112, 1) == 1
    assert exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09" and exif.get_ifd(0x8769)[0xA002] == 14
    assert exif.get_ifd(0x8825)[1] == "N"
    assert out.info["icc_profile"] == P3 and b"lightsr-xmp-marker" in xmp_of(out)
    assert recorder.notes == []  # nothing lost, so nothing said


def test_sixteen_bit_colour_tiff_pages_keep_their_own_metadata_and_iptc(tmp_path):
    pages = (np.full((4, 5, 3), 40000, np.uint16), np.full((3, 5, 3), 20000, np.uint16))
    carried = [metadata.Metadata(exif=photo_exif(1, 5, 4).tobytes(), xmp=XMP, iptc=IPTC, icc=P3), metadata.Metadata()]
    from lightsr_cli.media import animation

    target = tmp_path / "pages.tif"
    target.write_bytes(animation.encode_pages(pages, carried, images.ImageEncodeSettings("tiff")))
    picture = images.decode_picture(target.read_bytes(), target)
    assert [(p.dtype, p.shape, int(p.max())) for p in picture.frames] == [
        (np.dtype(np.uint16), (4, 5, 3), 40000), (np.dtype(np.uint16), (3, 5, 3), 20000)]
    first, second = picture.metadata
    assert first.iptc == IPTC and first.icc == P3 and first.xmp == XMP and b"LightCam" in first.exif
    assert second == metadata.Metadata()


# -- animations and pages ---------------------------------------------------------------------------

def animation_frames(alpha: bool) -> list[Image.Image]:
    colours = [(250, 20, 20), (20, 250, 20), (20, 20, 250)]
    frames = []
    for index, colour in enumerate(colours):
        pixels = np.zeros((8, 10, 4), np.uint8)
        pixels[..., :3] = colour
        pixels[..., 3] = 255
        pixels[index * 2:index * 2 + 3, :, :3] = 255 - np.array(colour)  # a band that moves
        if alpha:
            pixels[:, :2, 3] = 0
        frames.append(Image.fromarray(pixels if alpha else pixels[..., :3]))
    return frames


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_animations_keep_every_frame_durations_and_loop(tmp_path, fmt):
    durations = [40, 90, 150]
    frames = animation_frames(alpha=fmt != "gif")
    source = tmp_path / f"anim.{fmt}"
    save = {"save_all": True, "append_images": frames[1:], "duration": durations, "loop": 2}
    if fmt == "webp":
        save["lossless"] = True
    if fmt != "webp":
        save["disposal"] = [1, 2, 1]
    frames[0].save(source, fmt.upper(), **save)
    recorder = Recorder()
    out = upscale(source, tmp_path / f"anim_x2.{fmt}", recorder=recorder, quality=101 if fmt == "webp" else None)
    assert getattr(out, "is_animated", False) and out.n_frames == 3
    assert out.size == (20, 16) and out.info.get("loop") == 2
    seen_durations, seen_disposals = [], []
    for index in range(3):
        out.seek(index)
        got = np.asarray(out.convert("RGBA")).astype(int)  # loads the frame (WebP says its duration then)
        seen_durations.append(out.info["duration"])
        seen_disposals.append(out.disposal_method if fmt == "gif" else out.info.get("disposal"))
        want = np.asarray(frames[index].convert("RGBA")).repeat(2, 0).repeat(2, 1).astype(int)
        seen = want[..., 3] > 0  # a fully transparent pixel's colour is not kept by every encoder
        assert np.array_equal(got[..., 3], want[..., 3])
        # WebP written lossless (quality above 100) and APNG: exact; GIF within its rebuilt palette's dithering.
        assert np.abs(got[seen] - want[seen]).max() <= (8 if fmt == "gif" else 0)
    assert seen_durations == durations
    if fmt != "webp":
        assert seen_disposals == [1, 2, 1]
    assert any(task == ("frames", 3) for task in recorder.tasks)


def test_gif_palette_is_rebuilt_from_the_upscaled_frame(tmp_path):
    # 200 shades in one frame: the output palette holds the upscaled frame's own colours.
    ramp = np.stack([np.arange(200, dtype=np.uint8)] * 3, axis=1)[None].repeat(4, axis=0)
    source = tmp_path / "ramp.gif"
    frames = [Image.fromarray(ramp), Image.fromarray(255 - ramp)]
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[50, 60])
    out = upscale(source, tmp_path / "ramp_x2.gif")
    out.seek(1)
    np.testing.assert_allclose(np.asarray(out.convert("RGB"))[0, ::2, 0], 255 - np.arange(200), atol=2)


def test_multi_page_tiff_keeps_every_page_in_order_with_its_own_metadata(tmp_path):
    source = tmp_path / "scan.tif"
    pages = [Image.fromarray(np.full((4 + i, 6, 3), 40 * (i + 1), np.uint8)) for i in range(3)]
    with TiffImagePlugin.AppendingTiffWriter(open(source, "w+b"), new=True) as writer:  # noqa: SIM115
        for index, page in enumerate(pages):
            tags = TiffImagePlugin.ImageFileDirectory_v2()
            tags[270] = f"page {index + 1}"
            page.save(writer, "TIFF", tiffinfo=tags)
            writer.newFrame()
    out = upscale(source, tmp_path / "scan_x2.tif")
    assert out.n_frames == 3
    for index in range(3):
        out.seek(index)
        assert out.size == (12, 2 * (4 + index)) and out.tag_v2.get(270) == f"page {index + 1}"
        assert int(np.asarray(out).mean()) == 40 * (index + 1)


def test_sixteen_bit_pages_stay_sixteen_bit(tmp_path):
    import cv2

    pages = [np.full((4, 5, 3), 1000 * (i + 1), np.uint16) for i in range(3)]
    source = tmp_path / "deep.tif"
    assert cv2.imwritemulti(str(source), pages)
    recorder = Recorder()
    upscale(source, tmp_path / "deep_x2.tif", recorder=recorder)
    ok, written = cv2.imreadmulti(str(tmp_path / "deep_x2.tif"), flags=cv2.IMREAD_UNCHANGED)
    assert ok and [(p.dtype, p.shape, int(p.max())) for p in written] == [
        (np.dtype(np.uint16), (8, 10, 3), 1000 * (i + 1)) for i in range(3)]


def test_an_animation_into_a_still_format_says_only_the_first_frame_is_written(tmp_path):
    frames = animation_frames(alpha=False)
    source = tmp_path / "a.gif"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[40, 50, 60])
    recorder = Recorder()
    out = upscale(source, tmp_path / "a_x2.jpg", recorder=recorder)
    assert out.size == (20, 16)
    assert "note: JPEG holds no animation: only the first frame is written" in recorder.notes


# -- HEIC and AVIF --------------------------------------------------------------------------------

def test_avif_upscales_to_png_and_back_to_avif(tmp_path):
    source = tmp_path / "a.avif"
    pixels = np.random.default_rng(3).integers(0, 255, (8, 12, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(source, "AVIF", exif=photo_exif(1, 12, 8), xmp=XMP, quality=90)
    png = upscale(source, tmp_path / "a_x2.png")
    assert png.size == (24, 16) and png.getexif()[0x010F] == "LightCam"
    back = upscale(tmp_path / "a_x2.png", tmp_path / "a_x4.avif")
    assert back.format == "AVIF" and back.size == (48, 32)
    assert back.getexif()[0x010F] == "LightCam" and b"lightsr-xmp-marker" in xmp_of(back)


def test_heic_upscales_to_png_and_back_to_heic(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the optional [heif] extra) is not installed")
    source = tmp_path / "a.heic"
    pixels = np.random.default_rng(4).integers(0, 255, (8, 12, 3)).astype(np.uint8)
    pillow_heif.register_heif_opener()
    Image.fromarray(pixels).save(source, "HEIF", exif=photo_exif(1, 12, 8), quality=90)
    png = upscale(source, tmp_path / "a_x2.png")
    assert png.size == (24, 16) and png.getexif()[0x010F] == "LightCam"
    back = upscale(tmp_path / "a_x2.png", tmp_path / "a_x4.heic")
    assert back.format == "HEIF" and back.size == (48, 32) and back.getexif()[0x010F] == "LightCam"


def test_ten_bit_heic_keeps_its_depth_in_png(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the optional [heif] extra) is not installed")
    deep = np.full((8, 8, 3), 40000, np.uint16)
    deep[:, 4:] = 20000
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(8, 8), data=deep.tobytes())
    source = tmp_path / "deep.heic"
    heif.save(source, quality=-1)
    upscale(source, tmp_path / "deep_x2.png")
    import cv2

    pixels = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.shape == (16, 16, 3)
    # 40000 and 20000 lie between 8-bit levels (multiples of 257): read at 8 bits they would move by up to 128.
    assert abs(int(pixels[0, 0, 0]) - 40000) < 64 and abs(int(pixels[0, -1, 0]) - 20000) < 64
    assert (pixels % 257 != 0).all()


def test_avif_orientation_is_applied_once(tmp_path):
    source = tmp_path / "turned.avif"
    stored = np.zeros((8, 12, 3), np.uint8)
    stored[:, 6:] = 255  # right half white
    Image.fromarray(stored).save(source, "AVIF", exif=photo_exif(6, 12, 8), quality=100)
    out = upscale(source, tmp_path / "turned_x2.png")
    assert out.size == (16, 24) and out.getexif().get(0x0112, 1) == 1
    pixels = np.asarray(out)
    assert pixels[:10].mean() < 40 and pixels[14:].mean() > 215  # clockwise: the stored left half on top


def bundled_ffmpeg_makes(tmp_path: Path, encoder: str, source: np.ndarray, target: Path, *options: str) -> None:
    """Encode a 16-bit RGB array with the ffmpeg that imageio-ffmpeg bundles (skip when it lacks ``encoder``)."""
    import subprocess

    import cv2

    from lightsr_cli.media.video import ffmpeg

    encoders = ffmpeg.run_ffmpeg(["-encoders"]).stdout.decode()
    if f" {encoder} " not in encoders:
        pytest.skip(f"the bundled ffmpeg has no {encoder} encoder")
    png = tmp_path / "deep-source.png"
    cv2.imwrite(str(png), source[:, :, ::-1])
    subprocess.run([ffmpeg.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(png), "-c:v", encoder, *options,
                    str(target)], check=True)


def deep_stripes() -> np.ndarray:
    deep = np.full((16, 16, 3), 40000, np.uint16)  # 40000 and 20000 lie between 8-bit levels (multiples of 257)
    deep[:, 8:] = 20000
    return deep


def test_ten_bit_avif_keeps_its_depth_in_png(tmp_path):
    source = tmp_path / "deep.avif"
    bundled_ffmpeg_makes(tmp_path, "libaom-av1", deep_stripes(), source, "-still-picture", "1", "-pix_fmt",
                         "yuv444p10le", "-crf", "0", "-cpu-used", "8")
    assert np.asarray(Image.open(source)).dtype == np.uint8  # Pillow's own AVIF decoder: 8 bits
    upscale(source, tmp_path / "deep_x2.png")
    import cv2

    pixels = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.shape == (32, 32, 3)
    # at 8 bits they would move by up to 128; 10-bit YUV keeps them within a few 16-bit steps
    assert np.abs(pixels[:, :16].astype(int) - 40000).max() < 64
    assert np.abs(pixels[:, 16:].astype(int) - 20000).max() < 64


def test_jpeg_xl_upscales_to_png_and_back_with_its_exif_and_upright(tmp_path):
    pytest.importorskip("pillow_jxl", reason="pillow-jxl-plugin (the optional [jxl] extra) is not installed")
    stored = np.random.default_rng(6).integers(0, 255, (8, 12, 3)).astype(np.uint8)
    source = tmp_path / "a.jxl"
    # a JPEG XL's turn lives in its codestream; an EXIF orientation inside it is ignored (JPEG XL specification)
    Image.fromarray(stored).save(source, "JXL", lossless=True, exif=photo_exif(6, 12, 8).tobytes())
    png = upscale(source, tmp_path / "a_x2.png")
    assert png.size == (24, 16) and png.getexif()[0x010F] == "LightCam" and png.getexif().get(0x0112, 1) == 1
    np.testing.assert_array_equal(np.asarray(png)[::2, ::2], stored)
    recorder = Recorder()
    source = make_photo(tmp_path / "p.png", "png", orientation=1, size=(12, 8))
    back = upscale(source, tmp_path / "p_x2.jxl", recorder=recorder, quality=101)
    assert back.format == "JXL" and back.size == (24, 16) and back.getexif()[0x010F] == "LightCam"
    assert b"lightsr-xmp-marker" in (tmp_path / "p_x2.jxl").read_bytes()  # the plugin writes XMP but reads none
    assert recorder.notes == ["note: ICC profile cannot be written to JXL"]


def test_sixteen_bit_jpeg_xl_keeps_its_depth_in_png(tmp_path):
    pytest.importorskip("pillow_jxl", reason="pillow-jxl-plugin (the optional [jxl] extra) is not installed")
    source = tmp_path / "deep.jxl"
    bundled_ffmpeg_makes(tmp_path, "libjxl", deep_stripes(), source, "-distance", "0")
    upscale(source, tmp_path / "deep_x2.png")
    import cv2

    pixels = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.shape == (32, 32, 3)
    np.testing.assert_array_equal(pixels[:, :, ::-1][::2, ::2], deep_stripes())  # lossless: exact


def test_a_planar_float_tiff_pillow_cannot_open_has_every_page_upscaled_exactly(tmp_path):
    tifffile = pytest.importorskip("tifffile", reason="tifffile writes the float64 pages")
    source = tmp_path / "float_pages.tif"  # two planar float64 pages, as scikit-image ships one: Pillow cannot open it
    pages = np.random.default_rng(7).random((2, 3, 10, 12))
    with tifffile.TiffWriter(source) as writer:
        for page in pages:
            writer.write(page, photometric="rgb", planarconfig="separate")
    recorder = Recorder()
    upscale(source, tmp_path / "float_pages_x2.tif", recorder=recorder)
    assert recorder.notes == []  # nothing to say: no EXIF to leave behind
    written = tifffile.imread(tmp_path / "float_pages_x2.tif", key=slice(None))
    assert written.shape == (2, 20, 24, 3) and written.dtype == np.uint16
    for page, out in zip(pages, written, strict=True):  # nearest x2 of each page, at 16 bits
        expected = np.round(page.transpose(1, 2, 0) * 65535).astype(np.uint16).repeat(2, 0).repeat(2, 1)
        assert np.abs(out.astype(int) - expected).max() <= 1


def test_a_tiff_pillow_cannot_open_keeps_its_profile_xmp_iptc_and_density_per_page(tmp_path):
    """Read by tifffile, such a TIFF's own tags still reach the output: each page's ICC profile, XMP, IPTC (here
    stored as LONGs, as Photoshop does) and resolution in centimetres; only EXIF is said to be left."""
    tifffile = pytest.importorskip("tifffile", reason="tifffile writes the planar pages")
    source = tmp_path / "scan.tif"
    iptc_longs = np.frombuffer(IPTC + b"\0" * (-len(IPTC) % 4), "<u4")
    with tifffile.TiffWriter(source) as writer:
        writer.write(np.random.default_rng(3).random((3, 6, 8)), photometric="rgb", planarconfig="separate",
                     resolution=(118.11, 118.11), resolutionunit="CENTIMETER", iccprofile=P3,
                     extratags=[(700, "B", 0, XMP, True), (33723, "I", len(iptc_longs), tuple(iptc_longs), True),
                                (34666, "I", 1, 8, True)])
        writer.write(np.random.default_rng(4).random((3, 6, 8)), photometric="rgb", planarconfig="separate",
                     resolution=(72, 72), resolutionunit="INCH")
    # tifffile will not write an EXIF IFD pointer (34665) itself: its entry is renamed from a neighbour's code
    entry = struct.pack("<HHI", 34666, 4, 1)
    assert source.read_bytes().count(entry) == 1
    source.write_bytes(source.read_bytes().replace(entry, struct.pack("<HHI", 34665, 4, 1)))
    recorder = Recorder()
    upscale(source, tmp_path / "scan_x2.tif", recorder=recorder)
    assert recorder.notes == ["note: scan.tif's EXIF is not carried (its ICC profile, XMP, IPTC and density are): "
                              "its pixel layout is one Pillow, which lightsr writes EXIF with, cannot read"]
    out = Image.open(tmp_path / "scan_x2.tif")
    first = metadata.read_metadata(out)
    assert first.icc == P3 and XMP in first.xmp and first.iptc.rstrip(b"\0") == IPTC
    assert first.dpi == pytest.approx((300, 300), abs=0.01)  # 118.11 per cm
    out.seek(1)
    second = metadata.read_metadata(out)
    assert second.icc is None and second.xmp is None and second.dpi == pytest.approx((72, 72))


def exif_with_thumbnail(orientation: int, thumbnail: bytes) -> bytes:
    """EXIF (TIFF structure) whose IFD0 holds the orientation and links to an IFD1 with a JPEG thumbnail, as
    cameras write it (Pillow reads IFD1 but does not write one, so it is laid out here)."""
    ifd1_at = 8 + 2 + 12 + 4
    thumbnail_at = ifd1_at + 2 + 3 * 12 + 4
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", ifd1_at)
    ifd1 = (struct.pack("<H", 3) + struct.pack("<HHIHH", 0x0103, 3, 1, 6, 0)
            + struct.pack("<HHII", 0x0201, 4, 1, thumbnail_at) + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
            + struct.pack("<I", 0))
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + thumbnail


def test_the_exif_thumbnail_of_the_old_orientation_is_not_kept(tmp_path):
    thumb = io.BytesIO()
    Image.fromarray(np.full((6, 10, 3), (250, 10, 10), np.uint8)).save(thumb, "JPEG", comment=b"old-thumbnail")
    source = tmp_path / "camera.jpg"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(source, exif=exif_with_thumbnail(6, thumb.getvalue()))
    assert Image.open(source).getexif().get_ifd(-1)[0x0202] == len(thumb.getvalue())  # IFD1: the thumbnail is there
    assert b"old-thumbnail" in source.read_bytes()
    out = upscale(source, tmp_path / "camera_x2.jpg")
    assert out.size == (12, 20) and out.getexif().get(0x0112, 1) == 1
    assert not out.getexif().get_ifd(-1) and b"old-thumbnail" not in (tmp_path / "camera_x2.jpg").read_bytes()


def test_xmp_copies_of_orientation_and_sizes_are_updated(tmp_path):
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6" '
           b'exif:PixelXDimension="10"><exif:PixelYDimension>6</exif:PixelYDimension>'
           b"<dc:creator>lightsr-xmp-marker</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>")
    source = tmp_path / "p.jpg"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(source, exif=photo_exif(6, 10, 6), xmp=xmp)
    written = xmp_of(upscale(source, tmp_path / "p_x2.jpg"))
    assert b'tiff:Orientation="1"' in written and b'exif:PixelXDimension="12"' in written
    assert b"<exif:PixelYDimension>20</exif:PixelYDimension>" in written and b"lightsr-xmp-marker" in written


# -- comments, text, density and PNG display chunks ---------------------------------------------------

def png_with_text_and_display(path: Path, pixels: np.ndarray, aspect_only: bool = False) -> Path:
    """A PNG with a Comment, Latin-1 and UTF-8 text, gAMA and cHRM, and a density (or, ``aspect_only``, a pixel
    aspect ratio without one)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "shot at dawn")
    info.add_text("Author", "Ada Lovelace")
    info.add_itxt("Title", "Zürich, 東京")
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    Image.fromarray(pixels).save(path, "PNG", pnginfo=info, **({} if aspect_only else {"dpi": (300, 300)}))
    if aspect_only:  # Pillow writes pHYs only from a density: the chunk goes in by hand, after IHDR
        body = b"pHYs" + struct.pack(">IIB", 3, 2, 0)
        data = path.read_bytes()
        path.write_bytes(data[:33] + struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body)) + data[33:])
    return path


def _text_of(picture: Image.Image) -> dict:
    return {key: str(value) for key, value in picture.info.items() if isinstance(value, str)}


@pytest.mark.parametrize("depth16", [False, True])  # Pillow writes 8-bit PNGs, OpenCV plus our chunks 16-bit ones
def test_png_text_comment_density_and_gamma_are_carried_and_strip_keeps_only_display(tmp_path, depth16):
    pixels = np.random.default_rng(3).integers(0, 255, (6, 10, 3)).astype(np.uint8)
    source = tmp_path / "p.png"
    if depth16:
        png_with_text_and_display(tmp_path / "p8.png", pixels)
        carried = metadata.read_metadata(Image.open(tmp_path / "p8.png"))
        source.write_bytes(images.encode_image(pixels.astype(np.uint16) * 257, images.ImageEncodeSettings("png"),
                                               carried))
    else:
        png_with_text_and_display(source, pixels)
    out = upscale(source, tmp_path / "p_x2.png")
    assert out.size == (20, 12)
    assert _text_of(out) == {"Comment": "shot at dawn", "Author": "Ada Lovelace", "Title": "Zürich, 東京"}
    assert tuple(round(v) for v in out.info["dpi"]) == (300, 300)
    assert round(out.info["gamma"], 5) == 0.45455 and out.info["chromaticity"][0] == pytest.approx(0.3127)
    stripped = upscale(source, tmp_path / "s.png", MetadataPolicy(strip=True))
    assert _text_of(stripped) == {} and b"Lovelace" not in (tmp_path / "s.png").read_bytes()
    assert tuple(round(v) for v in stripped.info["dpi"]) == (300, 300) and "gamma" in stripped.info


def test_a_png_pixel_aspect_without_density_is_kept(tmp_path):
    source = png_with_text_and_display(tmp_path / "wide.png", np.zeros((4, 6, 3), np.uint8), aspect_only=True)
    out = upscale(source, tmp_path / "wide_x2.png")
    assert out.info.get("aspect") == (3, 2) and "dpi" not in out.info


def test_jpeg_comment_and_density_are_carried_and_webp_says_it_cannot_hold_them(tmp_path):
    source = tmp_path / "c.jpg"
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(source, quality=95, comment=b"Roll 12, frame 7",
                                                           dpi=(240, 240))
    out = upscale(source, tmp_path / "c_x2.jpg")
    assert out.info["comment"] == b"Roll 12, frame 7" and out.info["dpi"] == (240, 240)
    as_png = upscale(source, tmp_path / "c_x2.png")  # the comment becomes the PNG's Comment text
    assert _text_of(as_png) == {"Comment": "Roll 12, frame 7"} and tuple(map(round, as_png.info["dpi"])) == (240, 240)
    recorder = Recorder()
    upscale(source, tmp_path / "c_x2.webp", recorder=recorder)
    assert recorder.notes == ["note: comment, pixel density (dpi) cannot be written to WEBP"]


def test_png_text_into_jpeg_says_the_text_is_lost_but_keeps_the_comment(tmp_path):
    source = png_with_text_and_display(tmp_path / "t.png", np.zeros((4, 6, 3), np.uint8))
    recorder = Recorder()
    out = upscale(source, tmp_path / "t_x2.jpg", recorder=recorder)
    assert out.info["comment"] == b"shot at dawn" and out.info["dpi"] == (300, 300)
    assert recorder.notes == ["note: PNG text, PNG gamma/chromaticity/pixel aspect cannot be written to JPEG"]


def test_tiff_density_and_document_name_are_carried(tmp_path):
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[269], tags[270] = "Scan of letter 4", "a letter"
    source = tmp_path / "scan.tif"
    Image.fromarray(np.full((6, 10), 200, np.uint8)).save(source, tiffinfo=tags, dpi=(600, 600))
    out = upscale(source, tmp_path / "scan_x2.tif")
    assert out.info["dpi"] == (600, 600) and out.tag_v2[296] == 2
    assert out.tag_v2[269] == "Scan of letter 4" and out.tag_v2[270] == "a letter"


def test_an_animated_gif_keeps_its_comment(tmp_path):
    frames = animation_frames(alpha=False)
    source = tmp_path / "c.gif"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=0,
                   comment=b"made for the archive")
    out = upscale(source, tmp_path / "c_x2.gif")
    assert out.n_frames == 3 and out.info.get("comment") == b"made for the archive"


INK = (200, 40, 10, 30)  # mostly cyan: shows as magenta-ish through SWAPPED_INKS, as cyan-ish without


@pytest.mark.parametrize("fmt", ["jpeg", "tiff"])
def test_cmyk_is_converted_through_its_own_profile_and_written_as_srgb(tmp_path, fmt):
    source = tmp_path / f"print.{'jpg' if fmt == 'jpeg' else 'tif'}"
    options = {"exif": photo_exif(6, 10, 6), "quality": 100} if fmt == "jpeg" else {}
    Image.new("CMYK", (10, 6), INK).save(source, fmt.upper(), icc_profile=SWAPPED_INKS, **options)
    stored = source.read_bytes()
    expected = ImageCms.profileToProfile(Image.open(source), ImageCms.ImageCmsProfile(io.BytesIO(SWAPPED_INKS)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    expected_colour = np.asarray(expected, float).reshape(-1, 3).mean(axis=0)
    plain_colour = np.asarray(Image.open(source).convert("RGB"), float).reshape(-1, 3).mean(axis=0)
    assert np.abs(expected_colour - plain_colour).max() > 100  # the profile is not the plain formula
    recorder = Recorder()
    out = upscale(source, tmp_path / f"big.{'jpg' if fmt == 'jpeg' else 'tif'}", recorder=recorder)
    assert out.mode == "RGB"
    assert out.size == ((12, 20) if fmt == "jpeg" else (20, 12))  # JPEG: EXIF orientation 6 applied
    assert np.abs(np.asarray(out, float).reshape(-1, 3).mean(axis=0) - expected_colour).max() <= 3
    assert metadata.profile_colour_space(out.info["icc_profile"]) == "RGB"  # never the CMYK profile on RGB pixels
    assert any("is CMYK: converted to sRGB through its colour profile" in note for note in recorder.notes)
    assert source.read_bytes() == stored


def test_cmyk_without_a_profile_uses_the_ink_formula_and_says_colours_are_approximate(tmp_path):
    source = tmp_path / "print.tif"
    Image.new("CMYK", (10, 6), INK).save(source, "TIFF")
    recorder = Recorder()
    out = upscale(source, tmp_path / "big.tif", recorder=recorder)
    assert out.mode == "RGB" and "icc_profile" not in out.info  # RGB, not RGBA with the black ink as alpha
    plain = np.asarray(Image.open(source).convert("RGB"), float).reshape(-1, 3).mean(axis=0)
    assert np.abs(np.asarray(out, float).reshape(-1, 3).mean(axis=0) - plain).max() <= 1
    assert any("no CMYK colour profile, so colours are approximate" in note for note in recorder.notes)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_bmp_keeps_its_pixel_density(tmp_path, mode):
    """A scan saved as BMP at 300 dpi (pixels per metre in its header) stays 300 dpi, as PNG, JPEG and TIFF do."""
    pixels = np.full((10, 12, len(mode)), 200, np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "scan.bmp", dpi=(300, 300))
    Image.fromarray(pixels[:, :, :3]).save(tmp_path / "scan.jpg", dpi=(600, 150))
    recorder = Recorder()
    kept = upscale(tmp_path / "scan.bmp", tmp_path / "scan_x2.bmp", recorder=recorder)
    assert kept.size == (24, 20) and kept.info["dpi"] == pytest.approx(Image.open(tmp_path / "scan.bmp").info["dpi"])
    assert (tmp_path / "scan_x2.bmp").read_bytes()[38:46] == (tmp_path / "scan.bmp").read_bytes()[38:46]
    converted = upscale(tmp_path / "scan.jpg", tmp_path / "scan_x2b.bmp", recorder=recorder)
    assert converted.info["dpi"] == pytest.approx((600, 150), rel=1e-4)  # BMP counts whole pixels per metre
    assert not [note for note in recorder.notes if "dpi" in note]


def test_an_rgba_apng_stays_rgba_where_every_pixel_is_opaque(tmp_path):
    """As a still RGBA PNG does: the alpha channel is kept because the file stores one, not only where a pixel
    is transparent (a sprite pipeline expects RGBA). A GIF without transparency stays without alpha."""
    opaque = [Image.fromarray(np.asarray(frame.convert("RGBA"))) for frame in animation_frames(alpha=False)]
    assert all(frame.mode == "RGBA" and np.asarray(frame)[..., 3].min() == 255 for frame in opaque)
    opaque[0].save(tmp_path / "sprite.png", save_all=True, append_images=opaque[1:], duration=50)
    out = upscale(tmp_path / "sprite.png", tmp_path / "sprite_x2.png")
    assert out.n_frames == 3 and out.mode == "RGBA" and np.asarray(out)[..., 3].min() == 255
    rgb = animation_frames(alpha=False)
    rgb[0].save(tmp_path / "plain.gif", save_all=True, append_images=rgb[1:], duration=50)
    assert upscale(tmp_path / "plain.gif", tmp_path / "plain_x2.png").mode == "RGB"
