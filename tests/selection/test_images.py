"""Bounded decoding (the pixel count read from the header before decoding; reduced decodes) and correct decoding:
EXIF orientation, 16-bit, transparency, palette, CMYK, greyscale, bilevel, float, LAB, each from a real file."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooens.errors import DatasetError, TooLargeError
from zooens.selection.images import ALPHA_BACKGROUND, UnreadableImageError, image_from_array, open_image, to_rgb


def forged_png(width: int, height: int) -> bytes:
    """A small real PNG whose IHDR declares `width` x `height` (width, height and CRC patched)."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_pixel_limit_is_read_from_the_header_before_decoding(tmp_path: Path):
    path = tmp_path / "huge.png"
    path.write_bytes(forged_png(13000, 13000))
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match=r"huge\.png is 13000x13000.*ZOOENS_MAX_IMAGE_PIXELS"):
            open_image(path, max_pixels=40_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # refused from the header: nothing near 13000 x 13000 x 3 bytes allocated
    with pytest.raises(TooLargeError, match="the upload"):
        open_image(path.read_bytes(), max_pixels=100, name="the upload")


def test_a_real_bilevel_13000_square_png_is_refused(tmp_path: Path):
    path = tmp_path / "bilevel.png"
    Image.new("1", (13000, 13000)).save(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(TooLargeError, match="13000x13000"):
        open_image(path, max_pixels=100_000_000 - 1)


def test_reduced_decode_of_a_large_jpeg(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(path, quality=80)
    img = open_image(path, max_side=64)
    assert img.mode == "RGB" and max(img.size) <= 64 and img.size == (64, 48)
    full = open_image(path)
    assert full.size == (1600, 1200)


def test_small_images_are_not_enlarged_and_modes_become_rgb(tmp_path: Path):
    path = tmp_path / "grey.png"
    Image.new("L", (10, 6), 7).save(path)
    img = open_image(path, max_side=64)
    assert img.size == (10, 6) and img.mode == "RGB" and img.getpixel((0, 0)) == (7, 7, 7)


def test_not_an_image_is_a_dataset_error_naming_it(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is text, not a PNG")
    with pytest.raises(DatasetError, match=r"notes\.png is not a readable image \(not an image\)") as err:
        open_image(path)
    assert isinstance(err.value, UnreadableImageError) and err.value.reason == "not an image"
    assert str(tmp_path) not in str(err.value)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(forged_png(4, 4)[:40])
    with pytest.raises(DatasetError, match="cut.png"):
        open_image(truncated)


# --- Every kind of file becomes the right 8-bit RGB picture (each checked against numpy on the source) ---


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_rgb(pixels: np.ndarray) -> bytes:
    """A real 16-bit RGB PNG (colour type 2, bit depth 16) of `pixels`, uint16 (height, width, 3), written by hand:
    PIL cannot write one."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def tiff16_big_endian(pixels: np.ndarray) -> bytes:
    """A real big-endian ("MM") uncompressed 16-bit greyscale TIFF of `pixels`, uint16 (height, width)."""
    height, width = pixels.shape
    data = pixels.astype(">u2").tobytes()
    entries = [
        (256, 3, width),
        (257, 3, height),
        (258, 3, 16),
        (259, 3, 1),
        (262, 3, 1),  # 1 = black is zero
        (273, 4, 8),
        (277, 3, 1),
        (278, 3, height),
        (279, 4, len(data)),
    ]
    ifd = struct.pack(">H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack(">HH", value, 0) if kind == 3 else struct.pack(">I", value)  # SHORT or LONG
        ifd += struct.pack(">HHI", tag, kind, 1) + packed
    ifd += struct.pack(">I", 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8 + len(data)) + data + ifd


def smooth_picture(height: int = 24, width: int = 32) -> np.ndarray:
    """A known picture, intensities 0-1 of shape (height, width, 3): gradients and a bright disc."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float)
    return np.stack([x, y, np.clip(0.3 + 0.7 * disc * (1 - x), 0, 1)], axis=-1)


def decoded(path: Path, **kw) -> np.ndarray:
    img = open_image(path, **kw)
    assert img.mode == "RGB"
    return np.asarray(img).astype(np.int64)


def grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.int64)[..., None], 3, axis=-1)


def test_a_16_bit_png_decodes_to_the_same_picture_as_its_8_bit_version(tmp_path: Path):
    picture = smooth_picture()
    eight, sixteen = np.rint(picture * 255).astype(np.uint8), np.rint(picture * 65535).astype(np.uint16)
    Image.fromarray(eight).save(tmp_path / "rgb8.png")
    (tmp_path / "rgb16.png").write_bytes(png16_rgb(sixteen))
    Image.fromarray(eight[..., 0]).save(tmp_path / "grey8.png")
    Image.fromarray(sixteen[..., 0]).save(tmp_path / "grey16.png")  # PIL writes mode I;16 as a 16-bit PNG
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode == "I;16"
    for name8, name16 in (("rgb8.png", "rgb16.png"), ("grey8.png", "grey16.png")):
        a, b = decoded(tmp_path / name8), decoded(tmp_path / name16)
        assert np.abs(a - b).max() <= 1, name16
        assert b.max() == 255 and b.min() == 0  # the true range, neither white nor black
    assert np.array_equal(decoded(tmp_path / "rgb16.png"), sixteen >> 8)


@pytest.mark.parametrize("kind", ["png I;16", "tiff I;16B", "pgm I"])
def test_16_bit_greyscale_is_scaled_by_its_range_not_clipped(tmp_path: Path, kind: str):
    values = np.random.default_rng(1).integers(0, 65536, (9, 13), dtype=np.uint16)
    values[0, :3] = (0, 255, 65535)
    path = tmp_path / f"grey16.{kind.split()[0]}"
    if kind.startswith("tiff"):
        path.write_bytes(tiff16_big_endian(values))
    else:
        Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode == kind.split()[1]
    assert np.array_equal(decoded(path), grey3(values >> 8))


def test_a_10_bit_pgm_spans_the_whole_8_bit_range(tmp_path: Path):
    values = np.array([[0, 1, 511, 512, 1022, 1023]], dtype=">u2")
    path = tmp_path / "ten_bit.pgm"
    path.write_bytes(b"P5 6 1 1023\n" + values.tobytes())
    expected = np.rint(values.astype(float) / 1023 * 255)
    assert np.abs(decoded(path) - grey3(expected)).max() <= 1


# EXIF orientation -> how the stored pixels S become the upright picture, per the EXIF 2.3 table.
UPRIGHT_FROM_STORED = {
    1: lambda s: s,
    2: np.fliplr,  # mirror horizontal
    3: lambda s: np.rot90(s, 2),  # rotate 180
    4: np.flipud,  # mirror vertical
    5: lambda s: np.rot90(np.fliplr(s), 1),  # mirror horizontal, rotate 270 CW
    6: lambda s: np.rot90(s, -1),  # rotate 90 CW
    7: lambda s: np.rot90(np.fliplr(s), -1),  # mirror horizontal, rotate 90 CW
    8: lambda s: np.rot90(s, 1),  # rotate 270 CW
}


def with_orientation(img: Image.Image, orientation: int) -> Image.Exif:
    exif = img.getexif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", sorted(UPRIGHT_FROM_STORED))
def test_every_exif_orientation_is_applied(tmp_path: Path, orientation: int):
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    img = Image.fromarray(stored)
    path = tmp_path / "oriented.png"
    img.save(path, exif=with_orientation(img, orientation))
    assert np.array_equal(decoded(path), UPRIGHT_FROM_STORED[orientation](stored))


def test_an_exif_rotated_jpeg_decodes_upright(tmp_path: Path):
    """A portrait photo as a camera stores it: pixels sideways, orientation 6 (turn 90 degrees clockwise)."""
    upright = np.zeros((64, 32, 3), dtype=np.uint8)  # portrait: red top half, blue bottom half, a green corner
    upright[:32] = (220, 30, 30)
    upright[32:] = (30, 30, 220)
    upright[:16, :16] = (30, 200, 30)
    stored = np.rot90(upright, 1)  # what the sensor wrote: the picture turned 90 degrees counter-clockwise
    img = Image.fromarray(np.ascontiguousarray(stored))
    path = tmp_path / "portrait.jpg"
    img.save(path, quality=95, exif=with_orientation(img, 6))
    with Image.open(path) as raw:
        assert raw.size == (64, 32)  # landscape as stored
    out = decoded(path)
    assert out.shape == upright.shape
    assert np.abs(out - upright).mean() < 3 and np.abs(out[4:12, 4:12] - (30, 200, 30)).max() < 12
    small = open_image(path, max_side=16)  # a reduced (DCT-scaled) decode is turned as well
    assert small.size == (8, 16)
    with Image.open(path) as given:  # a PIL image handed over in memory gets the same treatment, once
        once = to_rgb(given)
        assert np.array_equal(np.asarray(once), out) and to_rgb(once) is once


def test_alpha_is_composited_on_the_stated_background(tmp_path: Path):
    assert ALPHA_BACKGROUND == (255, 255, 255)
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    colour, alpha = rgba[..., :3].astype(float), rgba[..., 3:].astype(float) / 255
    expected = colour * alpha + np.array(ALPHA_BACKGROUND) * (1 - alpha)
    out = decoded(tmp_path / "rgba.png")
    assert np.abs(out - expected).max() <= 1
    assert tuple(out[0, 0]) == ALPHA_BACKGROUND and tuple(out[0, 1]) == tuple(rgba[0, 1, :3])

    la = rgba[..., [0, 3]]
    Image.fromarray(la).save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as img:
        assert img.mode == "LA"
    grey = la[..., 0].astype(float) * alpha[..., 0] + 255 * (1 - alpha[..., 0])
    assert np.abs(decoded(tmp_path / "la.png") - grey3(grey)).max() <= 1


def test_palette_images_with_and_without_transparency(tmp_path: Path):
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (6, 10), dtype=np.uint8)
    index[0, 0] = 5
    img = Image.frombytes("P", (10, 6), index.tobytes())
    img.putpalette(palette.tobytes())
    img.save(tmp_path / "palette.png")
    assert np.array_equal(decoded(tmp_path / "palette.png"), palette[index])

    img.save(tmp_path / "palette_transparent.png", transparency=5)  # index 5 fully transparent (tRNS)
    expected = palette[index].astype(np.int64)
    expected[index == 5] = ALPHA_BACKGROUND
    assert np.array_equal(decoded(tmp_path / "palette_transparent.png"), expected)

    alphas = rng.integers(0, 256, 16, dtype=np.uint8)  # a partial alpha per palette entry
    img.save(tmp_path / "palette_alpha.png", transparency=alphas.tobytes())
    a = alphas[index][..., None].astype(float) / 255
    assert np.abs(decoded(tmp_path / "palette_alpha.png") - (palette[index] * a + 255 * (1 - a))).max() <= 1


def test_an_rgb_png_with_a_transparent_colour(tmp_path: Path):
    pixels = np.random.default_rng(4).integers(0, 200, (5, 6, 3), dtype=np.uint8)
    pixels[2, 3] = (10, 20, 30)
    Image.fromarray(pixels).save(tmp_path / "trns.png", transparency=(10, 20, 30))
    expected = pixels.astype(np.int64)
    expected[(pixels == (10, 20, 30)).all(-1)] = ALPHA_BACKGROUND
    assert np.array_equal(decoded(tmp_path / "trns.png"), expected)


def test_cmyk_jpeg_and_tiff(tmp_path: Path):
    cmyk = np.zeros((32, 32, 4), dtype=np.uint8)  # four flat 16 x 16 blocks, so JPEG keeps them nearly exact
    cmyk[:16, :16], cmyk[:16, 16:] = (0, 0, 0, 0), (200, 30, 0, 10)
    cmyk[16:, :16], cmyk[16:, 16:] = (10, 180, 90, 60), (0, 0, 0, 255)
    img = Image.frombytes("CMYK", (32, 32), cmyk.tobytes())
    img.save(tmp_path / "cmyk.jpg", quality=100)
    img.save(tmp_path / "cmyk.tif")
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    expected = (255 - c) * (255 - k) / 255
    assert np.abs(decoded(tmp_path / "cmyk.tif") - expected).max() <= 1
    assert np.abs(decoded(tmp_path / "cmyk.jpg") - expected).max() <= 4


def test_bilevel_and_greyscale(tmp_path: Path):
    bits = np.random.default_rng(5).integers(0, 2, (7, 11)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    with Image.open(tmp_path / "bits.png") as img:
        assert img.mode == "1"
    assert np.array_equal(decoded(tmp_path / "bits.png"), grey3(bits * 255))
    grey = np.random.default_rng(6).integers(0, 256, (7, 11), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(decoded(tmp_path / "grey.png"), grey3(grey))


def test_float_images_map_zero_to_black_and_one_to_white(tmp_path: Path):
    values = np.array([[-0.5, 0.0, 0.25, 0.5, 1.0, 3.0, np.nan]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "float.tif")
    with Image.open(tmp_path / "float.tif") as img:
        assert img.mode == "F"
    assert np.array_equal(decoded(tmp_path / "float.tif"), grey3(np.array([[0, 0, 64, 128, 255, 255, 0]])))


def test_lab_neutral_greys_become_srgb_greys(tmp_path: Path):
    lightness = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    # A CIELab TIFF stores a* and b* signed, neutral = 0; PIL writes its in-memory bytes unchanged (and reads
    # them back offset by 128), so zeros in memory make a file of true neutral greys.
    lab = np.stack([lightness, np.zeros(5, np.uint8), np.zeros(5, np.uint8)], axis=-1)[None]
    Image.frombytes("LAB", (5, 1), lab.tobytes()).save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as img:
        assert img.mode == "LAB" and img.getpixel((2, 0)) == (128, 128, 128)
    l_star = lightness / 255 * 100  # CIE L* to relative luminance, then the sRGB transfer curve
    y = np.where(l_star > 8, ((l_star + 16) / 116) ** 3, l_star / 903.3)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055) * 255
    assert np.abs(decoded(tmp_path / "lab.tif") - grey3(srgb[None])).max() <= 2


def test_arrays_follow_the_same_rules():
    rng = np.random.default_rng(7)
    sixteen = rng.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    assert np.array_equal(np.asarray(image_from_array(sixteen)), sixteen >> 8)
    grey = rng.integers(0, 256, (4, 5, 1), dtype=np.uint8)
    assert np.array_equal(np.asarray(image_from_array(grey)), grey3(grey[..., 0]))
    floats = rng.random((4, 5, 3))
    assert np.array_equal(np.asarray(image_from_array(floats)), np.rint(floats * 255))
    rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    a = rgba[..., 3:] / 255
    assert np.abs(np.asarray(image_from_array(rgba)).astype(float) - (rgba[..., :3] * a + 255 * (1 - a))).max() <= 1
    with pytest.raises(ValueError, match="int64"):
        image_from_array(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        image_from_array(np.zeros((2, 2, 2), dtype=np.uint8))
