"""Image I/O round trips: depth, alpha, gray, EXIF orientation, atomic no-clobber writes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from lightsr_cli.errors import InputError, OutputError
from lightsr_cli.media import images


def _gradient(height: int, width: int, channels: int, dtype=np.uint8) -> np.ndarray:
    maximum = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width]
    planes = [((x * 7 + y * 3 + 11 * c) % (maximum + 1)) for c in range(channels)]
    array = np.stack(planes, axis=2).astype(dtype)
    return array[:, :, 0] if channels == 1 else array


@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff", "webp"])
def test_rgb_round_trip_lossless_formats(tmp_path, fmt):
    pixels = _gradient(23, 31, 3)
    path = tmp_path / f"a{images.FORMAT_EXTENSIONS[fmt]}"
    quality = 101 if fmt == "webp" else None  # webp quality > 100 is lossless
    images.write_image(path, pixels, images.ImageEncodeSettings(fmt, quality))
    back = images.read_image(path)
    assert back.shape == pixels.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)


def test_rgb_channel_order_is_rgb(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    path = tmp_path / "red.png"
    images.write_image(path, pixels, images.ImageEncodeSettings("png"))
    assert tuple(cv2.imread(str(path))[0, 0]) == (0, 0, 255)  # OpenCV's BGR on disk
    assert tuple(images.read_image(path)[0, 0]) == (255, 0, 0)


def test_sixteen_bit_png_stays_sixteen_bit(tmp_path):
    pixels = _gradient(17, 19, 3, np.uint16) * 3 + 1000
    path = tmp_path / "deep.png"
    images.write_image(path, pixels, images.ImageEncodeSettings("png"))
    back = images.read_image(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, pixels)


def test_rgba_and_gray_round_trip(tmp_path):
    rgba = _gradient(9, 13, 4)
    gray = _gradient(9, 13, 1)
    images.write_image(tmp_path / "rgba.png", rgba, images.ImageEncodeSettings("png"))
    images.write_image(tmp_path / "gray.png", gray, images.ImageEncodeSettings("png"))
    np.testing.assert_array_equal(images.read_image(tmp_path / "rgba.png"), rgba)
    back = images.read_image(tmp_path / "gray.png")
    assert back.ndim == 2
    np.testing.assert_array_equal(back, gray)


def _jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    data = encoded.tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    return data[:2] + segment + data[2:]


def test_exif_rotated_jpeg_is_read_upright(tmp_path):
    # A 20 wide x 10 high picture, left half dark, stored with orientation 6 (rotate 90 clockwise to view).
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, 10:] = 255
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(stored, 6))
    upright = images.read_image(path)
    assert upright.shape == (20, 10, 3)
    # Rotating clockwise puts the stored left (dark) half at the top.
    assert upright[:8].mean() < 30 and upright[12:].mean() > 225


def test_damaged_exif_reads_as_orientation_1(tmp_path):
    # A JPEG whose APP1 'Exif' block is cut short after the byte order: decoded, not rotated, no error.
    ok, encoded = cv2.imencode(".jpg", np.zeros((6, 10, 3), np.uint8))
    assert ok
    data = encoded.tobytes()
    path = tmp_path / "damaged.jpg"
    path.write_bytes(data[:2] + b"\xff\xe1\x00\x0aExif\x00\x00II" + data[2:])
    assert images.read_image(path).shape == (6, 10, 3)


def test_corrupt_and_missing_inputs_raise_input_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="cannot decode"):
        images.read_image(bad)
    with pytest.raises(InputError, match="no such file"):
        images.read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="unsupported image extension"):
        images.read_image(tmp_path / "notes.txt")


def test_write_never_overwrites_without_permission_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="output exists"):
        images.write_image(path, _gradient(4, 4, 3), images.ImageEncodeSettings("png"))
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    images.write_image(path, _gradient(4, 4, 3), images.ImageEncodeSettings("png"), overwrite=True)
    assert images.read_image(path).shape == (4, 4, 3)


def test_sixteen_bit_to_jpeg_is_reduced_not_wrapped(tmp_path):
    pixels = np.full((8, 8, 3), 65535, np.uint16)
    images.write_image(tmp_path / "a.jpg", pixels, images.ImageEncodeSettings("jpeg", 95))
    assert images.read_image(tmp_path / "a.jpg").min() >= 250
