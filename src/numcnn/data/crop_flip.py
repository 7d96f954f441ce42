"""Augmentation for colour photographs (CIFAR-10 style): random crop after zero padding, and
random horizontal flip, each drawn per image of a batch.

They take and return batches ``(N, C, H, W)`` of raw pixels (the dtype is kept) and are called
as ``t(x, rng)``, so they chain with :class:`~numcnn.data.Compose` before the
:class:`~numcnn.data.Preprocessing`::

    Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), prep])

(the recipe of He et al., "Deep Residual Learning for Image Recognition", section 4.2; as
``torchvision.transforms.RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``).
"""

from __future__ import annotations

import numpy as np

from .._random import get_rng
from .._text import a
from ..errors import ArgumentError, ShapeError

__all__ = ["RandomCrop", "RandomHorizontalFlip"]


def _check_batch(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"{name}: expected images (N, C, H, W), got shape {x.shape}")
    return x


class RandomCrop:
    """Pad each image by ``padding`` pixels of ``fill`` on every side, then cut a ``size`` window
    at a uniformly random position (``top`` in ``[0, H + 2p - h]``, ``left`` likewise).

    Args:
        size: output ``(h, w)``, or one int for square.
        padding: pixels added on each side. Default: 0.
        fill: value of the padding, in raw pixel units. Default: 0.
    """

    def __init__(self, size, padding: int = 0, fill=0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1 or padding < 0:
            raise ArgumentError(f"RandomCrop: size must be positive (h, w) and padding >= 0, got "
                                f"size={size!r}, padding={padding!r}")
        self.padding = int(padding)
        self.fill = fill

    def __call__(self, x, rng=None) -> np.ndarray:
        x = _check_batch(x, "RandomCrop")
        rng = get_rng() if rng is None else rng
        n, c, height, width = x.shape
        p, (h, w) = self.padding, self.size
        if h > height + 2 * p or w > width + 2 * p:
            raise ShapeError(f"RandomCrop: {a(f'{h}x{w}')} crop does not fit images of "
                             f"{height}x{width} "
                             f"padded by {p}")
        padded = np.full((n, c, height + 2 * p, width + 2 * p), self.fill, dtype=x.dtype)
        padded[:, :, p:p + height, p:p + width] = x
        top = rng.integers(0, height + 2 * p - h + 1, size=n)
        left = rng.integers(0, width + 2 * p - w + 1, size=n)
        rows = top[:, None] + np.arange(h)                                  # (n, h)
        cols = left[:, None] + np.arange(w)                                 # (n, w)
        index = np.arange(n)[:, None, None, None]
        channel = np.arange(c)[None, :, None, None]
        return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``.

    Args:
        p: probability of a flip. Default: 0.5.
    """

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ArgumentError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x, rng=None) -> np.ndarray:
        x = _check_batch(x, "RandomHorizontalFlip")
        rng = get_rng() if rng is None else rng
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip, :, :, ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
