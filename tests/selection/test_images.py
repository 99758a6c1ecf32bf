"""Bounded decoding: the pixel count is read from the header before decoding; reduced decodes."""
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
from zooens.selection.images import UnreadableImageError, open_image


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
