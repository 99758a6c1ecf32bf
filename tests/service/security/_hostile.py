"""Hostile files for the security tests, generated here (nothing hostile is checked in)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 16) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A 4x4 PNG whose IHDR declares `width` x `height` (CRC fixed, so PIL reads the header)."""
    data = bytearray(png_bytes(0, size=4))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def good_entries(
    classes: tuple[str, ...] = ("a", "b"), per_class: int = 3, prefix: str = ""
) -> list[tuple[str, bytes]]:
    return [(f"{prefix}{c}/{i}.png", png_bytes(10 * k + i)) for k, c in enumerate(classes) for i in range(per_class)]


def deflate_bomb(path: Path, member: str, size: int, header: bytes = b"") -> Path:
    """A zip with one deflated member of `size` zero bytes (after `header`): ~1000x smaller on disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(member, "w", force_zip64=True) as out:
            out.write(header)
            chunk = bytes(1 << 20)
            left = size
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return path


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version 1.0 `.npy` header declaring `shape` and `dtype` (no data)."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def patch_entry(
    archive: bytes, *, flag_bits: int | None = None, method: int | None = None, file_size: int | None = None
) -> bytes:
    """Rewrite the first entry's general-purpose flags, method or declared size, in both headers."""
    data = bytearray(archive)
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    if flag_bits is not None:
        struct.pack_into("<H", data, local + 6, flag_bits)
        struct.pack_into("<H", data, central + 8, flag_bits)
    if method is not None:
        struct.pack_into("<H", data, local + 8, method)
        struct.pack_into("<H", data, central + 10, method)
    if file_size is not None:
        struct.pack_into("<I", data, local + 22, file_size)
        struct.pack_into("<I", data, central + 24, file_size)
    return bytes(data)


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
