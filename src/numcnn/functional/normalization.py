"""Batch normalisation over the batch and spatial axes, per channel.

Notation::

    n, c   batch size and channels
    m      positions per sample and channel: h*w for (n, c, h, w), l for (n, c, l), 1 for (n, c)
    N      n*m, the number of values each channel's statistics are taken over

Forward, per channel::

    mean = sum(x) / N            var = sum((x - mean)^2) / N          (biased, as PyTorch)
    xhat = (x - mean) / sqrt(var + eps)
    y    = weight * xhat + bias

Backward, the compact form (every mean over the N values of a channel)::

    dx      = weight / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
    dweight = sum(dy * xhat)
    dbias   = sum(dy)

Every array is viewed as ``(n, c, m)`` (a free reshape of a contiguous NCHW input), or, when its
memory is channels first and batch last (``(c, h, w, n)``, what the convolutions output), as
``(1, c, h, w*n)``: either way a free view. The sums over the last axis are matrix-vector products
(BLAS) and the sums over the first act on small ``(n, c)`` arrays, so the big array is read once
per statistic and no float64 copy is made of float32 data. The output has the input's layout.
"""

from __future__ import annotations

import numpy as np

from ..backend import kernels, policy
from ..backend.blas import matmul
from ..backend.layout import is_chwn
from ..errors import ArgumentError, ShapeError

__all__ = ["batch_norm", "batch_norm_forward", "batch_norm_backward"]


def _prod(sizes) -> int:
    return int(np.prod(sizes, dtype=np.int64))


def _channel_view(x: np.ndarray, batch_last: bool | None = None):
    """``x (n, c, *)`` as an array ``(outer, c, ...)`` whose memory is C-contiguous (a view when
    the memory allows), whether that is the batch-last layout, and a function that gives an
    array of that shape back the shape of ``x``, in the same layout.

    NCHW memory gives ``(n, c, h*w)``; batch-last memory ``(c, h, w, n)`` gives
    ``(1, c, h, w*n)``, so that each channel is one contiguous block for the element-wise passes
    and each statistic is summed over rows of ``w*n`` values, then over ``h`` in float64.
    ``batch_last`` None picks the layout ``x`` has (a copy to NCHW if it has neither); True or
    False asks for that one (copying ``x`` into it if needed).
    """
    n, c = x.shape[:2]
    if batch_last is None:
        batch_last = is_chwn(x)
    if batch_last:
        moved = np.ascontiguousarray(np.moveaxis(x, 0, -1))   # (c, *, n)
        view = moved.reshape(1, c, moved.shape[1], _prod(moved.shape[2:]))  # (1, c, h, w*n)
        return view, True, lambda a: np.moveaxis(a.reshape(moved.shape), -1, 0)
    x3 = np.ascontiguousarray(x).reshape(n, c, _prod(x.shape[2:]))  # sizes, not -1: n may be 0
    return x3, False, lambda a: a.reshape(x.shape)


def _sum_but_channels(partial: np.ndarray, dtype) -> np.ndarray:
    """Sum a small array of partial sums ``(outer, c, ...)`` over every axis but 1, in float64."""
    axes = (0, *range(2, partial.ndim))
    return partial.sum(axis=axes, dtype=np.float64).astype(dtype)


def _channel_sum(x3: np.ndarray) -> np.ndarray:
    """Per-channel sum of an ``(outer, c, ..., m)`` array: a BLAS product with ones gives the
    partial sums over ``m``, added over the other axes in float64 (a small array; a float32
    running total over all the values would lose digits when they share a large offset)."""
    partial = matmul(x3, np.ones(x3.shape[-1], dtype=x3.dtype))             # (outer, c, ...)
    return _sum_but_channels(partial, x3.dtype)                                # (c,)


