"""Layer, group and instance normalisation: statistics per sample instead of per batch.

Notation::

    x      input (n, c, *) for group and instance norm, (*, normalized_shape) for layer norm
    group  the values one mean and variance are taken over:
             layer norm     the last len(normalized_shape) axes of one sample
             group norm     c/G channels of one sample, with all their positions
             instance norm  one channel of one sample (its h*w positions)
    m      the number of values in a group

Forward, per group (the variance biased, as PyTorch)::

    mean = sum(x) / m      var = sum((x - mean)^2) / m      xhat = (x - mean) / sqrt(var + eps)
    y    = xhat * weight + bias          (weight, bias: per element of normalized_shape for layer
                                          norm, per channel for group and instance norm)

Backward, with ``g = dy * weight`` and means over the group::

    dx      = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)
    dweight = sum of dy * xhat over everything the weight is shared by;  dbias likewise of dy

Every op views its groups as the rows of an ``(groups, m)`` array (a free reshape), takes the
statistics along the rows (accumulated in float64) and returns the input's dtype.

References: Ba et al., "Layer Normalization", arXiv:1607.06450; Wu and He, "Group
Normalization", arXiv:1803.08494; Ulyanov et al., "Instance Normalization", arXiv:1607.08022;
``torch.nn.functional.layer_norm`` / ``group_norm`` / ``instance_norm``.
"""

from __future__ import annotations

import numpy as np

from .._text import count
from ..errors import ArgumentError, ShapeError

__all__ = [
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
    "group_norm", "group_norm_forward", "group_norm_backward",
    "instance_norm", "instance_norm_forward", "instance_norm_backward",
]


def _standardize(rows: np.ndarray, eps: float):
    """``xhat`` of each row of ``rows (groups, m)`` and ``1 / sqrt(var + eps)`` per row."""
    mean = rows.mean(axis=1, keepdims=True, dtype=np.float64)         # (groups, 1)
    centred = rows - mean                                              # float64
    var = np.mean(centred * centred, axis=1, keepdims=True)            # (groups, 1), biased
    invstd = 1.0 / np.sqrt(var + eps)
    return centred * invstd, invstd, mean, var


def _standardize_backward(g_rows: np.ndarray, xhat: np.ndarray, invstd: np.ndarray):
    """``dx = (g - mean(g) - xhat * mean(g * xhat)) * invstd`` along each row."""
    mean_g = g_rows.mean(axis=1, keepdims=True)
    mean_gx = np.mean(g_rows * xhat, axis=1, keepdims=True)
    return (g_rows - mean_g - xhat * mean_gx) * invstd


