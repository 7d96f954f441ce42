"""Preprocessing as the course does it, and the preparation of a user's image for prediction.

- scale the pixels (bytes by 1/255) and z-score them, ``x' = (scale * x - mean) / std``, with mean
  and std per channel computed on the training split only (:class:`Preprocessing`);
- hold out a validation split with a fixed seed (:func:`train_val_split`);
- labels as class indices (what the datasets hold) or one-hot (:func:`one_hot`).

:func:`prepare_image` turns a photo or drawing of a digit into an MNIST-style input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._text import count
from ..errors import DataError, ShapeError

__all__ = ["Preprocessing", "one_hot", "prepare_image", "train_val_split"]


@dataclass(frozen=True)
class Preprocessing:
    """Scaling and z-score normalisation: ``x' = (scale * x - mean[c]) / std[c]`` per channel c.

    Build it with :meth:`fit` on the training split; the model file records it with
    :meth:`to_dict` and restores it with :meth:`from_dict`, so prediction preprocesses exactly as
    training did. Calling it (``prep(x)``, ``prep(x, rng)``) is :meth:`apply`, so it can be a
    :class:`~numcnn.data.DataLoader` transform.

    Attributes:
        scale: factor applied to the raw pixels first (1/255 for bytes).
        mean, std: per-channel mean and standard deviation of the scaled training pixels.
        input_shape: (C, H, W) the model takes.
    """

    scale: float
    mean: tuple
    std: tuple
    input_shape: tuple

    def __post_init__(self):
        # Normalise types so that equality and JSON round trips do not depend on how it was built.
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "input_shape", tuple(int(n) for n in self.input_shape))
        channels = self.input_shape[0] if len(self.input_shape) == 3 else None
        if channels is None or len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"Preprocessing: input_shape must be (C, H, W) with C means and C stds, got "
                f"input_shape={self.input_shape}, {len(self.mean)} means, {len(self.std)} stds"
            )
        if not all(s > 0 for s in self.std) or not self.scale > 0:
            raise DataError(
                f"Preprocessing: scale and std must be > 0, got {self.scale}, {self.std}")

    @classmethod
    def fit(cls, x_train, scale=None, chunk=4096) -> Preprocessing:
        """Statistics of the training images ``x_train`` (N, C, H, W).

        Args:
            x_train: the training split only (never the validation or test images).
            scale: default 1/255 for uint8 pixels, 1 for floats.
            chunk: images summed at a time (bounds the float64 temporaries).

        A channel with zero spread gets std 1, so it maps to a constant instead of dividing by 0.
        """
        x = np.asarray(x_train)
        if x.ndim != 4 or x.size == 0:
            raise ShapeError(
                f"Preprocessing.fit: expected images (N, C, H, W) with N, C, H, W > 0, got "
                f"{x.shape}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"Preprocessing.fit: expected real pixel values, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"Preprocessing.fit: expected finite pixel values, got "
                            f"{np.count_nonzero(~np.isfinite(x))} NaN or inf")
        if scale is None:
            scale = 1 / 255 if x.dtype == np.uint8 else 1.0
        total = np.zeros(x.shape[1])
        total_sq = np.zeros(x.shape[1])
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk].astype(np.float64)
            total += part.sum(axis=(0, 2, 3))
            total_sq += np.einsum("nchw,nchw->c", part, part)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std[std == 0] = 1.0 / scale
        return cls(scale=scale, mean=mean * scale, std=std * scale, input_shape=x.shape[1:])

    def apply(self, x) -> np.ndarray:
        """Preprocess images (N, C, H, W): integers (uint8) -> float32; floats keep their dtype."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ShapeError(
                f"Preprocessing: expected images (N, {', '.join(map(str, self.input_shape))}), "
                f"got {x.shape}"
            )
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        self._check_pixel_range(x)
        std = np.asarray(self.std)
        gain = (self.scale / std).astype(dtype)[:, None, None]  # (C, 1, 1)
        offset = (np.asarray(self.mean) / std).astype(dtype)[:, None, None]
        out = x.astype(dtype)  # a copy: the caller's array is left alone
        out *= gain
        out -= offset
        return out

    def _check_pixel_range(self, x) -> None:
        """Refuse floats in [0, 1] given to statistics of 0-255 pixels (``scale`` 1/255): scaled
        again they would all be near 0 and every prediction garbage (an evaluation on them
        scored 12.6% instead of 89.7%). Floats of 0-255 and bytes pass."""
        if (self.scale < 1 and x.size and np.issubdtype(x.dtype, np.floating)
                and 0 < float(np.fmax.reduce(x, axis=None)) <= 1.0):  # nanmax, no warning
            raise DataError(
                f"Preprocessing: expected pixels of 0-255 (the model's statistics are of bytes, "
                f"scale 1/{round(1 / self.scale)}), got floats in [0, 1]: pass the images as "
                f"uint8, or multiplied by {round(1 / self.scale)}")

    def __call__(self, x, rng=None) -> np.ndarray:
        return self.apply(x)

    def to_dict(self) -> dict:
        """A JSON-able dict; :meth:`from_dict` inverts it."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, d) -> Preprocessing:
        keys = ("scale", "mean", "std", "input_shape")
        if not isinstance(d, dict) or any(key not in d for key in keys):
            raise DataError(f"Preprocessing.from_dict: expected a dict with keys {keys}, got {d!r}")
        try:
            prep = cls(**{key: d[key] for key in keys})
        except DataError:
            raise
        except (TypeError, ValueError, OverflowError) as err:
            raise DataError(f"Preprocessing.from_dict: bad values in {str(d)[:200]} ({err})") \
                from None
        # recorded metadata may not ask for more than a model input can sensibly be
        from .._files import MAX_INPUT_VALUES

        values = math.prod(prep.input_shape)
        if min(prep.input_shape) < 1 or values > MAX_INPUT_VALUES:
            raise DataError(f"Preprocessing.from_dict: expected an input_shape (C, H, W) of "
                            f"positive sizes and at most {MAX_INPUT_VALUES:,} values, got "
                            f"{prep.input_shape} ({values:,} values)")
        if not all(math.isfinite(v) for v in (prep.scale, *prep.mean, *prep.std)):
            raise DataError(f"Preprocessing.from_dict: expected finite scale, mean and std, got "
                            f"{prep.scale}, {prep.mean}, {prep.std}")
        return prep


def train_val_split(x, y, val_fraction=0.1, seed=0):
    """Hold out a random ``val_fraction`` of the samples, the same ones for the same seed.

    Args:
        x, y: samples and labels, the same length along axis 0.
        val_fraction: share held out, in [0, 1); the count is ``round(len(x) * val_fraction)``.
        seed: fixes which samples are held out.

    Returns:
        ``(x_train, y_train, x_val, y_val)``; each part keeps the original order of its samples.
    """
    n = len(x)
    if len(y) != n:
        raise DataError(f"train_val_split: expected one label per sample, got "
                        f"{count(n, 'sample')} but {count(len(y), 'label')}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    val = np.sort(order[:n_val])
    train = np.sort(order[n_val:])
    return x[train], y[train], x[val], y[val]


def one_hot(y, num_classes=None, dtype=np.float32) -> np.ndarray:
    """Class indices (N,) -> one-hot rows (N, num_classes), by default ``max(y) + 1`` of them."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"one_hot: expected integer class indices of shape (N,), got {y.dtype} {y.shape}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"one_hot: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )
    out = np.zeros((len(y), num_classes), dtype)
    out[np.arange(len(y)), y] = 1
    return out