def _channel_dot(a3: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``a3 * b3`` without forming the product array."""
    return _sum_but_channels(np.vecdot(a3, b3, axis=-1), a3.dtype)            # (c,)


# From this many samples on, a per-channel vector is spread into a (c, m) plane (see below).
_PLANE_MIN_SAMPLES = 4


def _per_channel(v: np.ndarray, x3: np.ndarray) -> np.ndarray:
    """A ``(c,)`` vector shaped to broadcast over the ``(n, c, m)`` array ``x3``.

    ``(c, 1)`` for one or a few samples. For a batch, the ``(c, m)`` plane holding each channel's
    value ``m`` times: NumPy's SIMD loops need contiguous operands, and a ``(c, 1)`` operand
    broadcast along ``m`` (stride 0) gets the plain loop, ~1.4x slower on ``(64, 16, 784)``
    float32. The plane is small (``c*m`` values, built once, reused by the ``n`` samples).
    """
    column = v.reshape(len(v), *(1,) * (x3.ndim - 2))          # (c, 1) or (c, 1, 1)
    if x3.shape[0] < _PLANE_MIN_SAMPLES:
        return column
    return np.repeat(column, x3.shape[2], axis=1)             # (c, m)


# Chained element-wise passes walk the batch in slices of about this many bytes per array, so
# that what one pass writes is still in the (L2) cache when the next pass reads it.
_SLICE_BYTES = 1 << 18


def _batch_slices(x3: np.ndarray) -> list[slice]:
    """Slices of the batch axis of the ``(n, c, m)`` array ``x3``, about ``_SLICE_BYTES`` each."""
    n = x3.shape[0]
    step = max(1, _SLICE_BYTES // max(x3[:1].nbytes, 1))
    return [slice(start, start + step) for start in range(0, n, step)]


def _scale_shift(src: np.ndarray, scale: np.ndarray, shift) -> np.ndarray:
    """``src * scale + shift`` per channel of the ``(n, c, m)`` array ``src`` (``shift`` may be
    ``None``), into a new array, one cache-sized batch slice at a time."""
    scale = _per_channel(scale, src)
    shift = None if shift is None else _per_channel(shift, src)
    if src.shape[0] < _PLANE_MIN_SAMPLES:                    # a few samples: no slicing needed
        out = np.multiply(src, scale)
        if shift is not None:
            out += shift
        return out
    out = np.empty_like(src)
    for part in _batch_slices(src):
        np.multiply(src[part], scale, out=out[part])
        if shift is not None:
            out[part] += shift
    return out


def batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                       training: bool = False, momentum: float = 0.1, eps: float = 1e-5):
    """Normalise each channel of ``x`` ``(n, c, *)`` with batch or running statistics.

    Args:
        x: input ``(n, c)``, ``(n, c, l)``, ``(n, c, h, w)``, ...
        running_mean, running_var: ``(c,)`` buffers or ``None``. In training they are updated in
            place: ``running = (1 - momentum) * running + momentum * batch_stat``, the variance
            with the unbiased batch variance ``var * N / (N - 1)``, exactly as PyTorch. Outside
            training they are the statistics used (and must be given).
        weight, bias: ``(c,)`` affine parameters, or ``None`` for ``1`` and ``0``.
        training: use the batch's statistics (and update the running ones).
        momentum: the weight of the new batch in the running averages. Default: ``0.1``.
        eps: added to the variance for numerical stability. Default: ``1e-5``.

    Returns:
        ``(y, cache)``, ``y`` of the shape and dtype of ``x``.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input (n, c, *) of at least 2 dimensions, got "
                         f"shape {x.shape}")
    n, c = x.shape[:2]
    for name, vector in (("running_mean", running_mean), ("running_var", running_var),
                         ("weight", weight), ("bias", bias)):
        if vector is not None and np.shape(vector) != (c,):
            raise ShapeError(f"batch_norm: {name} should have shape ({c},), one value per channel "
                             f"of the input {x.shape}, got {np.shape(vector)}")
    x3, batch_last, restore = _channel_view(x)                # (n, c, m) or (1, c, h, w*n)
    count = x3.size // c                                      # values per channel
    dtype = x.dtype
    impl = policy.batch_norm(x3, training)
    if training and count > 1 and impl == policy.KERNELS:
        return _batch_norm_train_kernels(x3, restore, running_mean, running_var, weight, bias,
                                         momentum, eps, x.shape, batch_last)
    if training:
        if count <= 1:
            raise ShapeError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input shape {x.shape}")
        mean = _channel_sum(x3) / count                       # (c,)
        centred = np.subtract(x3, _per_channel(mean, x3))     # (n, c, m)
        var = _channel_dot(centred, centred) / count          # (c,), biased
        _update_running(running_mean, running_var, mean, var, count, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ArgumentError("batch_norm: running_mean and running_var must be given when not "
                                "training")
        if impl == policy.KERNELS_EVAL:  # one pass, by the kernel
            return _batch_norm_eval_kernels(x3, restore, running_mean, running_var, weight, bias,
                                            eps, x.shape, batch_last)
        mean = np.asarray(running_mean, dtype=dtype)
        var = np.asarray(running_var, dtype=dtype)
    invstd = np.sqrt(var + eps)                               # (c,)
    np.divide(1, invstd, out=invstd)
    weight = None if weight is None else np.asarray(weight, dtype=dtype)
    scale = invstd if weight is None else invstd * weight     # (c,)
    shift = None if bias is None else np.asarray(bias, dtype=dtype)
    if training:                                              # y = (x - mean) * scale + bias
        out = _scale_shift(centred, scale, shift)
    else:                                                     # y = x * scale + (bias - mean*scale)
        shift = np.multiply(mean, scale) if shift is None else shift - mean * scale
        if bias is None:
            np.negative(shift, out=shift)
        out = _scale_shift(x3, scale, shift)
        centred = None                                        # the backward recomputes it
    cache = dict(impl=policy.NUMPY, centred=centred, x3=x3, mean=mean, invstd=invstd,
                 weight=weight,
                 has_bias=bias is not None, training=training, count=count,
                 shape=x.shape, batch_last=batch_last)
    return restore(out), cache


def _update_running(running_mean, running_var, mean, var, count: int, momentum: float):
    """``running = (1 - momentum) * running + momentum * batch_stat`` (unbiased variance)."""
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var


def _batch_norm_train_kernels(x3, restore, running_mean, running_var, weight, bias, momentum,
                              eps, shape, batch_last):
    """Training-mode batch norm by the compiled kernels: the same formulas, one pass per
    statistic and one for the output, over all cores; nothing but ``x`` kept for backward."""
    c = x3.shape[1]
    count = x3.size // c
    weight = None if weight is None else np.asarray(weight, dtype=np.float32)
    y3, mean, var = kernels.batch_norm_train(x3, weight, bias, eps)
    dtype = running_mean.dtype if running_mean is not None else np.float32
    _update_running(running_mean, running_var, mean.astype(dtype), var.astype(dtype), count,
                    momentum)
    invstd = 1.0 / np.sqrt(var + eps)                         # (c,), float64
    cache = dict(impl=policy.KERNELS, x3=x3, mean=mean, invstd=invstd, weight=weight,
                 has_bias=bias is not None, training=True, count=count, shape=shape,
                 batch_last=batch_last)
    return restore(y3), cache


def _batch_norm_eval_kernels(x3, restore, running_mean, running_var, weight, bias, eps, shape,
                             batch_last):
    """Batch norm with the running statistics by the compiled kernel, in one pass. Its backward
    pass (a per-channel scale) is NumPy's: the cache holds what that needs."""
    out = kernels.batch_norm_eval(x3, running_mean, running_var, weight, bias, eps)
    dtype = x3.dtype
    invstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=dtype) + eps)   # (c,)
    cache = dict(impl=policy.KERNELS_EVAL, centred=None, x3=x3,
                 mean=np.asarray(running_mean, dtype=dtype), invstd=invstd,
                 weight=None if weight is None else np.asarray(weight, dtype=dtype),
                 has_bias=bias is not None, training=False, count=x3.size // x3.shape[1],
                 shape=shape, batch_last=batch_last)
    return restore(out), cache


