"""Adaptive average and max pooling."""

from __future__ import annotations

import numpy as np

from ...backend.blas import matmul
from ...errors import ArgumentError, ShapeError
from .._windows import pad2d
from ._common import _check_grad, _check_map
from .avg_pool import _avg_pool2d_forward, avg_pool2d_backward
from .max_pool import _max_pool2d_forward, _running_max, max_pool2d_backward


# -- adaptive pooling -----------------------------------------------------------------------------
def adaptive_output_size(name: str, shape, output_size) -> tuple[int, int]:
    """(oh, ow) of adaptive pooling; an entry None keeps that input size."""
    if len(shape) != 4:
        raise ShapeError(f"{name}: expected a 4-D input (N, C, H, W), got shape {tuple(shape)}")
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size, output_size)
    output_size = tuple(output_size)
    if len(output_size) != 2:
        raise ArgumentError(f"{name}: output_size must be an int or a pair (entries int or None), "
                            f"got {output_size!r}")
    sizes = tuple(int(size) if out is None else out for size, out in zip(shape[2:], output_size))
    if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
        raise ArgumentError(f"{name}: output_size entries must be positive ints or None, "
                            f"got {output_size!r}")
    if shape[2] < 1 or shape[3] < 1:
        raise ShapeError(f"{name}: input of shape {tuple(shape)} has an empty plane")
    return int(sizes[0]), int(sizes[1])


