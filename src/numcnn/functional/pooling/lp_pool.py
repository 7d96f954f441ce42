"""Power-average (L_p) pooling."""

from __future__ import annotations

import numpy as np

from ...errors import ArgumentError
from .._windows import pair
from ._common import _check_grad, _check_map
from .avg_pool import _avg_pool2d_forward, avg_pool2d_backward
from .max_pool import _max_pool2d_forward, max_pool2d_backward


# -- power-average (L_p) pooling ------------------------------------------------------------------
def lp_pool2d_forward(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling; returns ``(out, cache)``. See :func:`lp_pool2d`."""
    return _lp_pool2d_forward("lp_pool2d", x, norm_type, kernel_size, stride, ceil_mode)


def _lp_norm_type(name: str, norm_type) -> float:
    p = float(norm_type)
    if p == 0 or np.isnan(p):
        raise ArgumentError(f"{name}: norm_type must be a non-zero number, got {norm_type}")
    return p


def _lp_pool2d_forward(name, x, norm_type, kernel_size, stride, ceil_mode):
    x = _check_map(x, name)
    p = _lp_norm_type(name, norm_type)
    if np.isinf(p):
        # PyTorch: p = inf is max pooling of |x|, p = -inf is minus the max pooling of -|x|
        sign = 1.0 if p > 0 else -1.0
        pooled, cache = _max_pool2d_forward(name, sign * np.abs(x), kernel_size, stride,
                                            0, 1, ceil_mode, False, False, need_grad=True)
        return sign * pooled, dict(p=p, sign_x=np.sign(x), max_cache=cache)
    kernel = pair(kernel_size, "kernel_size")
    with np.errstate(invalid="ignore"):  # x^p of a negative x: NaN, silently, as in PyTorch
        mean, avg_cache = _avg_pool2d_forward(name, x ** p, kernel, stride, 0, ceil_mode, True,
                                              None)
        total = mean * (kernel[0] * kernel[1])
        out = total ** (1.0 / p)
    return out, dict(p=p, x=x, mean=mean, total=total, out=out, avg_cache=avg_cache,
                     window=kernel[0] * kernel[1])


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False) -> np.ndarray:
    r"""2-D power-average pooling, as ``torch.nn.functional.lp_pool2d``.

    .. math::
        \text{out}(n, c, y, x) = \Big(\sum_{(i, j) \in \text{window}} \text{input}^p\Big)^{1/p}

    ``p = 2`` is L2 pooling; ``p = inf`` is max pooling of ``|x|``. As in PyTorch the sum is an
    average times ``kh*kw``, so with ``ceil_mode`` a window cut off at the border is scaled up
    to the full window, and where the sum is zero the gradient is zero.

    Args:
        x: input of shape (N, C, H, W).
        norm_type: the exponent ``p``.
        kernel_size: window size, int or (kh, kw).
        stride: default ``kernel_size``.
        ceil_mode: ceil instead of floor in the output size. Default False.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out), ``H_out = floor((H - kernel_size[0])
        / stride[0]) + 1`` (ceil with ``ceil_mode``).

    https://pytorch.org/docs/stable/generated/torch.nn.functional.lp_pool2d.html
    """
    return lp_pool2d_forward(x, norm_type, kernel_size, stride, ceil_mode)[0]


def lp_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of power-average pooling, by the chain rule through PyTorch's definition:
    ``out = (kh*kw * avg_pool(x^p))^(1/p)``, with the gradient set to zero where the sum is 0."""
    grad_out = _check_grad(grad_out, cache, "lp_pool2d_backward")
    p = cache["p"]
    if np.isinf(p):
        return max_pool2d_backward(grad_out, cache["max_cache"]) * cache["sign_x"]
    total, mean = cache["total"], cache["mean"]
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_mean = grad_out * (1.0 / p) * total ** (1.0 / p - 1.0) * cache["window"]
        grad_mean[mean == 0] = 0
        grad_power = avg_pool2d_backward(grad_mean, cache["avg_cache"])
        return grad_power * p * cache["x"] ** (p - 1.0)
