"""The smooth and parametric activations of modern blocks: GELU, SiLU, ELU, Softplus, Hardswish
and PReLU, each with its backward rule beside it.

Every op comes as ``op(x, ...)`` (the output), ``op_forward(x, ...) -> (out, cache)`` and
``op_backward(grad_out, cache)`` (``grad_x``, or ``(grad_x, grad_weight)`` for PReLU), as the ops
of :mod:`numcnn.functional.activation`. The output keeps the input's dtype; ``op_backward`` never
writes into ``grad_out``.

Numerical stability: nothing here overflows or gives NaN for finite inputs of any size, in float32
or float64. Exponentials are only taken of non-positive numbers (``exp(min(x, 0))``,
``exp(-|x|)``), the logistic function is the two-branch form of
:func:`numcnn.functional.activation.sigmoid_forward`, and the normal CDF of the exact GELU is
``erfc(-x / sqrt(2)) / 2``, which keeps its relative accuracy far into the left tail (where
``(1 + erf(x / sqrt(2))) / 2`` cancels to 0).
"""

from __future__ import annotations

import math

import numpy as np

from .._text import count
from ..errors import ArgumentError, ShapeError
from .activation import sigmoid_forward

__all__ = [
    "gelu", "gelu_forward", "gelu_backward",
    "silu", "silu_forward", "silu_backward",
    "elu", "elu_forward", "elu_backward",
    "softplus", "softplus_forward", "softplus_backward",
    "hardswish", "hardswish_forward", "hardswish_backward",
    "prelu", "prelu_forward", "prelu_backward", "prelu_check_shape",
]

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715

# erfc on arrays: NumPy has no error function. SciPy's vectorised one is used where SciPy is
# installed (~10x faster); else the standard library's, element by element. Both are accurate to
# about one unit in the last place of a double.
_erfc_python = np.frompyfunc(math.erfc, 1, 1)


def _erfc(z: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erfc
    except ImportError:
        return _erfc_python(z).astype(np.float64)
    return erfc(z)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """``Phi(x) = erfc(-x / sqrt(2)) / 2`` in float64, for an array of any float dtype."""
    z = np.asarray(x, dtype=np.float64) / -_SQRT_2
    return 0.5 * _erfc(z)


# -- GELU ---------------------------------------------------------------------------------------
def gelu_forward(x, approximate: str = "none"):
    """Gaussian error linear unit (Hendrycks and Gimpel, 2016, arXiv:1606.08415).

    ``approximate="none"``: ``y = x * Phi(x)``, ``Phi`` the standard normal CDF.
    ``approximate="tanh"``: ``y = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.
    """
    x = np.asarray(x)
    if approximate == "none":
        cdf = _normal_cdf(x)
        return (x * cdf).astype(x.dtype, copy=False), (x, approximate, cdf)
    if approximate == "tanh":
        with np.errstate(over="ignore"):                 # x^3 may be inf; tanh(+-inf) = +-1
            inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
        t = np.tanh(inner)
        out = 0.5 * x * (1 + t)
        return out.astype(x.dtype, copy=False), (x, approximate, t)
    raise ArgumentError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_backward(grad_out, cache):
    """Exact: ``dx = dy * (Phi(x) + x * phi(x))``, ``phi(x) = exp(-x^2/2) / sqrt(2 pi)``.

    Tanh form, with ``t = tanh(u)``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``:
    ``dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))``; where
    ``1 - t^2`` is 0 (|u| large) the second term is 0, not ``0 * inf``.
    """
    x, approximate, saved = cache
    if approximate == "none":
        xd = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore"):
            pdf = np.exp(-0.5 * xd * xd) * _INV_SQRT_2PI
        local = saved + xd * pdf
    else:
        t = saved
        sech2 = 1 - t * t
        with np.errstate(over="ignore", invalid="ignore"):
            slope = 0.5 * x * sech2 * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
        slope = np.where(sech2 == 0, 0, slope)
        local = 0.5 * (1 + t) + slope
    return (np.asarray(grad_out) * local).astype(x.dtype, copy=False)


def gelu(x, approximate: str = "none"):
    """GELU. See ``torch.nn.functional.gelu``."""
    return gelu_forward(x, approximate)[0]


# -- SiLU ---------------------------------------------------------------------------------------
def silu_forward(x):
    """Sigmoid linear unit (swish), ``y = x * sigmoid(x)`` (Elfwing et al., arXiv:1702.03118)."""
    x = np.asarray(x)
    s = sigmoid_forward(x)[0]
    return x * s, (x, s)


def silu_backward(grad_out, cache):
    """``dx = dy * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``."""
    x, s = cache
    local = 1 - s
    local *= x
    local += 1
    local *= s
    return (np.asarray(grad_out) * local).astype(x.dtype, copy=False)


def silu(x):
    """SiLU. See ``torch.nn.functional.silu``."""
    return silu_forward(x)[0]


# -- ELU ----------------------------------------------------------------------------------------
def elu_forward(x, alpha: float = 1.0):
    """``y = x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al.,
    arXiv:1511.07289); ``expm1`` of ``min(x, 0)``, so nothing overflows."""
    x = np.asarray(x)
    negative = np.expm1(np.minimum(x, 0))
    negative *= alpha
    out = np.where(x > 0, x, negative).astype(x.dtype, copy=False)
    return out, (x, alpha)


def elu_backward(grad_out, cache):
    """``dx = dy`` for ``x > 0``, ``dy * alpha * exp(x)`` otherwise."""
    x, alpha = cache
    local = np.exp(np.minimum(x, 0))
    local *= alpha
    local = np.where(x > 0, 1, local).astype(x.dtype, copy=False)
    return (np.asarray(grad_out) * local).astype(x.dtype, copy=False)


def elu(x, alpha: float = 1.0):
    """ELU. See ``torch.nn.functional.elu``."""
    return elu_forward(x, alpha)[0]


# -- Softplus -----------------------------------------------------------------------------------
def softplus_forward(x, beta: float = 1.0, threshold: float = 20.0):
    """``y = log(1 + exp(beta x)) / beta``, and ``y = x`` where ``beta x > threshold``.

    Evaluated as ``(max(beta x, 0) + log1p(exp(-|beta x|))) / beta``, exact and overflow-free.
    """
    x = np.asarray(x)
    bx = x * np.asarray(beta, dtype=x.dtype)
    soft = np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))
    soft /= beta
    out = np.where(bx > threshold, x, soft).astype(x.dtype, copy=False)
    return out, (x, bx, threshold)


