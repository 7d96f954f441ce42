"""Element-wise activations and (log-)softmax, each with its backward rule beside it.

Every op comes as ``op(x)`` (the output), ``op_forward(x) -> (out, cache)`` and
``op_backward(grad_out, cache) -> grad_x``. The output keeps the input's dtype (float32 stays
float32). ``op_backward`` never writes into ``grad_out``: a residual block hands the same array to
two branches.

All are numerically stable for huge inputs (``+-1000`` in float32 gives no overflow, no NaN):
the sigmoid is evaluated in its two-branch form ``exp(min(x, 0)) / (1 + exp(-|x|))`` and the
softmax subtracts the maximum before exponentiating.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._text import a
from ..backend import kernels, policy
from ..backend.layout import is_chwn, to_layout
from ..errors import ArgumentError, ShapeError

__all__ = [
    "relu", "relu_forward", "relu_backward",
    "leaky_relu", "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid", "sigmoid_forward", "sigmoid_backward",
    "tanh", "tanh_forward", "tanh_backward",
    "gaussian", "gaussian_forward", "gaussian_backward",
    "softmax", "softmax_forward", "softmax_backward",
    "log_softmax", "log_softmax_forward", "log_softmax_backward",
]


# -- ReLU ---------------------------------------------------------------------------------------
def relu_forward(x, inplace: bool = False):
    """``y = max(0, x)``; with ``inplace`` the result is written into ``x``.

    The cache keeps the output (``y > 0`` exactly where ``x > 0``) and the implementation
    (``cache["impl"]``: the kernels' one pass over all cores, or NumPy; numcnn.backend.policy).
    """
    x = np.asarray(x)
    impl = policy.elementwise(x)
    if impl == policy.KERNELS:
        out = kernels.relu(x, out=x if inplace else None)
    else:
        out = np.maximum(x, 0, out=x if inplace else None)
    return out, dict(impl=impl, y=out)


def relu_backward(grad_out, cache):
    """``dx = dy * [x > 0]`` (the subgradient at 0 is 0; where ``y`` is NaN the gradient passes,
    as in PyTorch, whose rule is ``0 if y <= 0 else dy``)."""
    y = cache["y"]
    grad_out = np.asarray(grad_out)
    if cache["impl"] == policy.KERNELS and grad_out.shape == y.shape:
        # the kernel reads both in one pass: the gradient laid out as the output
        grad_out = to_layout(grad_out.astype(y.dtype, copy=False), is_chwn(y))
        return kernels.relu_backward(y, grad_out)
    return grad_out * ~(y <= 0)


def relu(x, inplace: bool = False):
    """Rectified linear unit, ``max(0, x)``. See ``torch.nn.functional.relu``."""
    return relu_forward(x, inplace)[0]


# -- LeakyReLU ----------------------------------------------------------------------------------
def leaky_relu_forward(x, negative_slope: float = 0.01, inplace: bool = False):
    """``y = x`` for ``x > 0``, ``negative_slope * x`` otherwise."""
    x = np.asarray(x)
    if inplace and negative_slope < 0:
        raise ArgumentError("leaky_relu: inplace=True needs a non-negative negative_slope (the "
                            f"backward pass reads the sign of the output), got {negative_slope}")
    if 0 <= negative_slope <= 1:
        # max(x, a*x) is x for x > 0 and a*x for x <= 0 when 0 <= a <= 1.
        scaled = np.multiply(x, negative_slope)
        out = np.maximum(x, scaled, out=x if inplace else scaled)
    else:  # max(x, 0) + a * min(x, 0) holds for any slope
        out = np.maximum(x, 0)
        negative = np.minimum(x, 0)
        negative *= negative_slope
        out = np.add(out, negative, out=x if inplace else out)
    # With a slope >= 0 the output is positive exactly where the input is; else keep the input.
    return out, (out if negative_slope >= 0 else x, negative_slope)


def leaky_relu_backward(grad_out, cache):
    """``dx = dy`` where ``x > 0`` and ``negative_slope * dy`` elsewhere."""
    sign_source, negative_slope = cache
    positive = sign_source > 0
    slope = np.asarray(negative_slope, dtype=grad_out.dtype)
    # dy * (slope + (1 - slope) * [x > 0]), written without np.where (which is slow here)
    factor = positive.astype(grad_out.dtype)
    factor *= 1 - slope
    factor += slope
    factor *= grad_out
    return factor


def leaky_relu(x, negative_slope: float = 0.01, inplace: bool = False):
    """Leaky ReLU. See ``torch.nn.functional.leaky_relu``."""
    return leaky_relu_forward(x, negative_slope, inplace)[0]


# -- Sigmoid ------------------------------------------------------------------------------------
def sigmoid_forward(x):
    """``y = 1 / (1 + exp(-x))``, evaluated as ``exp(min(x, 0)) / (1 + exp(-|x|))``.

    Both exponents are ``<= 0``, so nothing overflows: for ``x >= 0`` this is
    ``1 / (1 + exp(-x))``, for ``x < 0`` it is ``exp(x) / (1 + exp(x))``, each exact to rounding
    (the single-formula ``1 / (1 + exp(-x))`` overflows for ``x < -88`` in float32).
    """
    x = np.asarray(x)
    out = np.minimum(x, 0)
    np.exp(out, out=out)                # exp(min(x, 0))
    denom = np.abs(x)
    np.negative(denom, out=denom)
    np.exp(denom, out=denom)
    denom += 1                          # 1 + exp(-|x|)
    out /= denom
    return out, out


def sigmoid_backward(grad_out, cache):
    """``dx = dy * y * (1 - y)``."""
    out = cache
    grad = 1 - out
    grad *= out
    grad *= grad_out
    return grad


def sigmoid(x):
    """Logistic sigmoid. See ``torch.sigmoid``."""
    return sigmoid_forward(x)[0]


# -- Tanh ---------------------------------------------------------------------------------------
def tanh_forward(x):
    """``y = tanh(x)`` (stable for any input)."""
    out = np.tanh(np.asarray(x))
    return out, out


def tanh_backward(grad_out, cache):
    """``dx = dy * (1 - y^2)``."""
    out = cache
    grad = np.square(out)
    np.subtract(1, grad, out=grad)
    grad *= grad_out
    return grad


def tanh(x):
    """Hyperbolic tangent. See ``torch.tanh``."""
    return tanh_forward(x)[0]


# -- Gaussian -----------------------------------------------------------------------------------
def gaussian_forward(x):
    """``y = exp(-x^2)``; the cache holds ``x`` and ``y``."""
    x = np.asarray(x)
    out = np.square(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    return out, (x, out)


def gaussian_backward(grad_out, cache):
    """``dx = dy * (-2 x exp(-x^2)) = -2 x y dy``."""
    x, out = cache
    grad = np.multiply(x, out)
    grad *= -2
    grad *= grad_out
    return grad


def gaussian(x):
    """Gaussian activation ``exp(-x^2)`` from the course texts (not in PyTorch)."""
    return gaussian_forward(x)[0]


# -- Softmax and LogSoftmax ---------------------------------------------------------------------
def _softmax_dim(dim, ndim: int, name: str) -> int:
    """Resolve ``dim`` to a non-negative axis.

    ``dim=None`` follows PyTorch's deprecated implicit rule (axis 0 for 0-, 1- and 3-D inputs,
    axis 1 otherwise) and warns as PyTorch does; pass ``dim`` explicitly.
    """
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      f"Change the call to include dim=X as an argument.", UserWarning,
                      stacklevel=4)
        return 0 if ndim in (0, 1, 3) else 1
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ShapeError(f"{name}: dim {dim} is out of range for {a(f'{ndim}-D')} input "
                         f"(expected in [{-size}, {size - 1}])")
    return dim % size


def softmax_forward(x, dim: int | None = None):
    """``y_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x))`` along ``dim``."""
    x = np.asarray(x)
    if x.ndim == 0:
        out = np.ones_like(x)
        return out, (out, 0)
    dim = _softmax_dim(dim, x.ndim, "softmax")
    if x.size == 0:  # nothing to normalise (the maximum of an empty axis does not exist)
        out = np.empty_like(x)
        return out, (out, dim)
    out = np.subtract(x, x.max(axis=dim, keepdims=True))
    np.exp(out, out=out)
    out /= out.sum(axis=dim, keepdims=True)
    return out, (out, dim)


def softmax_backward(grad_out, cache):
    """``dx = y * (dy - sum(dy * y))``, the sum along ``dim``."""
    out, dim = cache
    if out.ndim == 0:
        return np.zeros_like(out)
    dot = np.multiply(grad_out, out).sum(axis=dim, keepdims=True)
    grad = np.subtract(grad_out, dot, dtype=out.dtype)
    grad *= out
    return grad


def softmax(x, dim: int | None = None):
    """Softmax along ``dim``. See ``torch.nn.functional.softmax``."""
    return softmax_forward(x, dim)[0]


def log_softmax_forward(x, dim: int | None = None):
    """``y_i = x_i - max(x) - log(sum_j exp(x_j - max(x)))`` along ``dim``."""
    x = np.asarray(x)
    if x.ndim == 0:
        out = np.zeros_like(x)
        return out, (out, 0)
    dim = _softmax_dim(dim, x.ndim, "log_softmax")
    if x.size == 0:  # nothing to normalise (the maximum of an empty axis does not exist)
        out = np.empty_like(x)
        return out, (out, dim)
    out = np.subtract(x, x.max(axis=dim, keepdims=True))
    out -= np.log(np.exp(out).sum(axis=dim, keepdims=True))
    return out, (out, dim)


def log_softmax_backward(grad_out, cache):
    """``dx = dy - exp(y) * sum(dy)``, the sum along ``dim``."""
    out, dim = cache
    if out.ndim == 0:
        return np.zeros_like(out)
    grad = np.exp(out)
    grad *= np.sum(grad_out, axis=dim, keepdims=True, dtype=out.dtype)
    np.subtract(grad_out, grad, out=grad)
    return grad


def log_softmax(x, dim: int | None = None):
    """Logarithm of the softmax, computed stably. See ``torch.nn.functional.log_softmax``."""
    return log_softmax_forward(x, dim)[0]
