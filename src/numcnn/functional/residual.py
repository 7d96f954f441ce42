"""The residual sum ``y = a + b`` (a block's output plus its shortcut), forward and backward.

The sum is the one operation a residual block adds to its branches: its backward hands the
output gradient to both branches unchanged, and the input gradient of the block is the sum of
the two branches' input gradients, another such sum. On float32 activations laid out alike
(NCHW or CHWN) of at least ``policy.MIN_ELEMENTWISE`` numbers it is one pass by the compiled
kernels, split over the cores; otherwise NumPy's ``a + b``.

He et al. 2016, "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

import numpy as np

from ..backend import kernels, policy
from ..errors import ShapeError

__all__ = ["add"]


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` elementwise, as ``torch.add``: a new array laid out as ``a``.

    Shape:
        - a, b: the same shape (no broadcasting: a residual sum adds two maps of one shape)
        - Output: that shape

    Raises:
        ShapeError: if the shapes differ.
    """
    if a.shape != b.shape:
        raise ShapeError(f"add: the two terms must have one shape, got {a.shape} and {b.shape}")
    if policy.elementwise(a, b) == policy.KERNELS:
        return kernels.add(a, b)
    return a + b
