"""The CHWN layout: activations whose memory is ``(C, H, W, N)``, the batch innermost.

numcnn's layers take and return NCHW arrays, as PyTorch's do; the values and shapes are those of
NCHW. A convolution's output, however, is the NCHW *view* of memory laid out ``(C, H, W, N)``
(CHWN, the layout cuda-convnet named): its im2col and its compiled kernels read rows of
``ow * n`` contiguous numbers there, and the element-wise layers after it keep that memory order,
so no transposing copy is made between layers. This module holds the one predicate and the
conversions; nothing else tests strides.

    NCHW view   x[n, c, h, w]            what every layer sees
    CHWN memory x.transpose(1, 2, 3, 0)  C-contiguous (chwn_view)
"""

from __future__ import annotations

import numpy as np

Pads = tuple[tuple[int, int], tuple[int, int]]
NO_PADS: Pads = ((0, 0), (0, 0))


def is_chwn(x: np.ndarray) -> bool:
    """Whether ``x (n, c, ...)`` lies in memory CHWN, as a C-contiguous ``(c, ..., n)``, and not
    also plainly C-contiguous (a single image is both; it counts as NCHW)."""
    return x.ndim > 2 and not x.flags.c_contiguous and np.moveaxis(x, 0, -1).flags.c_contiguous


def chwn_view(x: np.ndarray) -> np.ndarray:
    """``x (n, c, ...)`` as the ``(c, ..., n)`` view of its memory (no copy)."""
    return np.moveaxis(x, 0, -1)


def memory_run(a: np.ndarray) -> np.ndarray | None:
    """``a`` as the 1-D run of its memory, if that memory is dense (C order, or any permutation
    of the axes, such as CHWN), else None. A view, never a copy."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    permuted = a.transpose(np.argsort(a.strides, kind="stable")[::-1])
    return permuted.reshape(-1) if permuted.flags.c_contiguous else None


def new_map(shape, dtype, chwn: bool = False, zeros: bool = False) -> np.ndarray:
    """A new ``(n, c, ...)`` array of ``shape`` (zeros, or uninitialised), laid out NCHW or, with
    ``chwn``, as ``(c, ..., n)`` in memory: a layer's gradient takes its input's layout, so the
    element-wise passes that combine the two run over contiguous memory."""
    make = np.zeros if zeros else np.empty
    if not chwn:
        return make(shape, dtype)
    return np.moveaxis(make((*shape[1:], shape[0]), dtype), -1, 0)


def to_layout(x: np.ndarray, chwn: bool) -> np.ndarray:
    """``x (n, c, ...)`` laid out NCHW or CHWN (a copy only if it is not already)."""
    if (is_chwn(x) if chwn else x.flags.c_contiguous):
        return x
    out = new_map(x.shape, x.dtype, chwn)
    out[...] = x
    return out


def to_chwn(x: np.ndarray, pads: Pads = NO_PADS, dtype=None) -> np.ndarray:
    """NCHW ``(n, c, h, w)`` -> zero-padded CHWN ``(c, hp, wp, n)`` in one transposing copy
    (cast to ``dtype``).

    An input whose memory is already CHWN (what :func:`from_chwn` returns) and that needs
    neither padding nor a cast is used as it is, without a copy.
    """
    n, c, h, w = x.shape
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    rows = x.transpose(1, 2, 3, 0)  # (c, h, w, n), a view
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        if x.dtype == dtype and rows.flags.c_contiguous:
            return rows
        return np.ascontiguousarray(rows, dtype=dtype)
    rows_p = np.empty((c, h + top + bottom, w + left + right, n), dtype)
    rows_p[:, top:top + h, left:left + w] = rows
    zero_border(rows_p, ((top, bottom), (left, right)))
    return rows_p


def zero_border(rows_p: np.ndarray, pads: Pads) -> None:
    """Write zeros into the padding frame of a CHWN ``(c, hp, wp, n)`` array, in place: the rows
    ``top`` above and ``bottom`` below, the columns ``left`` and ``right`` beside them. Padding
    a map this way writes each number once (``np.zeros`` and then the copy write the interior
    twice, which for a 32x32 map at batch 128 costs as much as a small convolution)."""
    (top, bottom), (left, right) = pads
    _, hp, wp, _ = rows_p.shape
    rows_p[:, :top] = 0.0
    rows_p[:, hp - bottom:] = 0.0
    rows_p[:, top:hp - bottom, :left] = 0.0
    rows_p[:, top:hp - bottom, wp - right:] = 0.0


def from_chwn(rows: np.ndarray, bias: np.ndarray | None = None,
              crop: Pads = NO_PADS) -> np.ndarray:
    """CHWN ``(c, hp, wp, n)`` -> the NCHW view, cropping ``crop`` off and adding ``bias``
    (in place).

    No copy: NumPy's element-wise operations keep that memory order, and the next convolution
    takes it as its rows without a copy (:func:`to_chwn`), so activations go from layer to layer
    in it.
    """
    c, hp, wp, n = rows.shape
    (top, bottom), (left, right) = crop
    view = rows[:, top:hp - bottom, left:wp - right]  # (c, h, w, n)
    if bias is not None:
        view += bias.reshape(c, 1, 1, 1)
    return view.transpose(3, 0, 1, 2)
