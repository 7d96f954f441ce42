"""Sliding-window machinery shared by convolution, transposed convolution and pooling.

Notation (as in Chainer's ``conv.py``):

    n          batch size
    c          channels
    h, w       input height and width; hp, wp after padding
    kh, kw     kernel height and width
    sh, sw     stride
    dh, dw     dilation (1 means none, as in PyTorch)
    oh, ow     output height and width

Output size along one spatial dimension::

    out = floor((in + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1

``im2col`` lays every receptive field out as a column so that a convolution becomes one matrix
product; ``col2im`` is its adjoint: it adds each column back onto the pixels it was read from,
looping over the kh*kw kernel offsets with strided slice additions (no scatter).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._text import a
from ..backend.blas import matmul
from ..errors import ArgumentError, ShapeError

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def ntuple(value, n: int, name: str) -> tuple[int, ...]:
    """``3 -> (3, 3)``; a tuple of length ``n`` is checked and returned."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ArgumentError(f"{name} must be an int or a tuple of {n} ints, got "
                            f"{value!r}") from None
    if len(value) != n or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ArgumentError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    return tuple(int(v) for v in value)


def pair(value, name: str = "argument") -> tuple[int, int]:
    return ntuple(value, 2, name)


def out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
             ceil_mode: bool = False) -> int:
    """Output length of a sliding window along one dimension (PyTorch's formula).

    ``floor((size + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1``; with ``ceil_mode`` the
    floor becomes a ceiling, but the last window must start inside the input or the left padding.
    """
    span = size + pad_lo + pad_hi - dilation * (k - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
        return out
    return span // stride + 1


def formula(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> str:
    """The output-size formula with the numbers filled in, for error messages."""
    pad = f"2*{pad_lo}" if pad_lo == pad_hi else f"{pad_lo}+{pad_hi}"
    value = math.floor((size + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1
    return (f"out = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1 = "
            f"floor(({size} + {pad} - {dilation}*({k}-1) - 1) / {stride}) + 1 = {value}")


def resolve_padding(padding, kernel_size: tuple[int, ...], dilation: tuple[int, ...],
                    stride: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Padding as ``((lo, hi), ...)`` per spatial dimension.

    ``padding`` is an int, a tuple of ints (the same on both sides of each dimension), or one of
    ``"valid"`` (none), ``"same"`` (output size equals input size; stride 1 only, and when the
    total padding ``dilation*(k-1)`` is odd the extra pixel goes at the end, as in PyTorch) and
    ``"full"`` (``dilation*(k-1)`` on each side: every partial overlap is computed).
    """
    n = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ArgumentError(f"padding='same' is not supported for strided convolutions "
                                    f"(stride={stride}), as in PyTorch")
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        if padding == "full":
            return tuple((d * (k - 1),) * 2 for k, d in zip(kernel_size, dilation))
        raise ArgumentError(f"padding must be an int, a tuple of ints, 'valid', 'same' or 'full', "
                            f"got {padding!r}")
    pads = ntuple(padding, n, "padding")
    if any(p < 0 for p in pads):
        raise ArgumentError(f"padding must be non-negative, got {padding!r}")
    return tuple((p, p) for p in pads)


def pad2d(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], mode: str = "zeros",
          value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``((top, bottom), (left, right))``.

    ``mode`` is ``"zeros"`` (or ``"constant"`` with ``value``), ``"reflect"``, ``"replicate"`` or
    ``"circular"``, as in PyTorch's ``padding_mode``.
    """
    (t, b), (l, r) = pads
    if t == b == l == r == 0:
        return x
    if mode in ("zeros", "constant"):
        h, w = x.shape[-2:]
        out = np.full((*x.shape[:-2], h + t + b, w + l + r), value, dtype=x.dtype)
        out[..., t:t + h, l:l + w] = x
        return out
    if mode not in _NUMPY_PAD_MODE:
        raise ArgumentError(f"padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(t, b), (l, r)], mode=_NUMPY_PAD_MODE[mode])


def _padding_matrix(size: int, lo: int, hi: int, mode: str, dtype) -> np.ndarray:
    """The (size+lo+hi, size) 0/1 matrix P with ``padded = P @ x`` along one axis."""
    source = np.pad(np.arange(size), (lo, hi), mode=_NUMPY_PAD_MODE[mode])  # index read per pixel
    matrix = np.zeros((size + lo + hi, size), dtype=dtype)
    matrix[np.arange(size + lo + hi), source] = 1
    return matrix


def pad2d_backward(grad_padded: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]],
                   mode: str = "zeros") -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Padding is linear, ``xp = P_h @ x @ P_w^T``, so the gradient is ``P_h^T @ grad @ P_w``: for
    zero padding that is a crop; for reflect, replicate and circular padding each padded pixel
    sends its gradient back to the pixel it copied.
    """
    (t, b), (l, r) = pads
    hp, wp = grad_padded.shape[-2:]
    h, w = hp - t - b, wp - l - r
    if t == b == l == r == 0:
        return grad_padded
    if mode in ("zeros", "constant"):
        return grad_padded[..., t:t + h, l:l + w]
    p_h = _padding_matrix(h, t, b, mode, grad_padded.dtype)  # (hp, h)
    p_w = _padding_matrix(w, l, r, mode, grad_padded.dtype)  # (wp, w)
    return matmul(matmul(p_h.T, grad_padded), p_w)


def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """A read-only strided view of every receptive field of a padded (n, c, hp, wp) array.

    Returns shape ``(n, c, kh, kw, oh, ow)`` with
    ``view[n, c, i, j, y, x] = xp[n, c, y*sh + i*dh, x*sw + j*dw]``; no data is copied.
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(xp, shape=(xp.shape[0], xp.shape[1], kh, kw, oh, ow),
                      strides=(s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
                      writeable=False)


def col2im(cols: np.ndarray, padded_shape: tuple[int, int, int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Adjoint of :func:`windows`: add every window value back onto the pixel it came from.

    ``cols`` has shape ``(n, c, kh, kw, oh, ow)`` (any strides); the result has ``padded_shape``.
    One strided slice addition per kernel offset (kh*kw of them), never a per-pixel scatter.
    ``out``, if given, is an array of ``padded_shape`` (any strides, e.g. a transposed view of
    a channels-first buffer) that the values are added into, and is returned.
    """
    n, c, kh, kw, oh, ow = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    if out is None:
        out = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return out


def check_input(x, ndim: int, layer: str, expected: str) -> np.ndarray:
    """Return ``x`` as an array, or raise a ShapeError naming the layer and the expected layout."""
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ShapeError(f"{layer}: expected {a(f'{ndim}-D')} input {expected}, got shape "
                         f"{x.shape}")
    return x
