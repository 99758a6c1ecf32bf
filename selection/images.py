"""Decoding images safely and the same way everywhere.

Every decode in zooens (training, embedding, thumbnails, predict) goes through `open_image`,
so the same file gives the same pixels everywhere; images given in memory go through the same
`to_rgb` (PIL images) or `image_from_array` (pixel arrays). It is bounded: the pixel count is read from
the header and checked before any pixel is decoded, and decoding can be reduced when only a
small image is needed. It is correct for the files people actually have (`to_rgb` says how
each kind becomes 8-bit RGB):

- the EXIF orientation is applied, so a portrait photo is upright;
- 16-bit images (PNG, TIFF, PGM) keep their picture: each value is scaled by its true range,
  `x >> 8`, never clipped to white;
- transparency (RGBA, LA, palette or greyscale with a transparent colour) is composited on
  `ALPHA_BACKGROUND`, white;
- palette, CMYK, greyscale, bilevel, YCbCr, LAB, 32-bit integer and float images become RGB.

No colour management: embedded ICC profiles are not applied (timm's models were trained on
images decoded the same way).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zooens.errors import DatasetError, TooLargeError
from zooens.settings import get_settings

__all__ = [
    "open_image",
    "to_rgb",
    "image_from_array",
    "check_pixels",
    "ALPHA_BACKGROUND",
    "DECODE_ERRORS",
    "UnreadableImageError",
]

ALPHA_BACKGROUND = (255, 255, 255)
"""The colour transparent pixels are composited on (white, as a browser shows a transparent PNG on a page)."""

DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)
"""What PIL raises on a file that is not a readable image."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""Integer greyscale modes whose values span 0-65535: PIL opens 16-bit PNG, TIFF and PGM files (a PGM of any
maxval above 255 is rescaled to 0-65535) in one of these; values of a 32-bit `I` image outside 0-65535 are
clipped to it."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

_ORIENTATION_TAG = 0x0112


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


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8)).convert("RGB")


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float intensities, 0.0 black and 1.0 white (NaN black), to 0-255, rounded."""
    values = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (the image itself when there is nothing to turn)."""
    if img.getexif().get(_ORIENTATION_TAG, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` upright and as 8-bit RGB with the same picture (the image itself when there is nothing to do):
    what every image, decoded from a file or given in memory, goes through before a model sees it.

    - The EXIF orientation is applied (and removed from the result, so applying `to_rgb` twice is harmless).
    - 16-bit greyscale (`I;16`, `I;16B`, ..., and `I`, whose values PIL gives on 0-65535): `x >> 8`.
      16-bit RGB(A) PNGs already open as 8-bit `RGB`/`RGBA` (PIL keeps each value's high byte, the same).
    - `F` (float): 0.0 is black and 1.0 white, clipped to that, rounded to 0-255.
    - Transparency (`RGBA`, `LA`, `PA`, premultiplied modes, and a `transparency` colour or palette
      entry of an `L`, `RGB`, `P` or `1` image): composited on `ALPHA_BACKGROUND`.
    - `P`, `L`, `1`, `CMYK` (RGB = (255 - C)(255 - K) / 255, Adobe's inverted JPEGs undone by PIL), `YCbCr`,
      `HSV`, `LAB` (CIE L*a*b* to sRGB): PIL's conversion.
    ValueError for a mode PIL cannot convert.
    """
    img = _upright(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        return _grey_to_rgb(np.clip(values, 0, 65535) >> 8)
    if mode == "F":
        return _grey_to_rgb(_float_to_uint8(np.asarray(img)))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite(img.convert("RGBA"))
    return img.convert("RGB")


def image_from_array(array: np.ndarray) -> Image.Image:
    """An RGB image from a pixel array of shape (height, width), (height, width, 1), (height, width, 3)
    or (height, width, 4) (RGBA), decoded by the same rules as files: uint8 as is, uint16 `x >> 8`,
    floats 0.0-1.0, booleans black/white, alpha composited on `ALPHA_BACKGROUND`.

    ValueError for another shape or dtype.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(f"an image array has shape (height, width[, 1|3|4]), not {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_uint8(arr)
    elif arr.dtype != np.uint8:
        raise ValueError(f"image arrays are uint8, uint16, float (0-1) or bool, not {arr.dtype}")
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))  # uint8: L, RGB or RGBA by shape


def open_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int | None = None,
    max_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` (a path or the file's bytes) to an upright 8-bit RGB image, bounded before decoding.

    - TooLargeError if the header declares more than `max_pixels` pixels (default
      ZOOENS_MAX_IMAGE_PIXELS); DatasetError if it is not a readable image. `name` is how
      messages call the image (default: the file name; never a server path).
    - `max_side`: the result's longer side is at most this; JPEGs are then decoded at a
      reduced scale (DCT scaling), others decoded and reduced at once, so a thumbnail of a
      large photo costs a fraction of its full decode.
    - The EXIF orientation is applied and every mode becomes RGB as `to_rgb` says (16-bit scaled,
      transparency composited on `ALPHA_BACKGROUND`).
    """
    label = _label(source, name)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as img:
            check_pixels(img, label, max_pixels)
            if max_side is not None:
                img.draft("RGB", (max_side, max_side))
            img.load()
            out = to_rgb(img)
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
            label=label,
            reason=why,
        ) from None