def _uniform_bins(shape, out_hw):
    """The kernel (= stride) when every bin is a block of the same size (the output size divides
    the input size): adaptive pooling is then ordinary pooling, fast path included."""
    (h, w), (oh, ow) = shape[2:], out_hw
    return (h // oh, w // ow) if h % oh == 0 and w % ow == 0 else None


def _bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins: ``start = floor(i*size/out)``, ``end = ceil((i+1)*size/out)``."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _average_matrix(size: int, out: int, dtype) -> np.ndarray:
    """The (out, size) matrix whose row i averages bin i."""
    start, end = _bins(size, out)
    pixel = np.arange(size)
    inside = (pixel >= start[:, None]) & (pixel < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _sandwich(left: np.ndarray, x: np.ndarray, right_t: np.ndarray) -> np.ndarray:
    """``left @ plane @ right_t`` for every (h, w) plane of an (n, c, h, w) array."""
    n, c, h, w = x.shape
    y = matmul(x.reshape(-1, w), right_t).reshape(n, c, h, right_t.shape[1])  # (n, c, h, ow)
    return matmul(left, y)  # (n, c, oh, ow)


def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling; returns ``(out, cache)``. See :func:`adaptive_avg_pool2d`."""
    return _adaptive_avg_pool2d_forward("adaptive_avg_pool2d", x, output_size)


def _adaptive_avg_pool2d_forward(name, x, output_size):
    x = _check_map(x, name)
    oh, ow = adaptive_output_size(name, x.shape, output_size)
    kernel = _uniform_bins(x.shape, (oh, ow))
    if kernel is not None:
        return _avg_pool2d_forward(name, x, kernel, kernel, 0, False, True, None)
    average_h = _average_matrix(x.shape[2], oh, x.dtype)  # (oh, h)
    average_w = _average_matrix(x.shape[3], ow, x.dtype)  # (ow, w)
    out = _sandwich(average_h, np.ascontiguousarray(x), average_w.T)
    return out, dict(out_shape=out.shape, average_h=average_h, average_w=average_w)


def adaptive_avg_pool2d(x, output_size) -> np.ndarray:
    r"""2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output row ``i`` averages input rows ``floor(i*H/H_out)`` to ``ceil((i+1)*H/H_out) - 1``
    (bins may overlap), and likewise for columns. Averaging is linear and separable, so
    ``out = A_h @ plane @ A_w^T`` with ``A_h[i, r] = 1/len(bin i)`` for ``r`` in bin ``i``, and the
    gradient is ``A_h^T @ grad @ A_w``.

    Args:
        x: input of shape (N, C, H, W).
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out).

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveAvgPool2d.html
    """
    return adaptive_avg_pool2d_forward(x, output_size)[0]


def adaptive_avg_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of adaptive average pooling: ``A_h^T @ grad_out @ A_w`` per plane."""
    grad_out = _check_grad(grad_out, cache, "adaptive_avg_pool2d_backward")
    if "average_h" not in cache:  # the bins were uniform blocks
        return avg_pool2d_backward(grad_out, cache)
    grad_out = np.ascontiguousarray(grad_out)
    return _sandwich(cache["average_h"].T, grad_out, cache["average_w"])


def _bin_positions(size: int, out: int) -> np.ndarray:
    """(out, K) positions of each bin, K the longest bin; positions past a bin's end are
    ``size``, where the caller appends a -inf pixel."""
    start, end = _bins(size, out)
    positions = start[:, None] + np.arange(int((end - start).max()))
    positions[positions >= end[:, None]] = size
    return positions


def adaptive_max_pool2d_forward(x, output_size, return_indices=False):
    """Adaptive max pooling; returns ``(out, cache)`` or ``((out, indices), cache)``."""
    return _adaptive_max_pool2d_forward("adaptive_max_pool2d", x, output_size, return_indices,
                                        need_grad=True)


def _adaptive_max_pool2d_forward(name, x, output_size, return_indices, need_grad):
    x = _check_map(x, name)
    n, c, h, w = x.shape
    oh, ow = adaptive_output_size(name, x.shape, output_size)
    kernel = _uniform_bins(x.shape, (oh, ow))
    if kernel is not None:
        return _max_pool2d_forward(name, x, kernel, kernel, 0, 1, False, return_indices, False,
                                   need_grad)
    need_arg = need_grad or return_indices
    rows, cols = _bin_positions(h, oh), _bin_positions(w, ow)
    # Separable, columns first (PyTorch's row-by-row scan order, as in max_pool2d): the maximum
    # of each row over every column bin, then of those over every row bin. Bins are gathered at
    # each offset into the bin; offsets past a bin's end read an appended -inf pixel.
    xp = pad2d(x, ((0, 0), (0, 1)), mode="constant", value=-np.inf)  # (n, c, h, w+1)
    row_max, col_arg = _running_max([np.take(xp, cols[:, b], axis=3)
                                     for b in range(cols.shape[1])], need_arg)  # (n, c, h, ow)
    row_max_p = pad2d(row_max, ((0, 1), (0, 0)), mode="constant", value=-np.inf)
    out, row_arg = _running_max([np.take(row_max_p, rows[:, a], axis=2)
                                 for a in range(rows.shape[1])], need_arg)  # (n, c, oh, ow)
    indices = None
    if need_arg:
        start_h, start_w = _bins(h, oh)[0], _bins(w, ow)[0]
        row = start_h[:, None] + row_arg.astype(np.int64)  # (n, c, oh, ow)
        col = start_w + np.take_along_axis(col_arg, row, axis=2).astype(np.int64)
        indices = row * w + col
    cache = dict(x_shape=x.shape, out_shape=out.shape, indices=indices)
    return ((out, indices) if return_indices else out), cache


def adaptive_max_pool2d(x, output_size, return_indices=False):
    r"""2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Output ``(i, j)`` is the maximum over rows ``floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1`` and
    the columns of bin ``j`` likewise; ties and NaN as in :func:`max_pool2d`.

    Args:
        x: input of shape (N, C, H, W).
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.
        return_indices: also return the flat index ``h*W + w`` of each maximum. Default False.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out).

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveMaxPool2d.html
    """
    return _adaptive_max_pool2d_forward("adaptive_max_pool2d", x, output_size, return_indices,
                                        need_grad=False)[0]


def adaptive_max_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Each output's gradient goes to the input its maximum came from; overlapping bins add up.

    ``np.bincount`` is a vectorised scatter-add (it accumulates in float64; the result is cast
    back to the input dtype).
    """
    grad_out = _check_grad(grad_out, cache, "adaptive_max_pool2d_backward")
    if "indices" not in cache:  # the bins were uniform blocks
        return max_pool2d_backward(grad_out, cache)
    n, c, h, w = cache["x_shape"]
    indices = cache["indices"]
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    grad = np.bincount((indices + planes).ravel(), weights=grad_out.ravel(),
                       minlength=n * c * h * w)
    return grad.astype(grad_out.dtype, copy=False).reshape(n, c, h, w)