def batch_norm_backward(grad_out, cache):
    """Gradients ``(dx, dweight, dbias)``; ``dweight``/``dbias`` are ``None`` when not given.

    In training mode ``dx`` is the compact formula of the module docstring. In eval mode the
    statistics are constants, so ``dx = dy * weight / sqrt(running_var + eps)``.

    The cached centred input ``x - mean`` serves as scratch space (one array less to allocate);
    a second backward call on the same cache recomputes it from ``x``.
    """
    x3, invstd, weight = cache["x3"], cache["invstd"], cache["weight"]
    grad_out = np.asarray(grad_out)
    if grad_out.shape != cache["shape"]:
        raise ShapeError(f"batch_norm backward: expected grad_out of shape {cache['shape']} (the "
                         f"output's), got {grad_out.shape}")
    dy3, _, restore = _channel_view(grad_out.astype(x3.dtype, copy=False), cache["batch_last"])
    if cache["impl"] == policy.KERNELS:  # training, by the kernel; else NumPy's formulas
        dx3, grad_weight, grad_bias = kernels.batch_norm_train_backward(
            dy3, x3, cache["mean"], invstd, weight)
        return (restore(dx3), None if weight is None else grad_weight.astype(weight.dtype),
                grad_bias.astype(x3.dtype) if cache["has_bias"] else None)
    scale = invstd if weight is None else invstd * weight
    centred = cache["centred"]
    need_dot = cache["training"] or weight is not None
    if centred is None and need_dot:
        centred = np.subtract(x3, _per_channel(cache["mean"], x3))
    sum_dy = _channel_sum(dy3) if cache["training"] or cache["has_bias"] else None
    dot = _channel_dot(dy3, centred) if need_dot else None      # sum(dy * (x - mean))
    grad_weight = None if weight is None else dot * invstd       # sum(dy * xhat)
    grad_bias = sum_dy if cache["has_bias"] else None

    if not cache["training"]:
        grad = _scale_shift(dy3, scale, None)                     # scale * dy
        return restore(grad), grad_weight, grad_bias
    # dx = scale * dy - scale * (mean(dy) + xhat * mean(dy * xhat))
    #    = scale * dy - (centred * (scale * invstd^2 * dot / N) + scale * sum(dy) / N),
    # the bracket built in the cached centred array, which is then spent; slice by slice, so
    # each pass reads what the last one wrote from cache
    count = cache["count"]
    scale_plane = _per_channel(scale, x3)
    factor = _per_channel(scale * invstd * invstd * dot / count, x3)
    offset = _per_channel(scale * sum_dy / count, x3)
    grad = np.empty_like(dy3)
    for part in _batch_slices(x3):
        grad_part, centred_part = grad[part], centred[part]
        np.multiply(dy3[part], scale_plane, out=grad_part)
        centred_part *= factor
        centred_part += offset
        grad_part -= centred_part
    cache["centred"] = None
    return restore(grad), grad_weight, grad_bias


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalisation. See ``torch.nn.functional.batch_norm``."""
    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum,
                              eps)[0]
