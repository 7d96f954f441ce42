"""Reading images with Pillow: bounded in size, and high-bit-depth pictures read as what they show.

Pillow keeps 16-bit gray PNGs in mode ``I;16``, 32-bit integer TIFFs in ``I`` and float TIFFs
in ``F``; its ``convert("L")`` clips those values at 255 instead of scaling them, which turns
most of the picture white. :func:`gray` and :func:`to_8bit` scale them by their full range
instead (``I;16``: 65535; ``I``: 65535 when every value fits 16 bits, else 2**31 - 1, or the
picture's own range when it holds negative values; ``F``: as it is in [0, 1], by 255 in
[0, 255], else its own range).
"""

from __future__ import annotations

import warnings

import numpy as np

from .._files import MAX_IMAGE_PIXELS, open_regular
from ..errors import DataError

HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def open_image(path):
    """A loaded PIL image from ``path`` (a file path, or an open binary file) with its EXIF
    rotation applied, or a DataError in one line: an unreadable or non-image file, not a regular
    file, or more than ``MAX_IMAGE_PIXELS`` pixels (checked from the header, before anything is
    decoded)."""
    import contextlib

    from PIL import Image, ImageOps, UnidentifiedImageError

    source = path
    if hasattr(source, "read"):  # an open file: read from where it stands
        path = getattr(source, "name", None)
    where = "" if path is None else f" {path}"
    try:
        if hasattr(source, "read"):
            opened_file = contextlib.nullcontext(source)
        else:
            opened_file = open_regular(path, DataError, "an image file (PNG, JPEG, ...)")
        with opened_file as file:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as opened:
                    check_pixels(path if path is not None else "the image", opened.size)
                    pil = ImageOps.exif_transpose(opened)
                    pil.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"cannot read image{where}: {err}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image{where}: {err}") from None
    return pil


def check_pixels(path, size) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: expected an image of at most {MAX_IMAGE_PIXELS:,} pixels, "
                        f"but its header says {width}x{height} = {width * height:,}: refused "
                        f"(a decompression bomb, or far larger than a model's input)")
    if width * height == 0:
        raise DataError(f"{path}: expected an image with pixels, got size {width}x{height}")


def unit_range(values: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth pixel values as float32 in [0, 1] (see the module docstring)."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"expected finite pixel values, got NaN or inf in a mode {mode} image")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if mode.startswith("I;16"):
        scaled = values / 65535
    elif mode == "I" and low >= 0:
        scaled = values / (65535 if high <= 65535 else 2**31 - 1)
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = values / 255
    else:
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return scaled.astype(np.float32)


def gray(pil) -> np.ndarray:
    """The image as gray float32 values in [0, 1], (H, W); transparency laid on white paper."""
    from PIL import Image

    if pil.mode in HIGH_BIT_MODES:
        return unit_range(np.asarray(pil), pil.mode)
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        paper.alpha_composite(rgba)
        pil = paper
    return np.asarray(pil.convert("L"), dtype=np.float32) / 255


def to_8bit(pil):
    """The image in an 8-bit mode (``L`` for high-bit-depth gray, scaled, not clipped)."""
    from PIL import Image

    if pil.mode in HIGH_BIT_MODES:
        return Image.fromarray(np.rint(gray(pil) * 255).astype(np.uint8))
    return pil