def softplus_backward(grad_out, cache):
    """``dx = dy * sigmoid(beta x)``, and ``dx = dy`` where ``beta x > threshold``."""
    x, bx, threshold = cache
    local = np.where(bx > threshold, 1, sigmoid_forward(bx)[0]).astype(x.dtype, copy=False)
    return (np.asarray(grad_out) * local).astype(x.dtype, copy=False)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """Softplus. See ``torch.nn.functional.softplus``."""
    return softplus_forward(x, beta, threshold)[0]


# -- Hardswish ----------------------------------------------------------------------------------
def hardswish_forward(x):
    """``y = x * min(max(x + 3, 0), 6) / 6`` (Howard et al., MobileNetV3, arXiv:1905.02244)."""
    x = np.asarray(x)
    gate = np.clip(x + 3, 0, 6)
    gate *= x
    gate /= 6
    return gate.astype(x.dtype, copy=False), x


def hardswish_backward(grad_out, cache):
    """``dx = 0`` for ``x <= -3``, ``dy * (x / 3 + 1/2)`` for ``-3 < x < 3``, ``dy`` from 3 on
    (PyTorch's choice of one-sided derivatives at the kinks)."""
    x = cache
    local = np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)).astype(x.dtype, copy=False)
    return (np.asarray(grad_out) * local).astype(x.dtype, copy=False)


def hardswish(x):
    """Hardswish. See ``torch.nn.functional.hardswish``."""
    return hardswish_forward(x)[0]


# -- PReLU --------------------------------------------------------------------------------------
def prelu_check_shape(shape, num_parameters: int) -> None:
    """Raise a ShapeError unless an input of ``shape`` fits ``num_parameters`` slopes (1, or the
    size of axis 1)."""
    shape = tuple(shape)
    channels = shape[1] if len(shape) >= 2 else 1
    if num_parameters not in (1, channels):
        raise ShapeError(f"prelu: the weight has {count(num_parameters, 'value')} "
                         f"(num_parameters), but the input {shape} has "
                         f"{count(channels, 'channel')} along axis 1; expected 1 or "
                         f"{channels}")


def _prelu_weight_view(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight`` (1 or C values) shaped to broadcast over ``x``, channels along axis 1."""
    weight = np.asarray(weight)
    if weight.ndim != 1:
        raise ShapeError(f"prelu: expected a 1-D weight of 1 or C values, got shape {weight.shape}")
    prelu_check_shape(x.shape, weight.size)
    if weight.size == 1:
        return weight.reshape(())
    return weight.reshape(weight.size, *(1,) * (x.ndim - 2))


def prelu_forward(x, weight):
    """``y = x`` for ``x > 0``, ``a * x`` otherwise, ``a`` the learned slope (one for all channels
    or one per channel of axis 1) (He et al., arXiv:1502.01852)."""
    x = np.asarray(x)
    slope = _prelu_weight_view(x, weight).astype(x.dtype, copy=False)
    out = np.where(x > 0, x, slope * x).astype(x.dtype, copy=False)
    return out, (x, slope, np.shape(weight))


def prelu_backward(grad_out, cache):
    """``(dx, dweight)``: ``dx = dy * (x > 0 ? 1 : a)``; ``dweight = sum(dy * x * [x <= 0])`` over
    every axis but the channel axis (over all axes for a single slope)."""
    x, slope, weight_shape = cache
    grad_out = np.asarray(grad_out)
    positive = x > 0
    grad_x = np.where(positive, grad_out, slope * grad_out).astype(x.dtype, copy=False)
    contribution = np.where(positive, 0, grad_out * x)
    if weight_shape[0] == 1:
        grad_weight = contribution.sum(dtype=np.float64).reshape(1)
    else:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        grad_weight = contribution.sum(axis=axes, dtype=np.float64)
    return grad_x, grad_weight.astype(x.dtype)


def prelu(x, weight):
    """PReLU. See ``torch.nn.functional.prelu``."""
    return prelu_forward(x, weight)[0]
