"""Inverted dropout: element-wise (``dropout``) and channel-wise (``dropout2d``).

During training each element (or each whole channel) is zeroed with probability ``p``, the *drop*
probability as in PyTorch, and the survivors are scaled by ``1 / (1 - p)``, so the expected value
of every output equals its input and evaluation needs no rescaling: in eval mode dropout is the
identity. The mask is drawn from numcnn's seeded generator (``numcnn.manual_seed``).

The cache is the scaled mask ``m`` (``0`` or ``1 / (1 - p)``); forward is ``y = x * m`` and
backward is ``dx = dy * m``.
"""

from __future__ import annotations

import numpy as np

from .._random import get_rng
from ..errors import ArgumentError, ShapeError

__all__ = [
    "dropout", "dropout_forward", "dropout_backward",
    "dropout2d", "dropout2d_forward", "dropout2d_backward",
]


def _check_p(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")


def _scaled_mask(shape: tuple[int, ...], p: float, dtype) -> np.ndarray:
    """An array of ``shape`` holding ``0`` with probability ``p`` and ``1 / (1 - p)`` otherwise."""
    dtype = np.dtype(dtype) if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)
    if p == 1.0:
        return np.zeros(shape, dtype=dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    mask = get_rng().random(shape, dtype=draw_dtype)      # U[0, 1)
    np.greater_equal(mask, p, out=mask)                    # keep with probability 1 - p
    mask *= 1.0 / (1.0 - p)
    return mask.astype(dtype, copy=False)


def dropout_forward(x, p: float = 0.5, training: bool = True, inplace: bool = False):
    """``y = x * m`` with ``m`` zero with probability ``p`` and ``1 / (1 - p)`` otherwise.

    Returns ``(y, cache)``; outside training (or for ``p = 0``) ``y`` is ``x`` itself and the
    cache is ``None``.
    """
    _check_p(p, "dropout")
    x = np.asarray(x)
    if not training or p == 0.0:
        return x, None
    mask = _scaled_mask(x.shape, p, x.dtype)
    return np.multiply(x, mask, out=x if inplace else None), mask


def dropout_backward(grad_out, cache):
    """``dx = dy * m`` (the identity when the forward pass was)."""
    return grad_out if cache is None else grad_out * cache


def dropout(x, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Inverted dropout. See ``torch.nn.functional.dropout``."""
    return dropout_forward(x, p, training, inplace)[0]


def dropout2d_forward(x, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Zero whole channels: one mask value per ``(sample, channel)``, shared over ``(h, w)``.

    ``x`` is ``(n, c, h, w)``, or ``(n, c, l)`` which PyTorch also takes and treats the same way
    (one value per channel).
    """
    _check_p(p, "dropout2d")
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ShapeError(f"Dropout2d: expected a 4-D input (n, c, h, w) or a 3-D input (n, c, l), "
                         f"got shape {x.shape}")
    if not training or p == 0.0:
        return x, None
    mask = _scaled_mask(x.shape[:2] + (1,) * (x.ndim - 2), p, x.dtype)   # (n, c, 1, 1)
    return np.multiply(x, mask, out=x if inplace else None), mask


def dropout2d_backward(grad_out, cache):
    """``dx = dy * m``, the channel mask broadcast over the spatial axes."""
    return dropout_backward(grad_out, cache)


def dropout2d(x, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise inverted dropout. See ``torch.nn.functional.dropout2d``."""
    return dropout2d_forward(x, p, training, inplace)[0]
