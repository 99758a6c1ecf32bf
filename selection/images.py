"""Decoding images safely: the pixel count is read from the header and bounded before any
pixel is decoded; decoding can be reduced when only a small image is needed.

Every decode in zooens (training, embedding, thumbnails, predict) goes through `open_image`,
so the same file gives the same pixels everywhere.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from zooens.errors import DatasetError, TooLargeError
from zooens.settings import get_settings

__all__ = ["open_image", "check_pixels", "DECODE_ERRORS", "UnreadableImageError"]

DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                 EOFError)
"""What PIL raises on a file that is not a readable image."""

class UnreadableImageError(DatasetError):
    """A file that is not a readable image; `reason` is the short why, for lists of bad files."""

    def __init__(self, message: str, *, label: str, reason: str) -> None:
        super().__init__(message)
        self.label = label
        self.reason = reason


# Our own bound replaces PIL's warning-then-error heuristic; it is checked before decoding.
Image.MAX_IMAGE_PIXELS = None


def _label(source: str | os.PathLike | bytes, name: str | None) -> str:
    if name:
        return name
    return "the image" if isinstance(source, (bytes, bytearray)) else Path(source).name


def check_pixels(img: Image.Image, label: str, max_pixels: int | None = None) -> None:
    """TooLargeError if the header's width x height exceeds `max_pixels` (ZOOENS_MAX_IMAGE_PIXELS)."""
    limit = max_pixels if max_pixels is not None else get_settings().max_image_pixels
    width, height = img.size
    if width * height > limit:
        raise TooLargeError(
            f"{label} is {width}x{height} pixels ({width * height:,}), more than the limit of {limit:,}; "
            "downscale it or raise ZOOENS_MAX_IMAGE_PIXELS."
        )


def open_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int | None = None,
    max_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` (a path or the file's bytes) to an RGB image, bounded before decoding.

    - TooLargeError if the header declares more than `max_pixels` pixels (default
      ZOOENS_MAX_IMAGE_PIXELS); DatasetError if it is not a readable image. `name` is how
      messages call the image (default: the file name; never a server path).
    - `max_side`: the result's longer side is at most this; JPEGs are then decoded at a
      reduced scale (DCT scaling), others decoded and reduced at once, so a thumbnail of a
      large photo costs a fraction of its full decode.
    """
    label = _label(source, name)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as img:
            check_pixels(img, label, max_pixels)
            if max_side is not None:
                img.draft("RGB", (max_side, max_side))
            img.load()
            out = img if img.mode == "RGB" else img.convert("RGB")
            if max_side is not None and max(out.size) > max_side:
                out = out.copy() if out is img else out
                out.thumbnail((max_side, max_side), Image.LANCZOS)
            return out.copy() if out is img else out
    except TooLargeError:
        raise
    except DECODE_ERRORS as exc:
        why = "not an image" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"
        raise UnreadableImageError(
            f"{label} is not a readable image ({why}); send PNG, JPEG or another common format.",
            label=label, reason=why,
        ) from None
