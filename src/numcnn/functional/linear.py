"""The fully connected (affine) layer and flattening.

Notation::

    n      number of samples: every leading axis of the input folded into one, n = prod(*)
    i, o   in_features and out_features

The affine map is one matrix product on a contiguous ``(n, i)`` operand, ``y = x W^T + b``, and
its backward is two more: ``dx = dy W`` and ``dW = dy^T x``; ``db`` sums ``dy`` over the samples.
"""

from __future__ import annotations

import math

import numpy as np

from .._text import a, count
from ..backend import policy
from ..backend.blas import matmul
from ..errors import ShapeError

__all__ = [
    "linear", "linear_forward", "linear_backward", "check_linear_input",
    "flatten", "flatten_forward", "flatten_backward", "flatten_shape",
]


def check_linear_input(shape: tuple[int, ...], in_features: int, layer: str = "Linear") -> None:
    """Raise a ShapeError unless ``shape`` is ``(*, in_features)``.

    The message says how many features the previous layer produced per sample, which is what
    goes wrong when a flatten size does not match the ``Linear`` after it.
    """
    shape = tuple(shape)
    if len(shape) == 0:
        raise ShapeError(f"{layer}: expected input (*, {in_features}) "
                         f"(in_features={in_features}), got a 0-D input")
    if shape[-1] != in_features:
        raise ShapeError(f"{layer}: expected input (*, {in_features}) (in_features={in_features}), "
                         f"got {shape}: the layer before produces "
                         f"{count(shape[-1], 'feature')} per sample")


def linear_forward(x, weight, bias=None):
    """``y = x W^T + b`` over the last axis of ``x``.

    Args:
        x: input ``(*, i)``; cast to the weight's dtype.
        weight: ``(o, i)``.
        bias: ``(o,)`` or ``None``.

    Returns:
        ``(y, cache)`` with ``y`` of shape ``(*, o)``.
    """
    weight = np.asarray(weight)
    x = np.asarray(x).astype(weight.dtype, copy=False)
    out_features, in_features = weight.shape
    check_linear_input(x.shape, in_features)
    x2 = x.reshape(-1, in_features)                  # (n, i)
    out = matmul(x2, weight.T)                       # (n, o); W^T is a view, BLAS transposes it
    if bias is not None:
        out += bias
    cache = dict(impl=policy.NUMPY, x2=x2, weight=weight, has_bias=bias is not None,
                 x_shape=x.shape)
    return out.reshape(*x.shape[:-1], out_features), cache


def linear_backward(grad_out, cache):
    """Gradients ``(dx, dW, db)`` of ``y = x W^T + b``; ``db`` is ``None`` without a bias.

    ``dx = dy W`` (shape of ``x``), ``dW = dy^T x`` (``(o, i)``), ``db = sum_n dy`` (``(o,)``).
    """
    x2, weight, x_shape = cache["x2"], cache["weight"], cache["x_shape"]
    has_bias = cache["has_bias"]
    grad2 = np.asarray(grad_out).astype(weight.dtype, copy=False).reshape(-1, weight.shape[0])
    grad_x = matmul(grad2, weight).reshape(x_shape)             # (n, i) -> (*, i)
    grad_w = matmul(grad2.T, x2)                                # (o, i)
    grad_b = grad2.sum(axis=0) if has_bias else None            # (o,)
    return grad_x, grad_w, grad_b


def linear(x, weight, bias=None):
    """``y = x W^T + b``. See ``torch.nn.functional.linear``."""
    return linear_forward(x, weight, bias)[0]


def flatten_shape(shape: tuple[int, ...], start_dim: int = 0, end_dim: int = -1,
                  layer: str = "flatten") -> tuple[int, ...]:
    """The shape after merging axes ``start_dim..end_dim`` (inclusive) into one."""
    shape = tuple(shape)
    ndim = max(len(shape), 1)
    if not (-ndim <= start_dim < ndim and -ndim <= end_dim < ndim):
        raise ShapeError(f"{layer}: start_dim={start_dim}, end_dim={end_dim} are out of range for "
                         f"{a(f'{len(shape)}-D')} input of shape {shape}")
    start, end = start_dim % ndim, end_dim % ndim
    if start > end:
        raise ShapeError(f"{layer}: start_dim={start_dim} comes after end_dim={end_dim} for a "
                         f"{len(shape)}-D input of shape {shape}")
    if len(shape) == 0:
        return (1,)
    return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]


def flatten_forward(x, start_dim: int = 0, end_dim: int = -1):
    """Merge axes ``start_dim..end_dim`` into one (a view when ``x`` is contiguous)."""
    x = np.asarray(x)
    return x.reshape(flatten_shape(x.shape, start_dim, end_dim)), x.shape


def flatten_backward(grad_out, cache):
    """The gradient reshaped back to the input's shape."""
    return np.asarray(grad_out).reshape(cache)


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Flatten axes ``start_dim..end_dim``. See ``torch.flatten`` (default ``start_dim=0``)."""
    return flatten_forward(x, start_dim, end_dim)[0]