# -- layer norm ---------------------------------------------------------------------------------
def _as_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise each sample over its last ``len(normalized_shape)`` axes.

    Args:
        x: input ``(*, *normalized_shape)``.
        normalized_shape: int or tuple, the trailing shape to normalise over.
        weight, bias: arrays of shape ``normalized_shape``, or ``None``.
        eps: added to the variance. Default: ``1e-5``.

    Returns:
        ``(y, cache)``, ``y`` of the shape and dtype of ``x``.

    Raises:
        ShapeError: if ``x`` does not end in ``normalized_shape`` or a parameter's shape differs.
    """
    x = np.asarray(x)
    shape = _as_shape(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ShapeError(f"layer_norm: expected an input (*, {', '.join(map(str, shape))}) ending "
                         f"in normalized_shape={shape}, got shape {x.shape}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and np.shape(param) != shape:
            raise ShapeError(f"layer_norm: {name} should have shape {shape} (normalized_shape), "
                             f"got {np.shape(param)}")
    rows = x.reshape(-1, int(np.prod(shape)))                        # (samples, m)
    xhat, invstd, _, _ = _standardize(rows, eps)
    out = xhat
    w_row = None if weight is None else np.asarray(weight, dtype=np.float64).reshape(1, -1)
    if w_row is not None:
        out = out * w_row
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(1, -1)
    cache = dict(xhat=xhat, invstd=invstd, weight=w_row, has_bias=bias is not None,
                 shape=x.shape, param_shape=shape, dtype=x.dtype)
    return out.reshape(x.shape).astype(x.dtype, copy=False), cache


def layer_norm_backward(grad_out, cache):
    """Gradients ``(dx, dweight, dbias)`` (``None`` for a parameter not given)."""
    dy = np.asarray(grad_out, dtype=np.float64)
    if dy.shape != cache["shape"]:
        raise ShapeError(f"layer_norm backward: expected grad_out of shape {cache['shape']}, got "
                         f"{dy.shape}")
    xhat, weight, dtype, param_shape = (cache["xhat"], cache["weight"], cache["dtype"],
                                        cache["param_shape"])
    dy_rows = dy.reshape(xhat.shape)
    g = dy_rows if weight is None else dy_rows * weight
    dx = _standardize_backward(g, xhat, cache["invstd"])
    dweight = None if weight is None else (dy_rows * xhat).sum(axis=0).reshape(param_shape)
    dbias = dy_rows.sum(axis=0).reshape(param_shape) if cache["has_bias"] else None
    cast = (lambda a: None if a is None else a.astype(dtype))
    return dx.reshape(cache["shape"]).astype(dtype), cast(dweight), cast(dbias)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalisation. See ``torch.nn.functional.layer_norm``."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


# -- group norm and instance norm share one per-channel affine ----------------------------------
def _check_channel_params(name: str, x: np.ndarray, weight, bias) -> None:
    c = x.shape[1]
    for pname, param in (("weight", weight), ("bias", bias)):
        if param is not None and np.shape(param) != (c,):
            raise ShapeError(f"{name}: {pname} should have shape ({c},), one value per channel of "
                             f"the input {x.shape}, got {np.shape(param)}")


def _channel_affine(xhat_nc: np.ndarray, weight, bias) -> np.ndarray:
    """``xhat * weight[c] + bias[c]`` for ``xhat_nc`` of shape ``(n, c, m)``."""
    out = xhat_nc
    if weight is not None:
        out = out * np.asarray(weight, dtype=np.float64).reshape(1, -1, 1)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1)
    return out


def _channel_affine_backward(dy_nc: np.ndarray, xhat_nc: np.ndarray, weight, has_bias: bool):
    """``(g, dweight, dbias)`` of the per-channel affine; ``g = dy * weight``."""
    if weight is None:
        return dy_nc, None, (dy_nc.sum(axis=(0, 2)) if has_bias else None)
    g = dy_nc * np.asarray(weight, dtype=np.float64).reshape(1, -1, 1)
    dweight = (dy_nc * xhat_nc).sum(axis=(0, 2))
    return g, dweight, (dy_nc.sum(axis=(0, 2)) if has_bias else None)


def group_norm_forward(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Normalise each group of ``c / num_groups`` channels of each sample.

    Args:
        x: input ``(n, c, *)``; ``c`` divisible by ``num_groups``.
        num_groups: ``G``.
        weight, bias: ``(c,)`` per-channel affine parameters, or ``None``.
        eps: added to the variance. Default: ``1e-5``.

    Returns:
        ``(y, cache)``, ``y`` of the shape and dtype of ``x``.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ShapeError(f"group_norm: expected an input (N, C, *) of at least 2 dimensions, got "
                         f"shape {x.shape}")
    n, c = x.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ShapeError(f"group_norm: expected the {count(c, 'channel')} of input {x.shape} to be "
                         f"divisible by num_groups={num_groups}")
    _check_channel_params("group_norm", x, weight, bias)
    rows = x.reshape(n * num_groups, -1)                              # (n*G, c/G * m)
    xhat, invstd, _, _ = _standardize(rows, eps)
    xhat_nc = xhat.reshape(n, c, -1)                                  # (n, c, m)
    out = _channel_affine(xhat_nc, weight, bias)
    cache = dict(xhat=xhat, invstd=invstd, weight=weight, has_bias=bias is not None,
                 shape=x.shape, dtype=x.dtype)
    return out.reshape(x.shape).astype(x.dtype, copy=False), cache


def _per_sample_backward(grad_out, cache, name: str):
    dy = np.asarray(grad_out, dtype=np.float64)
    if dy.shape != cache["shape"]:
        raise ShapeError(f"{name} backward: expected grad_out of shape {cache['shape']}, got "
                         f"{dy.shape}")
    n, c = cache["shape"][:2]
    xhat = cache["xhat"]
    g, dweight, dbias = _channel_affine_backward(dy.reshape(n, c, -1), xhat.reshape(n, c, -1),
                                                 cache["weight"], cache["has_bias"])
    dx = _standardize_backward(g.reshape(xhat.shape), xhat, cache["invstd"])
    dtype = cache["dtype"]
    cast = (lambda a: None if a is None else a.astype(dtype))
    return dx.reshape(cache["shape"]).astype(dtype), cast(dweight), cast(dbias)


def group_norm_backward(grad_out, cache):
    """Gradients ``(dx, dweight, dbias)`` (``None`` for a parameter not given)."""
    return _per_sample_backward(grad_out, cache, "group_norm")


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Group normalisation. See ``torch.nn.functional.group_norm``."""
    return group_norm_forward(x, num_groups, weight, bias, eps)[0]