# ---- a user's image for `numcnn predict` ----------------------------------------------------

# MNIST fits each digit into a 20x20 box inside the 28x28 frame and shifts its centre of mass to
# the middle; measured on the training set, the centre of mass sits at row/column index 14.0.
_BOX = 20 / 28
_PAPER = 0.15  # the faintest 15% from paper to stroke counts as paper (noise, shading)


def _unit_array(array: np.ndarray) -> np.ndarray:
    """Pixel values as float32 in [0, 1]: uint8 by 255, uint16 by 65535, booleans as 0 and 1,
    other integers by 255 or 65535 when they fit (else their own range), floats as they are
    in [0, 1]. NaN, inf, floats outside [0, 1] and non-numeric arrays raise a DataError."""
    from ._images import unit_range

    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.float32) / 255
        return unit_range(array, "I")
    if kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"prepare_image: expected finite pixel values, got "
                            f"{np.count_nonzero(~np.isfinite(array))} NaN or inf")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(f"prepare_image: expected float pixels in [0, 1], got values in "
                            f"[{low:g}, {high:g}] (divide 0-255 pixels by 255, or pass uint8)")
        return array.astype(np.float32)
    raise DataError(f"prepare_image: expected real pixel values (uint8, uint16, bool or float), "
                    f"got dtype {array.dtype}")


