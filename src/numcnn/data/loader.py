"""A seeded mini-batch loader over in-memory arrays."""

from __future__ import annotations

import math

import numpy as np

from .._random import get_rng
from .._text import count
from ..errors import DataError

__all__ = ["DataLoader"]


class DataLoader:
    """Mini-batches ``(xb, yb)`` of arrays ``x`` and ``y``, as ``torch.utils.data.DataLoader``.

    Each pass (epoch) draws its order and its augmentation from a generator seeded with
    ``(seed, epoch)``: the same seed gives the same batches, each epoch a new permutation, and a
    run resumed after k epochs reproduces the rest by calling ``set_epoch(k)`` first.

    Args:
        x, y: samples and labels, the same length along axis 0 (e.g. uint8 images and int64
            class indices; batches are taken from them as they are).
        batch_size: samples per batch (default 64).
        shuffle: new random order each epoch (default False: the stored order).
        drop_last: leave out the last batch if it is smaller than ``batch_size``.
        seed: int; default: drawn from numcnn's generator, so :func:`numcnn.manual_seed` fixes it.
        transform: called on every batch of samples as ``transform(xb, rng)`` with the epoch's
            generator, e.g. ``Compose([Augment(), prep])`` or a :class:`Preprocessing`.

    Attributes:
        epoch: the number of the next pass; a pass uses it and advances it by one.

    Without shuffle or transform the batches are views into ``x`` and ``y``.
    """

    def __init__(self, x, y, batch_size=64, shuffle=False, drop_last=False, seed=None,
                 transform=None):
        if np.ndim(x) == 0 or np.ndim(y) == 0:
            raise DataError(f"DataLoader: expected arrays of samples and labels (at least 1-D), "
                            f"got shapes {np.shape(x)} and {np.shape(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float, np.number)):
            raise DataError(f"DataLoader: batch_size must be a whole number >= 1, got "
                            f"{batch_size!r}")
        if len(x) != len(y):
            raise DataError(f"DataLoader: expected one label per sample, got "
                            f"{count(len(x), 'sample')} but {count(len(y), 'label')}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise DataError(f"DataLoader: batch_size must be a whole number >= 1, got {batch_size}")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(get_rng().integers(2**63)) if seed is None else int(seed)
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch number ``epoch`` (0 is the first)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.x)) if self.shuffle else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                xb, yb = self.x[order[start:stop]], self.y[order[start:stop]]
            if self.transform is not None:
                xb = self.transform(xb, rng)
            yield xb, yb
