"""Dropout layers: inverted dropout in training mode, the identity in eval mode."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentError, ArgumentTypeError, ShapeError
from .module import Module, check_real

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by ``1/(1-p)``.

    ``y = x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` drawn from numcnn's seeded generator;
    in eval mode (``model.eval()``) ``y = x``.

    Args:
        p: probability of an element to be zeroed (the *drop* probability). Default: ``0.5``.
        inplace: write the result into the input array. Default: ``False``.

    Shape:
        - Input: ``(*)``, any shape. Output: ``(*)``, the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Dropout.html
    """

    _forward = staticmethod(F.dropout_forward)
    _backward = staticmethod(F.dropout_backward)

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(f"{type(self).__name__}: the dropout probability p must be a "
                                    f"number, got {type(p).__name__} {p!r}")
        if not 0.0 <= p <= 1.0:  # also refuses NaN; PyTorch's message
            raise ArgumentError(f"{type(self).__name__}: dropout probability has to be between 0 "
                                f"and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x):
        x = check_real(type(self).__name__, x)
        out, mask = type(self)._forward(x, self.p, self.training, self.inplace)
        self._keep(output=out, mask=mask)
        return out

    def backward(self, grad_out):
        return type(self)._backward(grad_out, self._take(grad_out)["mask"])

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Zero whole channels with probability ``p`` in training and scale the rest by ``1/(1-p)``.

    Each ``(sample, channel)`` plane is kept or dropped as one, which suits convolutional
    feature maps whose neighbouring pixels are strongly correlated. Identity in eval mode.

    Args:
        p: probability of a channel to be zeroed. Default: ``0.5``.
        inplace: write the result into the input array. Default: ``False``.

    Shape:
        - Input: ``(N, C, H, W)`` or ``(N, C, L)``. Output: the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.Dropout2d.html
    """

    _forward = staticmethod(F.dropout2d_forward)
    _backward = staticmethod(F.dropout2d_backward)

    def output_shape(self, input_shape):
        if len(input_shape) not in (3, 4):
            raise ShapeError(f"Dropout2d: expected a 4-D input (n, c, h, w) or a 3-D input "
                             f"(n, c, l), got shape {tuple(input_shape)}")
        return tuple(input_shape)
