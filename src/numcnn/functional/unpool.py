"""Max unpooling: the partial inverse of max pooling (``torch.nn.functional.max_unpool2d``).

Each input value goes to the position its maximum came from, given by the ``indices`` that
``max_pool2d(..., return_indices=True)`` returns (the flat position ``h * W_out + w`` in its output
plane); every other output value is zero. Output size, as PyTorch::

    H_out = (H_in - 1) * stride[0] - 2 * padding[0] + kernel_size[0]      (likewise W_out)

unless ``output_size`` is given (it may then exceed the formula by less than a stride).

The backward pass gathers: ``dx[n, c, i] = dy[n, c, indices[n, c, i]]``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ._windows import pair, transposed_out_size, transposed_output_size

__all__ = ["max_unpool2d", "max_unpool2d_forward", "max_unpool2d_backward",
           "max_unpool2d_output_size"]


def max_unpool2d_output_size(shape, kernel_size, stride=None, padding=0,
                             output_size=None) -> tuple[int, int]:
    """``(H_out, W_out)`` for an input ``(n, c, h, w)`` (or ``(c, h, w)``) ``shape``."""
    shape = tuple(shape)
    if len(shape) not in (3, 4):
        raise ShapeError(f"max_unpool2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                         f"shape {shape}")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    # a transposed convolution's output size, without dilation or output_padding
    if output_size is None:
        return transposed_output_size("max_unpool2d", shape, kernel, stride,
                                      [(p, p) for p in padding], (1, 1), (0, 0))
    default = tuple(transposed_out_size(size, k, s, p, p, 1)
                    for size, k, s, p in zip(shape[-2:], kernel, stride, padding))
    size = tuple(int(v) for v in tuple(output_size)[-2:])
    for axis, want, base, s in zip(("height", "width"), size, default, stride):
        if not base - s < want < base + s:
            raise ShapeError(f"max_unpool2d: output_size {tuple(output_size)} is not possible for "
                             f"input {shape}: along the {axis} it must lie strictly between "
                             f"{base - s} and {base + s}")
    return size


def max_unpool2d_forward(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Scatter ``x (n, c, h, w)`` to the flat ``indices`` of ``(n, c, H_out, W_out)`` zeros.

    Raises:
        ShapeError: if ``indices`` has another shape than ``x`` or points outside the output.
    """
    x = np.asarray(x)
    indices = np.asarray(indices)
    if x.ndim != 4:
        raise ShapeError(f"max_unpool2d: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    if indices.shape != x.shape:
        raise ShapeError(f"max_unpool2d: indices should have the input's shape {x.shape}, got "
                         f"{indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ShapeError(f"max_unpool2d: indices should be integers (from max_pool2d with "
                         f"return_indices=True), got dtype {indices.dtype}")
    n, c = x.shape[:2]
    oh, ow = max_unpool2d_output_size(x.shape, kernel_size, stride, padding, output_size)
    flat_idx = indices.reshape(n * c, -1).astype(np.int64)          # (n*c, h*w)
    if flat_idx.size and (flat_idx.min() < 0 or flat_idx.max() >= oh * ow):
        raise ShapeError(f"max_unpool2d: found an index outside the output plane of {oh}x{ow} "
                         f"(indices must lie in [0, {oh * ow - 1}])")
    out = np.zeros((n * c, oh * ow), dtype=x.dtype)
    rows = np.arange(n * c)[:, None]
    out[rows, flat_idx] = x.reshape(n * c, -1)
    cache = dict(flat_idx=flat_idx, x_shape=x.shape, out_shape=(n, c, oh, ow))
    return out.reshape(n, c, oh, ow), cache


def max_unpool2d_backward(grad_out, cache) -> np.ndarray:
    """``dx[n, c, i] = dy[n, c, indices[n, c, i]]``."""
    grad_out = np.asarray(grad_out)
    if grad_out.shape != cache["out_shape"]:
        raise ShapeError(f"max_unpool2d backward: expected grad_out of shape {cache['out_shape']}, "
                         f"got {grad_out.shape}")
    flat_idx = cache["flat_idx"]
    rows = np.arange(flat_idx.shape[0])[:, None]
    grad = grad_out.reshape(flat_idx.shape[0], -1)[rows, flat_idx]
    return grad.reshape(cache["x_shape"])


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Max unpooling. See ``torch.nn.functional.max_unpool2d``."""
    return max_unpool2d_forward(x, indices, kernel_size, stride, padding, output_size)[0]
