"""Activation layers: thin wrappers over :mod:`numcnn.functional.activation`.

Each keeps its input's shape and dtype; ``backward(grad_out)`` returns ``d loss / d x``.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentError, ArgumentTypeError
from .module import Module, Parameter, check_number, check_real

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Gaussian", "Softmax", "LogSoftmax",
           "GELU", "SiLU", "ELU", "Softplus", "Hardswish", "PReLU"]


class _Elementwise(Module):
    """An activation given by a ``(forward, backward)`` pair of functional ops."""

    _forward = None
    _backward = None

    def _args(self) -> tuple:
        return ()

    def forward(self, x):
        x = check_real(type(self).__name__, x)
        scalar = x.ndim == 0  # a 0-D input runs as shape (1,), so every op returns an array
        out, cache = type(self)._forward(x.reshape(1) if scalar else x, *self._args())
        out = out.reshape(()) if scalar else out
        self._keep(output=out, cache=cache, scalar=scalar)
        return out

    def backward(self, grad_out):
        kept = self._take(grad_out)
        if kept["scalar"]:
            grad = np.asarray(grad_out).reshape(1)
            return type(self)._backward(grad, kept["cache"]).reshape(())
        return type(self)._backward(grad_out, kept["cache"])


class ReLU(_Elementwise):
    """``ReLU(x) = max(0, x)``, element-wise.

    Args:
        inplace: write the result into the input array. Default: ``False``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.ReLU.html
    """

    _forward = staticmethod(F.relu_forward)
    _backward = staticmethod(F.relu_backward)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def _args(self):
        return (self.inplace,)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(_Elementwise):
    """``LeakyReLU(x) = x`` if ``x > 0`` else ``negative_slope * x``, element-wise.

    Args:
        negative_slope: slope for ``x <= 0``. Default: ``0.01``.
        inplace: write the result into the input array. Default: ``False``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.LeakyReLU.html
    """

    _forward = staticmethod(F.leaky_relu_forward)
    _backward = staticmethod(F.leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        check_number("LeakyReLU", "negative_slope", negative_slope)
        self.negative_slope = negative_slope
        self.inplace = inplace

    def _args(self):
        return (self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(_Elementwise):
    """``Sigmoid(x) = 1 / (1 + exp(-x))``, element-wise; stable for any input.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Sigmoid.html
    """

    _forward = staticmethod(F.sigmoid_forward)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_Elementwise):
    """``Tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))``, element-wise.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Tanh.html
    """

    _forward = staticmethod(F.tanh_forward)
    _backward = staticmethod(F.tanh_backward)


class Gaussian(_Elementwise):
    """``Gaussian(x) = exp(-x^2)``, element-wise, with ``d/dx = -2 x exp(-x^2)``.

    From the course texts; PyTorch has no such layer (``torch.exp(-x**2)`` is the same function).

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.
    """

    _forward = staticmethod(F.gaussian_forward)
    _backward = staticmethod(F.gaussian_backward)


class Softmax(_Elementwise):
    """``Softmax(x)_i = exp(x_i) / sum_j exp(x_j)`` along ``dim`` (max-subtracted, stable).

    Args:
        dim: the axis that sums to 1. Default: ``None``, which follows PyTorch's deprecated
            implicit rule (axis 0 for 0-, 1- and 3-D inputs, axis 1 otherwise) and warns;
            give ``dim`` explicitly.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Softmax.html
    """

    _forward = staticmethod(F.softmax_forward)
    _backward = staticmethod(F.softmax_backward)

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise ArgumentTypeError(f"{type(self).__name__}: dim must be an int or None, got "
                                    f"{type(dim).__name__} {dim!r}")
        self.dim = dim

    def _args(self):
        return (self.dim,)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``LogSoftmax(x)_i = x_i - log(sum_j exp(x_j))`` along ``dim`` (max-subtracted, stable).

    Args:
        dim: the axis to normalise over. Default: ``None``, PyTorch's deprecated implicit rule
            (see :class:`Softmax`); give ``dim`` explicitly.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.LogSoftmax.html
    """

    _forward = staticmethod(F.log_softmax_forward)
    _backward = staticmethod(F.log_softmax_backward)


class GELU(_Elementwise):
    """``GELU(x) = x * Phi(x)``, ``Phi`` the standard normal CDF; with ``approximate="tanh"``,
    ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.

    Args:
        approximate: ``"none"`` (exact) or ``"tanh"``. Default: ``"none"``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.GELU.html (Hendrycks and Gimpel,
    arXiv:1606.08415).
    """

    _forward = staticmethod(F.gelu_forward)
    _backward = staticmethod(F.gelu_backward)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ArgumentError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _args(self):
        return (self.approximate,)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """``SiLU(x) = x * sigmoid(x)`` (also called swish), element-wise.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.SiLU.html
    """

    _forward = staticmethod(F.silu_forward)
    _backward = staticmethod(F.silu_backward)


class ELU(_Elementwise):
    """``ELU(x) = x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``, element-wise.

    Args:
        alpha: the value approached as ``x -> -inf`` is ``-alpha``. Default: ``1.0``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.ELU.html
    """

    _forward = staticmethod(F.elu_forward)
    _backward = staticmethod(F.elu_backward)

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def _args(self):
        return (self.alpha,)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(_Elementwise):
    """``Softplus(x) = log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold``.

    Args:
        beta: sharpness. Default: ``1.0``.
        threshold: above ``beta * x > threshold`` the layer is the identity. Default: ``20.0``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Softplus.html
    """

    _forward = staticmethod(F.softplus_forward)
    _backward = staticmethod(F.softplus_backward)

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def _args(self):
        return (self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardswish(_Elementwise):
    """``Hardswish(x) = x * min(max(x + 3, 0), 6) / 6``, element-wise (MobileNetV3).

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Hardswish.html
    """

    _forward = staticmethod(F.hardswish_forward)
    _backward = staticmethod(F.hardswish_backward)


class PReLU(Module):
    """``PReLU(x) = x`` if ``x > 0`` else ``a * x``, ``a`` learned: one slope for all channels or
    one per channel (axis 1 of the input, as PyTorch).

    Args:
        num_parameters: 1, or the number of channels ``C``. Default: ``1``.
        init: the initial slope. Default: ``0.25``.

    Shape:
        - Input: ``(*)``; with ``num_parameters = C``, ``(N, C, *)``. Output: the same shape.

    Attributes:
        weight: ``(num_parameters,)``, filled with ``init``.

    See https://pytorch.org/docs/stable/generated/torch.nn.PReLU.html (He et al.,
    arXiv:1502.01852).
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        self.num_parameters = num_parameters
        self.init = init
        self.weight = Parameter(np.full(num_parameters, init, dtype=np.float32))

    def forward(self, x):
        x = np.asarray(x).astype(self.weight.dtype, copy=False)
        out, cache = F.prelu_forward(x, self.weight.data)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        grad_x, grad_w = F.prelu_backward(grad_out, self._take()["cache"])
        self.weight.grad += grad_w
        return grad_x

    def output_shape(self, input_shape):
        F.prelu_check_shape(input_shape, self.num_parameters)
        return tuple(input_shape)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