# -- instance norm ------------------------------------------------------------------------------
def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                          use_input_stats: bool = True, momentum: float = 0.1,
                          eps: float = 1e-5):
    """Normalise each channel of each sample over its positions, or with running statistics.

    Args:
        x: input ``(n, c, *)`` with at least one spatial axis.
        running_mean, running_var: ``(c,)`` buffers or ``None``. With ``use_input_stats`` they
            are updated in place, as PyTorch: ``running = (1 - momentum) * running + momentum *
            stat``, ``stat`` the per-instance mean, or unbiased variance, averaged over the batch.
            Without, they are the statistics used (and must be given).
        weight, bias: ``(c,)`` per-channel affine parameters, or ``None``.
        use_input_stats: normalise with each instance's own statistics. Default: ``True``.
        momentum: the weight of the new statistics in the running ones. Default: ``0.1``.
        eps: added to the variance. Default: ``1e-5``.

    Returns:
        ``(y, cache)``, ``y`` of the shape and dtype of ``x``.

    Raises:
        ShapeError: for an input without spatial axes, or (with ``use_input_stats``) with only one
            value per instance, or parameters of the wrong shape.
    """
    x = np.asarray(x)
    if x.ndim < 3:
        raise ShapeError(f"instance_norm: expected an input (N, C, *) with spatial axes, got "
                         f"shape {x.shape}")
    n, c = x.shape[:2]
    _check_channel_params("instance_norm", x, weight, bias)
    _check_channel_params("instance_norm", x, running_mean, running_var)
    rows = x.reshape(n * c, -1)                                       # (n*c, m)
    m = rows.shape[1]
    if use_input_stats:
        if m <= 1:
            raise ShapeError(f"instance_norm: expected more than 1 spatial element per instance "
                             f"when using input statistics, got input shape {x.shape}")
        xhat, invstd, mean, var = _standardize(rows, eps)
        if running_mean is not None:
            batch_mean = mean.reshape(n, c).mean(axis=0)
            running_mean *= 1 - momentum
            running_mean += (momentum * batch_mean).astype(running_mean.dtype)
        if running_var is not None:
            batch_var = (var.reshape(n, c) * (m / (m - 1))).mean(axis=0)
            running_var *= 1 - momentum
            running_var += (momentum * batch_var).astype(running_var.dtype)
    else:
        if running_mean is None or running_var is None:
            raise ArgumentError("instance_norm: running_mean and running_var must be given when not "
                                "using input statistics")
        mean = np.tile(np.asarray(running_mean, dtype=np.float64), n).reshape(-1, 1)
        var = np.tile(np.asarray(running_var, dtype=np.float64), n).reshape(-1, 1)
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (rows - mean) * invstd
    out = _channel_affine(xhat.reshape(n, c, -1), weight, bias)
    cache = dict(xhat=xhat, invstd=invstd, weight=weight, has_bias=bias is not None,
                 shape=x.shape, dtype=x.dtype, use_input_stats=use_input_stats)
    return out.reshape(x.shape).astype(x.dtype, copy=False), cache


def instance_norm_backward(grad_out, cache):
    """Gradients ``(dx, dweight, dbias)``. With running statistics the mean and variance are
    constants, so ``dx = dy * weight / sqrt(running_var + eps)``."""
    if cache["use_input_stats"]:
        return _per_sample_backward(grad_out, cache, "instance_norm")
    dy = np.asarray(grad_out, dtype=np.float64)
    if dy.shape != cache["shape"]:
        raise ShapeError(f"instance_norm backward: expected grad_out of shape {cache['shape']}, "
                         f"got {dy.shape}")
    n, c = cache["shape"][:2]
    xhat = cache["xhat"]
    g, dweight, dbias = _channel_affine_backward(dy.reshape(n, c, -1), xhat.reshape(n, c, -1),
                                                 cache["weight"], cache["has_bias"])
    dx = g.reshape(xhat.shape) * cache["invstd"]
    dtype = cache["dtype"]
    cast = (lambda a: None if a is None else a.astype(dtype))
    return dx.reshape(cache["shape"]).astype(dtype), cast(dweight), cast(dbias)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5):
    """Instance normalisation. See ``torch.nn.functional.instance_norm``."""
    return instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats,
                                 momentum, eps)[0]
