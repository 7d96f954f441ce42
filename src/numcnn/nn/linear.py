"""``Flatten`` and the fully connected ``Linear`` layer."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentTypeError
from . import init
from .module import Module, Parameter, check_flag, check_positive_int, check_real

__all__ = ["Flatten", "Linear"]


class Flatten(Module):
    """Merge the axes ``start_dim..end_dim`` (inclusive) into one.

    The usual bridge from convolutions to a ``Linear`` layer: ``(n, c, h, w) -> (n, c*h*w)``.

    Args:
        start_dim: first axis to merge. Default: ``1`` (keeps the batch axis).
        end_dim: last axis to merge. Default: ``-1``.

    Shape:
        - Input: ``(*, S_start, ..., S_end, *)``.
        - Output: ``(*, S_start * ... * S_end, *)``.

    See https://pytorch.org/docs/stable/generated/torch.nn.Flatten.html
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ArgumentTypeError(f"Flatten: {name} must be an int, got "
                                        f"{type(value).__name__} {value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x):
        x = np.asarray(x)
        out = x.reshape(self.output_shape(x.shape))  # a ShapeError naming Flatten if bad
        # a CHWN map (a convolution's output) flattens to a column-major view; the layers
        # after Flatten take plain C-ordered arrays (the CHWN layout stays inside the maps)
        out = np.ascontiguousarray(out)
        self._keep(output=out, shape=x.shape)
        return out

    def backward(self, grad_out):
        return F.flatten_backward(grad_out, self._take(grad_out)["shape"])

    def output_shape(self, input_shape):
        return F.flatten_shape(input_shape, self.start_dim, self.end_dim, layer="Flatten")

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``.

    Args:
        in_features: size of each input sample (the last axis).
        out_features: size of each output sample.
        bias: learn an additive bias. Default: ``True``.

    Shape:
        - Input: ``(*, in_features)``, any number of leading axes.
        - Output: ``(*, out_features)``.

    Attributes:
        weight: ``(out_features, in_features)``, initialised from
            ``U(-1/sqrt(in_features), 1/sqrt(in_features))`` (PyTorch's
            ``kaiming_uniform_(a=sqrt(5))``).
        bias: ``(out_features,)`` from the same distribution, or ``None``.

    An input whose last axis is not ``in_features`` raises a ShapeError that says how many
    features per sample the layer before produces (typically a wrong flatten size).

    See https://pytorch.org/docs/stable/generated/torch.nn.Linear.html
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        check_positive_int("Linear", in_features=in_features, out_features=out_features)
        check_flag("Linear", bias=bias)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(init.default_weight((out_features, in_features), in_features))
        self.bias = Parameter(init.default_bias((out_features,), in_features)) if bias else None

    def forward(self, x):
        x = check_real("Linear", x)
        bias = self.bias.data if self.bias is not None else None
        out, cache = F.linear_forward(x, self.weight.data, bias)
        self._keep(output=out, cache=cache)
        return out

    def backward(self, grad_out):
        grad_x, grad_w, grad_b = F.linear_backward(grad_out, self._take(grad_out)["cache"])
        self.weight.accumulate(grad_w)
        if self.bias is not None:
            self.bias.accumulate(grad_b)
        return grad_x

    def output_shape(self, input_shape):
        F.check_linear_input(input_shape, self.in_features)
        return (*tuple(input_shape)[:-1], self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
