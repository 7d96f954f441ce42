"""Convolution and cross-correlation of single 1-D and 2-D arrays, as in signal processing.

These are the textbook operations, for comparing with what a CNN layer computes and for
teaching; they agree with ``scipy.signal.correlate`` / ``scipy.signal.convolve`` with
``method='direct'``. For an input ``a`` of length N and a kernel ``v`` of length M (each axis of
a 2-D array alike)::

    correlate(a, v)[k] = sum_i a[k + i] * v[i]        the kernel slides as it is
    convolve(a, v)[k]  = sum_i a[k - i] * v[i]        the kernel is flipped first

so ``convolve(a, v) == correlate(a, v[::-1])`` (``v[::-1, ::-1]`` in 2-D: a 180-degree rotation).
A CNN's "convolution" is ``correlate``. ``mode`` picks which lags are returned, as positions in
the ``'full'`` result (every lag with any overlap, length ``N + M - 1``):

    'full'   all of them;
    'valid'  only where one array lies entirely inside the other: positions
             ``min(N, M) - 1 .. max(N, M) - 1``, length ``|N - M| + 1``. As in SciPy the roles
             of the two arrays swap when ``v`` is the larger one (so the result is not empty);
             one array must then be at least as large as the other along every axis;
    'same'   the length of ``a``, centred on the full result: positions
             ``(M - 1) // 2 .. (M - 1) // 2 + N - 1`` (SciPy's ``_centered``), for any M.

Each is computed by padding ``a`` with zeros and taking one product of the sliding windows
(``_windows.windows``) with the kernel, never a Python loop over pixels.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError
from ._windows import windows

__all__ = ["correlate", "convolve"]

MODES = ("full", "valid", "same")


def correlate(a, v, mode: str = "full") -> np.ndarray:
    """Cross-correlation of two 1-D or two 2-D arrays: ``z[k] = sum_i a[k + i] * v[i]``.

    Args:
        a: the first input, 1-D or 2-D.
        v: the second input (the kernel), with as many dimensions as ``a``.
        mode: ``'full'`` (default), ``'valid'`` or ``'same'``; see the module docstring.

    Shape:
        - Per axis, with N = len of ``a`` and M = len of ``v``: ``'full'`` -> N + M - 1,
          ``'valid'`` -> |N - M| + 1, ``'same'`` -> N.

    SciPy: https://docs.scipy.org/doc/scipy/reference/generated/scipy.signal.correlate.html
    """
    a, v = _check("correlate", a, v, mode)
    return _correlate(a, v, mode)


def convolve(a, v, mode: str = "full") -> np.ndarray:
    """Convolution of two 1-D or two 2-D arrays: ``z[k] = sum_i a[k - i] * v[i]``.

    The same as :func:`correlate` with the kernel flipped along every axis (rotated 180 degrees
    in 2-D); ``'same'`` and ``'valid'`` select the same positions of the full result as there.

    Args:
        a: the first input, 1-D or 2-D.
        v: the second input (the kernel), with as many dimensions as ``a``.
        mode: ``'full'`` (default), ``'valid'`` or ``'same'``.

    SciPy: https://docs.scipy.org/doc/scipy/reference/generated/scipy.signal.convolve.html
    """
    a, v = _check("convolve", a, v, mode)
    return _correlate(a, v[(slice(None, None, -1),) * v.ndim], mode)


def _check(name: str, a, v, mode: str):
    a, v = np.asarray(a), np.asarray(v)
    if mode not in MODES:
        raise ArgumentError(f"{name}: mode must be one of {MODES}, got {mode!r}")
    for label, array in (("a", a), ("v", v)):
        if array.ndim not in (1, 2):
            raise ShapeError(f"{name}: expected 1-D or 2-D arrays, got {label} of shape "
                             f"{array.shape}")
        if array.size == 0:
            raise ShapeError(f"{name}: {label} is empty (shape {array.shape})")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
                or np.iscomplexobj(array):
            raise DTypeError(f"{name}: expected real numbers, got {label} of dtype {array.dtype}")
    if a.ndim != v.ndim:
        raise ShapeError(f"{name}: a and v must have the same number of dimensions, got shapes "
                         f"{a.shape} and {v.shape}")
    if mode == "valid":
        a_larger = all(n >= m for n, m in zip(a.shape, v.shape))
        v_larger = all(m >= n for n, m in zip(a.shape, v.shape))
        if not (a_larger or v_larger):
            raise ShapeError(f"{name}: for mode='valid' one array must be at least as large as "
                             f"the other along every axis, got shapes {a.shape} and {v.shape}")
    return a, v


def _correlate(a: np.ndarray, v: np.ndarray, mode: str) -> np.ndarray:
    """Cross-correlation restricted to the positions ``mode`` selects from the full result."""
    dtype = np.result_type(a, v)
    if dtype == np.bool_:
        dtype = np.dtype(np.int64)
    a2 = a.reshape(1, -1) if a.ndim == 1 else a  # 1-D is a 2-D problem of height 1
    v2 = v.reshape(1, -1) if v.ndim == 1 else v
    # Per axis: the positions [start, stop) of the full result to compute. Full position k
    # reads a[k - (M-1) + i] for i < M, so it needs a[start - M + 1 : stop], zero outside a.
    spans = []
    for n, m in zip(a2.shape, v2.shape):
        if mode == "full":
            start, stop = 0, n + m - 1
        elif mode == "valid":
            start, stop = min(n, m) - 1, max(n, m)
        else:  # 'same'
            start = (m - 1) // 2
            stop = start + n
        spans.append((start, stop))
    (sy, ey), (sx, ex) = spans
    (n_h, n_w), (m_h, m_w) = a2.shape, v2.shape
    # a padded with zeros on both sides, then the part the selected positions read
    lo_h, lo_w = m_h - 1 - sy, m_w - 1 - sx  # zeros (or, if negative, rows dropped) on the left
    padded = np.zeros((ey - sy + m_h - 1, ex - sx + m_w - 1), dtype)
    src_y0, src_x0 = max(0, -lo_h), max(0, -lo_w)
    src_y1, src_x1 = min(n_h, padded.shape[0] - lo_h), min(n_w, padded.shape[1] - lo_w)
    padded[src_y0 + lo_h:src_y1 + lo_h, src_x0 + lo_w:src_x1 + lo_w] = a2[src_y0:src_y1,
                                                                          src_x0:src_x1]
    view = windows(padded[None, None], (m_h, m_w), (1, 1), (1, 1), (ey - sy, ex - sx))
    out = np.tensordot(v2.astype(dtype, copy=False), view[0, 0], axes=([0, 1], [0, 1]))
    return out.reshape(-1) if a.ndim == 1 else out
