"""1-D pooling layers over ``(N, C, L)`` signals: thin wrappers over
:mod:`numcnn.functional.pooling1d`, named and used as in ``torch.nn``."""

from __future__ import annotations

from ..functional import pooling1d as P1
from ._unbatched import accepts_unbatched
from .module import Module

__all__ = ["MaxPool1d", "AvgPool1d"]


@accepts_unbatched(3)
class MaxPool1d(Module):
    r"""1-D max pooling.

    .. math::
        \text{out}(n, c, l) = \max_{i < k} \text{input}(n, c,\ s \cdot l + d \cdot i - p)

    with ``-inf`` padding; the backward pass routes each output's gradient to its maximum.

    Args:
        kernel_size: window length.
        stride: step of the window. Default: ``kernel_size``.
        padding: ``-inf`` padding on both sides, at most ``kernel_size // 2``. Default: 0.
        dilation: spacing between window elements. Default: 1.
        return_indices: ``forward`` returns ``(out, indices)``, the position of each maximum
            along ``L``. Default: False.
        ceil_mode: ceil instead of floor in the output length. Default: False.

    Shape:
        - Input: ``(N, C, L)`` or ``(C, L)``. Output: ``(N, C, L_out)`` or ``(C, L_out)``,
          ``L_out = floor((L + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1``.

    https://pytorch.org/docs/stable/generated/torch.nn.MaxPool1d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode
        P1._args1d(type(self).__name__, kernel_size, self.stride, padding, dilation)

    def forward(self, x):
        out, cache = P1.max_pool1d_forward(x, self.kernel_size, self.stride, self.padding,
                                           self.dilation, self.ceil_mode, self.return_indices)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P1.max_pool1d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        k, s, p, d = P1._args1d(type(self).__name__, self.kernel_size, self.stride, self.padding,
                                self.dilation)
        length = P1.pool1d_output_size(type(self).__name__, input_shape, k, s, p, d,
                                       self.ceil_mode)
        return (*tuple(input_shape)[:2], length)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


@accepts_unbatched(3)
class AvgPool1d(Module):
    r"""1-D average pooling.

    .. math::
        \text{out}(n, c, l) = \frac{1}{D(l)} \sum_{i < k} \text{input}(n, c,\ s \cdot l + i - p)

    with zero padding; ``D`` is ``k``, or with ``count_include_pad=False`` the number of window
    positions inside the input.

    Args:
        kernel_size: window length.
        stride: step of the window. Default: ``kernel_size``.
        padding: zero padding on both sides, at most ``kernel_size // 2``. Default: 0.
        ceil_mode: ceil instead of floor in the output length. Default: False.
        count_include_pad: count the zero padding in the divisor. Default: True.

    Shape:
        - Input: ``(N, C, L)`` or ``(C, L)``. Output: ``(N, C, L_out)`` or ``(C, L_out)``,
          ``L_out = floor((L + 2*padding - kernel_size) / stride) + 1``.

    https://pytorch.org/docs/stable/generated/torch.nn.AvgPool1d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        P1._args1d(type(self).__name__, kernel_size, self.stride, padding)

    def forward(self, x):
        out, cache = P1.avg_pool1d_forward(x, self.kernel_size, self.stride, self.padding,
                                           self.ceil_mode, self.count_include_pad)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P1.avg_pool1d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        k, s, p, d = P1._args1d(type(self).__name__, self.kernel_size, self.stride, self.padding)
        length = P1.pool1d_output_size(type(self).__name__, input_shape, k, s, p, d,
                                       self.ceil_mode)
        return (*tuple(input_shape)[:2], length)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}")
