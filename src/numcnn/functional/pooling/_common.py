"""What every pooling family shares: argument checks, the checked geometry, gradient checks.

The output sizes, the ceil-mode padding and the block and window views are the one
sliding-window module's (:mod:`numcnn.functional._windows`).
"""

from __future__ import annotations

import functools

import numpy as np

from ...errors import ArgumentError, DTypeError, ShapeError
from .._windows import check_input, pair, pool_output_size


# -- arguments, shapes and errors --------------------------------------------------------------
def _check_map(x, name: str) -> np.ndarray:
    """``x`` as a floating-point (n, c, h, w) array, else a ShapeError or DTypeError naming it."""
    x = check_input(x, 4, name, "(N, C, H, W)")
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(f"{name}: expected a floating-point input (float32 or float64), "
                         f"got dtype {x.dtype}")
    return x


def _pool_args(name: str, kernel_size, stride, padding, dilation=1):
    """Kernel, stride, padding and dilation as checked pairs (stride defaults to the kernel)."""
    kernel = pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    else:
        stride = pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    for label, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                               ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(values) < low:
            raise ArgumentError(f"{name}: {label} must be {'positive' if low else 'non-negative'}, "
                                f"got {values}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ArgumentError(f"{name}: padding should be at most half of the kernel size, got "
                            f"padding={padding} for kernel_size={kernel}")
    return kernel, stride, padding, dilation


def _check_grad(grad_out, cache, name: str) -> np.ndarray:
    """``grad_out`` as an array of the forward output's shape, or a ShapeError."""
    grad_out = np.asarray(grad_out)
    expected = cache.get("out_shape")
    if expected is None:  # lp_pool2d: the shape is in the cache it wraps
        expected = (cache.get("avg_cache") or cache.get("max_cache"))["out_shape"]
    if grad_out.shape != tuple(expected):
        raise ShapeError(f"{name}: grad_out has shape {grad_out.shape}, expected the shape of the "
                         f"forward output {tuple(expected)}")
    return grad_out


def _route(grad: np.ndarray, hit: np.ndarray, out: np.ndarray, finite: bool) -> None:
    """``out = grad where hit, else 0``. A product with the mask runs without branches (np.where
    on a random mask is several times slower) and is exact while ``grad`` is finite."""
    if finite:
        np.multiply(grad, hit, out=out)
    else:
        out[...] = np.where(hit, grad, 0)


def _is_plain(value) -> bool:
    """An int, ``None`` or a tuple of ints: a value that hashes only like itself."""
    kind = type(value)
    return (value is None or kind is int or kind is bool
            or (kind is tuple and all(type(v) is int for v in value)))


@functools.lru_cache(maxsize=256)
def _geometry_cached(name, shape, kernel_size, stride, padding, dilation, ceil_mode):
    kernel, stride, padding, dilation = _pool_args(name, kernel_size, stride, padding, dilation)
    out_hw = pool_output_size(name, shape, kernel, stride, padding, dilation, ceil_mode)
    return kernel, stride, padding, dilation, out_hw


def _geometry(name, shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Checked ``(kernel, stride, padding, dilation, out_hw)`` of a pooling call.

    Layers ask this on every forward with the same arguments, so plain (int/tuple) arguments
    are checked once and the answer cached; a float ``2.0`` must not share the cache entry of
    ``2`` (the check rejects it), hence the plainness test. Errors are raised, never cached.
    """
    args = (name, shape, kernel_size, stride, padding, dilation, ceil_mode)
    if all(_is_plain(value) for value in args[2:]):
        return _geometry_cached(*args)
    return _geometry_cached.__wrapped__(*args)
