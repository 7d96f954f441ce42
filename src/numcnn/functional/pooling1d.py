"""1-D max and average pooling over ``(N, C, L)`` signals.

A signal of length ``L`` is an image of height 1: each op views ``(n, c, l)`` as
``(n, c, 1, l)`` (a free reshape), runs the 2-D op of :mod:`numcnn.functional.pooling` with a
``(1, k)`` window, and views the result back, so the two share one tested implementation.

Output length, as PyTorch::

    L_out = floor((L + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1

(ceil instead of floor with ``ceil_mode``; average pooling has no dilation).
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, ShapeError
from . import core
from . import pooling as P
from ._windows import pool_output_size

__all__ = [
    "max_pool1d", "max_pool1d_forward", "max_pool1d_backward",
    "avg_pool1d", "avg_pool1d_forward", "avg_pool1d_backward",
    "pool1d_output_size",
]


def _single(value, label: str) -> int:
    """An int, or a 1-tuple of one, as an int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ArgumentError(f"{label} must be an int or a 1-tuple for 1-D pooling, got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{label} must be an int, got {value!r}")
    return int(value)


def _args1d(name, kernel_size, stride, padding, dilation=1):
    """Kernel, stride, padding, dilation as ints (stride defaults to the kernel), checked."""
    k = _single(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _single(stride, "stride")
    p, d = _single(padding, "padding"), _single(dilation, "dilation")
    core.pool_args(name, (1, k), (1, s), (0, p), (1, d))   # the 2-D checks, same messages
    return k, s, p, d


def pool1d_output_size(name: str, shape, kernel: int, stride: int, padding: int,
                       dilation: int = 1, ceil_mode: bool = False) -> int:
    """``L_out`` of a window over an ``(n, c, l)`` ``shape``
    (:func:`numcnn.functional._windows.pool_output_size`); ShapeError if it is empty."""
    return pool_output_size(name, shape, (kernel,), (stride,), (padding,), (dilation,),
                            ceil_mode)[0]


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ShapeError(f"{name}: expected a 3-D input (N, C, L), got shape {x.shape}")
    return x[:, :, None, :]                                        # (n, c, 1, l)


def max_pool1d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """Max pooling; ``(out, cache)``, or ``((out, indices), cache)`` with ``return_indices``
    (indices: the position ``l`` of each maximum in its input row, int64)."""
    k, s, p, d = _args1d("max_pool1d", kernel_size, stride, padding, dilation)
    x4 = _as_2d("max_pool1d", x)
    pool1d_output_size("max_pool1d", x4[:, :, 0].shape, k, s, p, d, ceil_mode)
    out, cache = P.max_pool2d_forward(x4, (1, k), (1, s), (0, p), (1, d), ceil_mode,
                                      return_indices)
    if return_indices:                       # h*W + w with h = 0 is the position along L
        return (out[0][:, :, 0], out[1][:, :, 0]), cache
    return out[:, :, 0], cache


def max_pool1d_backward(grad_out, cache) -> np.ndarray:
    """``dx``: each output's gradient goes to the position its maximum came from."""
    return P.max_pool2d_backward(np.asarray(grad_out)[:, :, None, :], cache)[:, :, 0]


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D max pooling over ``(N, C, L)``. See ``torch.nn.functional.max_pool1d``."""
    return max_pool1d_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                              return_indices)[0]


def avg_pool1d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True):
    """Average pooling; ``(out, cache)``. See :func:`avg_pool1d`."""
    k, s, p, _ = _args1d("avg_pool1d", kernel_size, stride, padding)
    x4 = _as_2d("avg_pool1d", x)
    pool1d_output_size("avg_pool1d", x4[:, :, 0].shape, k, s, p, 1, ceil_mode)
    out, cache = P.avg_pool2d_forward(x4, (1, k), (1, s), (0, p), ceil_mode, count_include_pad)
    return out[:, :, 0], cache


def avg_pool1d_backward(grad_out, cache) -> np.ndarray:
    """``dx``: each window position receives ``grad_out / divisor``."""
    return P.avg_pool2d_backward(np.asarray(grad_out)[:, :, None, :], cache)[:, :, 0]


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """1-D average pooling over ``(N, C, L)``, zero padding; the divisor counts the padding
    unless ``count_include_pad=False``. See ``torch.nn.functional.avg_pool1d``."""
    return avg_pool1d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad)[0]
