"""Resizing by nearest-neighbour and (bi)linear interpolation, as
``torch.nn.functional.interpolate``.

Both modes are separable: along each spatial axis the output is a fixed linear combination of the
input, ``y = A x`` with an interpolation matrix ``A (out, in)``. For ``(n, c, h, w)``::

    y = A_h @ x @ A_w^T                 dx = A_h^T @ dy @ A_w          (the backward pass)

Row ``j`` of ``A`` holds the weights output position ``j`` takes from the input (PyTorch's index
rules, computed in the input's dtype as PyTorch does):

- ``nearest``: a single 1 at ``min(floor(j * scale), in - 1)``.
- ``linear`` / ``bilinear``: source coordinate ``src = j * (in - 1) / (out - 1)`` with
  ``align_corners=True``, else ``src = max((j + 0.5) * scale - 0.5, 0)``; weights
  ``1 - lambda`` at ``i0 = floor(src)`` and ``lambda = src - i0`` at ``min(i0 + 1, in - 1)``.

``scale`` is ``1 / scale_factor`` when a scale factor is given (and ``recompute_scale_factor`` is
not set), else ``in / out``. The output size is ``size``, or ``floor(in * scale_factor)``.
"""

from __future__ import annotations

import math

import numpy as np

from .._text import a, count as plural
from ..backend.blas import blas_one_thread
from ..errors import ArgumentError, ShapeError

__all__ = ["interpolate", "interpolate_forward", "interpolate_backward",
           "interpolate_output_size"]

_MODES = {"nearest": (3, 4), "linear": (3,), "bilinear": (4,)}


def _per_axis(value, count: int, label: str):
    if isinstance(value, (tuple, list)):
        if len(value) != count:
            raise ArgumentError(f"interpolate: {label} should have {plural(count, 'value')} "
                                f"(one per spatial axis), got {tuple(value)}")
        return tuple(value)
    return (value,) * count


def _check(shape, size, scale_factor, mode, align_corners):
    shape = tuple(shape)
    if mode not in _MODES:
        raise ArgumentError(f"interpolate: mode must be one of {sorted(_MODES)}, got {mode!r}")
    if len(shape) not in _MODES[mode]:
        wanted = " or ".join(f"{r}-D" for r in _MODES[mode])
        raise ShapeError(f"interpolate: mode={mode!r} expects {a(wanted)} input (N, C, ...), got "
                         f"shape {shape}")
    if align_corners is not None and mode == "nearest":
        raise ArgumentError("interpolate: align_corners option can only be set with the "
                            "interpolating modes: linear | bilinear")
    if (size is None) == (scale_factor is None):
        raise ArgumentError("interpolate: give exactly one of size and scale_factor, got "
                            f"size={size!r}, scale_factor={scale_factor!r}")
    return shape, len(shape) - 2


def interpolate_output_size(shape, size=None, scale_factor=None, mode: str = "nearest",
                            align_corners=None) -> tuple[int, ...]:
    """The output shape for an input of ``shape``, without running."""
    shape, dims = _check(shape, size, scale_factor, mode, align_corners)
    if size is not None:
        spatial = tuple(int(s) for s in _per_axis(size, dims, "size"))
    else:
        factors = _per_axis(scale_factor, dims, "scale_factor")
        spatial = tuple(int(math.floor(float(n) * float(f))) for n, f in zip(shape[2:], factors))
    if min(spatial) < 1:
        raise ShapeError(f"interpolate: the output size {spatial} for input {shape} must be "
                         f"positive")
    return (*shape[:2], *spatial)


def _matrix(n_in: int, n_out: int, factor, mode: str, align_corners: bool, dtype) -> np.ndarray:
    """The interpolation matrix ``A (n_out, n_in)`` of one axis, in ``dtype``."""
    dtype = np.dtype(dtype)
    dst = np.arange(n_out, dtype=dtype)
    A = np.zeros((n_out, n_in), dtype=dtype)
    rows = np.arange(n_out)
    if mode == "nearest":
        # PyTorch takes this scale in single precision whatever the dtype
        scale = np.float32(1.0 / factor if factor is not None else n_in / n_out)
        src = np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), n_in - 1)
        A[rows, src] = 1
        return A
    if align_corners:
        scale = dtype.type((n_in - 1) / (n_out - 1) if n_out > 1 else 0)
        src = scale * dst
    else:
        scale = dtype.type(1.0 / factor if factor is not None else n_in / n_out)
        src = np.maximum(scale * (dst + dtype.type(0.5)) - dtype.type(0.5), 0)
    i0 = src.astype(np.int64)                                   # floor, src >= 0
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0.astype(dtype)
    np.add.at(A, (rows, i0), 1 - lam)
    np.add.at(A, (rows, i1), lam)
    return A


def interpolate_forward(x, size=None, scale_factor=None, mode: str = "nearest",
                        align_corners=None, recompute_scale_factor=None):
    """Resize ``x`` (``(n, c, l)`` or ``(n, c, h, w)``); returns ``(y, cache)``.

    Args:
        x: input of a float dtype.
        size: output spatial size, int or tuple. Give this or ``scale_factor``.
        scale_factor: multiplier of the spatial size, float or tuple.
        mode: ``"nearest"`` (3-D, 4-D), ``"linear"`` (3-D) or ``"bilinear"`` (4-D).
        align_corners: for the linear modes, map the corner pixels' centres onto each other.
            Default: ``None`` (``False``).
        recompute_scale_factor: take the coordinate scale from the sizes (``in / out``) instead
            of ``1 / scale_factor``. Default: ``None`` (``False``).

    Raises:
        ShapeError: for an input rank the mode does not accept or an empty output.
        ValueError: for an unknown mode, both or neither of ``size`` and ``scale_factor``, or
            ``align_corners`` with ``mode="nearest"``.
    """
    x = np.asarray(x)
    out_shape = interpolate_output_size(x.shape, size, scale_factor, mode, align_corners)
    dims = x.ndim - 2
    factors = (None,) * dims if scale_factor is None or recompute_scale_factor else \
        _per_axis(scale_factor, dims, "scale_factor")
    mats = [_matrix(n_in, n_out, f, mode, bool(align_corners), x.dtype)
            for n_in, n_out, f in zip(x.shape[2:], out_shape[2:], factors)]
    with blas_one_thread(x.dtype):                         # beside the kernels
        if dims == 1:
            out = np.matmul(x, mats[0].T)                          # (n, c, l_out)
        else:
            out = np.matmul(np.matmul(mats[0], x), mats[1].T)      # (n, c, h_out, w_out)
    return out, dict(mats=mats, x_shape=x.shape, out_shape=out.shape)


def interpolate_backward(grad_out, cache) -> np.ndarray:
    """``dx = A^T dy`` along each axis (``A_h^T @ dy @ A_w`` for images)."""
    grad_out = np.asarray(grad_out)
    if grad_out.shape != cache["out_shape"]:
        raise ShapeError(f"interpolate backward: expected grad_out of shape {cache['out_shape']},"
                         f" got {grad_out.shape}")
    mats = cache["mats"]
    with blas_one_thread(grad_out.dtype):
        if len(mats) == 1:
            return np.matmul(grad_out, mats[0])
        return np.matmul(np.matmul(mats[0].T, grad_out), mats[1])


def interpolate(x, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None):
    """Up/down-sample ``x``. See ``torch.nn.functional.interpolate``."""
    return interpolate_forward(x, size, scale_factor, mode, align_corners,
                               recompute_scale_factor)[0]
