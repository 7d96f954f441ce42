"""Data augmentation, vectorised over the batch: one affine map per image, bilinear sampling.

Each image n is flipped (optionally), rotated by ``angle[n]`` degrees about its centre and shifted
by ``(dy[n], dx[n])`` pixels. The output is computed by the inverse map: every output pixel
``p`` looks up the source point

    s = F( R(-angle) (p - c - t) ) + c,      c = ((H - 1) / 2, (W - 1) / 2),  t = (dy, dx),

where ``F`` mirrors the column when the image is flipped, and takes the bilinear mix of the four
pixels around ``s`` (points outside the image read ``fill``). All images are done at once with
array indexing into the batch, padded with ``fill``.
"""

from __future__ import annotations

import numpy as np

from .._random import get_rng
from ..errors import ArgumentError, DTypeError, ShapeError

__all__ = ["Augment", "Compose", "affine"]


def affine(x, angle, dy, dx, flip, fill=0.0) -> np.ndarray:
    """Flip, rotate and shift each image of a batch by its own amounts.

    Args:
        x: images (N, C, H, W).
        angle: (N,) degrees, counter-clockwise as displayed (row 0 at the top), as
            ``np.rot90`` and torchvision's ``rotate`` turn.
        dy, dx: (N,) shifts in pixels (down, right); fractional shifts are interpolated.
        flip: (N,) bool, mirror left-right before rotating.
        fill: value read outside the image (0 is MNIST's black background; apply this before
            normalisation).

    Returns:
        (N, C, H, W), float32 for integer input, else the input's float dtype.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"affine: expected images (N, C, H, W), got {x.shape}")
    if x.dtype.kind not in "biuf":
        raise DTypeError(f"affine: expected real pixel values, got dtype {x.dtype}")
    n, channels, height, width = x.shape
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    theta = np.deg2rad(np.asarray(angle, np.float64)).reshape(n, 1, 1)
    cos, sin = np.cos(theta), np.sin(theta)
    mirror = np.where(np.reshape(flip, (n, 1, 1)), -1.0, 1.0)
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    rows = np.arange(height).reshape(1, height, 1) - centre_y - np.reshape(dy, (n, 1, 1))
    cols = np.arange(width).reshape(1, 1, width) - centre_x - np.reshape(dx, (n, 1, 1))
    # Undo the rotation, (row, col) -> R(-angle) (row, col) with rows pointing down, then the
    # flip; each sum is one (N, H, 1) + (N, 1, W) broadcast.
    src_y = ((cos * rows + centre_y).astype(dtype) + (sin * cols).astype(dtype))  # (N, H, W)
    src_x = ((-sin * mirror * rows).astype(dtype) + (cos * mirror * cols + centre_x).astype(dtype))

    # Pad with `fill` (1 row/column before, 2 after) and clamp the source points to [-1, H] x
    # [-1, W]: a point off the image then reads only padding, so no neighbour needs a mask.
    padded_h, padded_w = height + 3, width + 3
    padded = np.full((n, channels, padded_h, padded_w), fill, dtype)
    padded[:, :, 1:height + 1, 1:width + 1] = x
    np.clip(src_y, -1, height, out=src_y)
    np.clip(src_x, -1, width, out=src_x)
    y0 = np.floor(src_y)
    x0 = np.floor(src_x)
    wy = np.subtract(src_y, y0, out=src_y).reshape(n, 1, height * width)
    wx = np.subtract(src_x, x0, out=src_x).reshape(n, 1, height * width)
    # Flat index of the top-left neighbour in the padded batch: row y0 + 1, column x0 + 1 of
    # image-channel k, which starts at k * padded_h * padded_w. (N, C, H*W)
    corner = y0.astype(np.intp)
    corner *= padded_w
    corner += x0.astype(np.intp)
    first = np.arange(n * channels) * (padded_h * padded_w) + padded_w + 1
    corner = corner.reshape(n, 1, height * width) + first.reshape(n, channels, 1)
    flat = padded.reshape(-1)
    top = flat[corner]
    top += wx * (flat[corner + 1] - top)  # linear in x along the upper row ...
    bottom = flat[corner + padded_w]
    bottom += wx * (flat[corner + padded_w + 1] - bottom)  # ... and the lower row
    top += wy * (bottom - top)  # then in y
    return top.reshape(n, channels, height, width)


class Augment:
    """Random rotation, shift and horizontal flip, drawn per image (off unless you add it).

    Args:
        rotation: angles are uniform in [-rotation, rotation] degrees (default 10).
        shift: shifts are whole pixels, uniform in [-shift, shift] on each axis (default 2).
        hflip: mirror each image left-right with probability 1/2 (default False). Note: this
            hurts on digits, whose mirror images are not digits (or are other ones); the course's
            MNIST example flips, and its accuracy pays for it.
        fill: value outside the image, in the units of the raw pixels (0 = black).

    ``augment(x, rng)`` returns float32 images (N, C, H, W); ``rng`` is a ``np.random.Generator``
    (default: numcnn's, seeded by :func:`numcnn.manual_seed`). Apply it to the raw pixels, before
    :class:`~numcnn.data.Preprocessing`, e.g. ``Compose([Augment(), prep])`` as a loader transform.
    """

    def __init__(self, rotation=10.0, shift=2, hflip=False, fill=0.0):
        if rotation < 0 or shift < 0 or int(shift) != shift:
            raise ArgumentError(f"Augment: rotation must be >= 0 and shift a whole number >= 0, "
                                f"got {rotation}, {shift}")
        self.rotation = float(rotation)
        self.shift = int(shift)
        self.hflip = bool(hflip)
        self.fill = float(fill)

    def sample(self, n: int, rng: np.random.Generator):
        """Draw ``(angle, dy, dx, flip)`` for n images, each an (n,) array."""
        angle = rng.uniform(-self.rotation, self.rotation, n)
        dy, dx = rng.integers(-self.shift, self.shift + 1, size=(2, n))
        flip = rng.random(n) < 0.5 if self.hflip else np.zeros(n, bool)
        return angle, dy, dx, flip

    def __call__(self, x, rng=None) -> np.ndarray:
        rng = get_rng() if rng is None else rng
        return affine(x, *self.sample(len(x), rng), fill=self.fill)

    def __repr__(self) -> str:
        return f"Augment(rotation={self.rotation}, shift={self.shift}, hflip={self.hflip})"


class Compose:
    """Apply transforms in turn, each called as ``t(x, rng)``: ``Compose([Augment(), prep])``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for transform in self.transforms:
            x = transform(x, rng)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