def _open_image(image):
    """A PIL image in an 8-bit mode from a path or an array; transparency is laid on white
    paper. High-bit-depth pictures (16-bit PNG, 32-bit TIFF, uint16 arrays) are scaled by their
    full range, not clipped (see :mod:`numcnn.data._images`)."""
    from PIL import Image

    from ._images import check_pixels, open_image, to_8bit

    if isinstance(image, (str, Path)) or hasattr(image, "read"):  # a path or an open file
        pil = to_8bit(open_image(image))
    else:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise DataError(
                f"prepare_image: expected an image array (H, W), (H, W, 3|4) or (C, H, W), "
                f"got {array.shape}"
            )
        check_pixels("prepare_image", (array.shape[1], array.shape[0]))
        pil = Image.fromarray(np.rint(_unit_array(array) * 255).astype(np.uint8))
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        paper.alpha_composite(rgba)
        pil = paper
    return pil


def _mnist_style(pil, height: int, width: int) -> np.ndarray:
    """MNIST's recipe: bright ink on black, cropped, fitted into the 20x20 box keeping its aspect
    ratio (anti-aliased), pasted so that its centre of mass is at the centre. Returns uint8."""
    from PIL import Image

    gray = np.asarray(pil.convert("L"), dtype=np.float32) / 255  # 0 black .. 1 white
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1 - gray if np.median(border) > 0.5 else gray  # dark ink on light paper -> invert
    paper = float(np.median(ink))  # most of the picture is paper
    if ink.max() - paper < 0.1:
        raise DataError("prepare_image: no digit found (the image has almost no contrast)")
    # The typical stroke (not the single darkest, noisy pixel) becomes full ink, as in MNIST.
    stroke = float(np.median(ink[ink > (paper + ink.max()) / 2]))
    floor = paper + _PAPER * (stroke - paper)
    ink = np.clip((ink - floor) / (stroke - floor), 0, 1)

    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box_h, box_w = _BOX * height, _BOX * width
    fit = min(box_h / crop.shape[0], box_w / crop.shape[1])
    new_h = min(max(1, round(crop.shape[0] * fit)), round(box_h))
    new_w = min(max(1, round(crop.shape[1] * fit)), round(box_w))
    digit = Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(digit), 0, 1)

    mass = digit.sum()
    centre_y = (digit.sum(axis=1) @ np.arange(new_h)) / mass
    centre_x = (digit.sum(axis=0) @ np.arange(new_w)) / mass
    top = int(np.clip(round(height / 2 - centre_y), 0, height - new_h))
    left = int(np.clip(round(width / 2 - centre_x), 0, width - new_w))
    canvas = np.zeros((height, width), np.float32)
    canvas[top:top + new_h, left:left + new_w] = digit
    return np.rint(canvas * 255).astype(np.uint8)


def prepare_image(image, preprocessing: Preprocessing, digit=None) -> np.ndarray:
    """One image, as a model trained with ``preprocessing`` takes it: (1, C, H, W).

    Args:
        image: a path or a binary file object (PNG, JPEG, ... anything Pillow reads) or an
            array (H, W), (H, W, 3|4) or
            (C, H, W); uint8, or floats in [0, 1].
        preprocessing: the model's :class:`Preprocessing` (its ``input_shape`` gives C, H, W).
        digit: MNIST's recipe (default when the model takes (1, 28, 28) images): to gray; a light
            background (paper) is inverted so the ink is bright on black; the ink is cropped to
            its bounding box, fitted into a 20x20 box (scaled with ``H/28``) keeping the aspect
            ratio, anti-aliased, and pasted so its centre of mass is at the centre. So a photo or
            drawing of a dark digit on light paper, of any size, works as an MNIST image does.
            ``digit=False`` just converts to gray/RGB and resizes to (H, W).
    """
    from PIL import Image

    channels, height, width = preprocessing.input_shape
    if digit is None:
        digit = (channels, height, width) == (1, 28, 28)
    pil = _open_image(image)
    if digit:
        if channels != 1:
            raise DataError(f"prepare_image: the digit recipe makes gray images, the model takes "
                            f"{preprocessing.input_shape}")
        x = _mnist_style(pil, height, width)[None, None]  # (1, 1, H, W)
    else:
        pil = pil.convert("L" if channels == 1 else "RGB")
        pil = pil.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(pil).reshape(height, width, channels)
        x = pixels.transpose(2, 0, 1)[None]  # (H, W, C) -> (1, C, H, W)
    return preprocessing.apply(x)
