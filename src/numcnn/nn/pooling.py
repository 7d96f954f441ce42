"""Pooling layers, named and used as in ``torch.nn``: thin wrappers over
:mod:`numcnn.functional.pooling`.

Every layer keeps its constructor arguments as attributes of the same name, as PyTorch does
(``MaxPool2d`` and ``AvgPool2d`` store ``stride=None`` as ``kernel_size``, ``LPPool2d`` keeps
None), says its output shape without running (``output_shape``), and raises errors that name
the layer.
"""

from __future__ import annotations

from .._grad import is_grad_enabled
from ..errors import ArgumentError
from ..functional import core
from ..functional import pooling as P
from ._unbatched import accepts_unbatched
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "LPPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
           "GlobalAvgPool2d", "GlobalMaxPool2d"]


@accepts_unbatched(4)
class MaxPool2d(Module):
    r"""2-D max pooling.

    .. math::
        \text{out}(n, c, y, x) = \max_{i < k_h,\ j < k_w}
            \text{input}(n, c,\ s_h y + d_h i - p_h,\ s_w x + d_w j - p_w)

    The input is padded with ``-inf``. The backward pass sends each output's gradient to the
    input its maximum came from, chosen as PyTorch does (the first of tied maxima in row-by-row
    order, the last NaN of a window holding NaN); overlapping windows add their gradients up.

    Args:
        kernel_size: window size, int or (kh, kw).
        stride: step of the window. Default: ``kernel_size``.
        padding: ``-inf`` padding on both sides, at most ``kernel_size // 2``. Default: 0.
        dilation: spacing between window elements (1: none). Default: 1.
        return_indices: ``forward`` returns ``(out, indices)``, the indices being PyTorch's flat
            position ``h*W + w`` of each maximum in its input plane (int64). Default: False.
        ceil_mode: ceil instead of floor in the output size (a window may then hang over the
            bottom or right edge, but never starts in the right padding). Default: False.
        split_ties: numcnn only: divide the gradient of a window evenly among all its tied
            maxima, as the course notes do, instead of routing it to the first. Default: False.

    Shape:
        - Input: (N, C, H, W) or (C, H, W) (one image; the output then has no batch axis)
        - Output: (N, C, H_out, W_out), where
          ``H_out = floor((H + 2*padding[0] - dilation[0]*(kernel_size[0]-1) - 1) / stride[0]) + 1``
          (ceil with ``ceil_mode``) and likewise for ``W_out``.

    Examples:
        >>> pool = MaxPool2d(2)                  # (64, 16, 28, 28) -> (64, 16, 14, 14)
        >>> out, indices = MaxPool2d(3, stride=2, padding=1, return_indices=True)(x)

    https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, split_ties=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode
        self.split_ties = split_ties
        core.pool_args(type(self).__name__, kernel_size, self.stride, padding, dilation)

    def forward(self, x):
        out, cache = core.max_pool2d(
            type(self).__name__, x, self.kernel_size, self.stride, self.padding, self.dilation,
            self.ceil_mode, self.return_indices, self.split_ties, need_grad=is_grad_enabled())
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.max_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        kernel, stride, padding, dilation = core.pool_args(
            type(self).__name__, self.kernel_size, self.stride, self.padding, self.dilation)
        out_hw = P.pool2d_output_size(type(self).__name__, input_shape, kernel, stride, padding,
                                      dilation, self.ceil_mode)
        return (*tuple(input_shape)[:2], *out_hw)

    def extra_repr(self) -> str:
        text = (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")
        return text + (", split_ties=True" if self.split_ties else "")


@accepts_unbatched(4)
class AvgPool2d(Module):
    r"""2-D average pooling.

    .. math::
        \text{out}(n, c, y, x) = \frac{1}{D(y, x)} \sum_{i < k_h,\ j < k_w}
            \text{input}(n, c,\ s_h y + i - p_h,\ s_w x + j - p_w)

    with zero padding; ``D`` is ``divisor_override`` if given, else the number of window
    positions inside the padded input (``count_include_pad=True``) or inside the input itself.
    The backward pass hands each window position ``grad_out / D``.

    Args:
        kernel_size: window size, int or (kh, kw).
        stride: step of the window. Default: ``kernel_size``.
        padding: zero padding on both sides, at most ``kernel_size // 2``. Default: 0.
        ceil_mode: ceil instead of floor in the output size. Default: False.
        count_include_pad: count the zero padding in the divisor. Default: True.
        divisor_override: divide every window sum by this number instead. Default: None.

    Shape:
        - Input: (N, C, H, W) or (C, H, W) (one image; the output then has no batch axis)
        - Output: (N, C, H_out, W_out), where
          ``H_out = floor((H + 2*padding[0] - kernel_size[0]) / stride[0]) + 1`` (ceil with
          ``ceil_mode``) and likewise for ``W_out``.

    https://pytorch.org/docs/stable/generated/torch.nn.AvgPool2d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        core.pool_args(type(self).__name__, kernel_size, self.stride, padding)
        if divisor_override is not None and divisor_override == 0:
            raise ArgumentError(f"{type(self).__name__}: divisor_override must be non-zero, "
                                f"got {divisor_override}")

    def forward(self, x):
        out, cache = core.avg_pool2d(
            type(self).__name__, x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.avg_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        kernel, stride, padding, dilation = core.pool_args(
            type(self).__name__, self.kernel_size, self.stride, self.padding)
        out_hw = P.pool2d_output_size(type(self).__name__, input_shape, kernel, stride, padding,
                                      dilation, self.ceil_mode)
        return (*tuple(input_shape)[:2], *out_hw)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@accepts_unbatched(4)
class LPPool2d(Module):
    r"""2-D power-average pooling.

    .. math::
        \text{out}(n, c, y, x) = \Big(\sum_{(i, j) \in \text{window}} \text{input}^p\Big)^{1/p}

    ``norm_type=2`` is L2 pooling, the Euclidean norm of each window; ``norm_type=inf`` is max
    pooling of ``|x|``. As in PyTorch the sum is computed as an average times ``kh*kw`` (so with
    ``ceil_mode`` a window cut off at the border is scaled up to a full one), negative sums
    give NaN for fractional ``1/p``, and where the sum is zero the gradient is zero.

    Args:
        norm_type: the exponent ``p`` (non-zero).
        kernel_size: window size, int or (kh, kw).
        stride: step of the window. Default: ``kernel_size``.
        ceil_mode: ceil instead of floor in the output size. Default: False.

    Shape:
        - Input: (N, C, H, W) or (C, H, W) (one image; the output then has no batch axis)
        - Output: (N, C, H_out, W_out), ``H_out = floor((H - kernel_size[0]) / stride[0]) + 1``
          (ceil with ``ceil_mode``) and likewise for ``W_out``.

    https://pytorch.org/docs/stable/generated/torch.nn.LPPool2d.html
    """

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.stride = stride  # PyTorch keeps None here (the functional op defaults it)
        self.ceil_mode = ceil_mode
        core.lp_norm_type(type(self).__name__, norm_type)
        core.pool_args(type(self).__name__, kernel_size, self.stride, 0)

    def forward(self, x):
        out, cache = core.lp_pool2d(type(self).__name__, x, self.norm_type,
                                          self.kernel_size, self.stride, self.ceil_mode)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.lp_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        kernel, stride, padding, dilation = core.pool_args(
            type(self).__name__, self.kernel_size, self.stride, 0)
        out_hw = P.pool2d_output_size(type(self).__name__, input_shape, kernel, stride, padding,
                                      dilation, self.ceil_mode)
        return (*tuple(input_shape)[:2], *out_hw)

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}")


@accepts_unbatched(4)
class AdaptiveAvgPool2d(Module):
    r"""2-D adaptive average pooling: the output size is given, the windows follow from it.

    Output row ``i`` averages input rows ``floor(i*H/H_out)`` to ``ceil((i+1)*H/H_out) - 1``
    (neighbouring bins may overlap), columns likewise. ``AdaptiveAvgPool2d(1)`` is global
    average pooling.

    Args:
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.

    Shape:
        - Input: (N, C, H, W) or (C, H, W) (one image; the output then has no batch axis)
        - Output: (N, C, H_out, W_out)

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveAvgPool2d.html
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        P.adaptive_output_size(type(self).__name__, (1, 1, 1, 1), output_size)

    def forward(self, x):
        out, cache = core.adaptive_avg_pool2d(type(self).__name__, x, self.output_size)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.adaptive_avg_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        out_hw = P.adaptive_output_size(type(self).__name__, input_shape, self.output_size)
        return (*tuple(input_shape)[:2], *out_hw)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


@accepts_unbatched(4)
class AdaptiveMaxPool2d(Module):
    r"""2-D adaptive max pooling: the maximum over the bins of :class:`AdaptiveAvgPool2d`.

    Ties and NaN are resolved as in :class:`MaxPool2d`.

    Args:
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.
        return_indices: ``forward`` returns ``(out, indices)``, the flat index ``h*W + w`` of
            each maximum in its input plane. Default: False.

    Shape:
        - Input: (N, C, H, W) or (C, H, W) (one image; the output then has no batch axis)
        - Output: (N, C, H_out, W_out)

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveMaxPool2d.html
    """

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices
        P.adaptive_output_size(type(self).__name__, (1, 1, 1, 1), output_size)

    def forward(self, x):
        out, cache = core.adaptive_max_pool2d(type(self).__name__, x, self.output_size,
                                                    self.return_indices, is_grad_enabled())
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.adaptive_max_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        out_hw = P.adaptive_output_size(type(self).__name__, input_shape, self.output_size)
        return (*tuple(input_shape)[:2], *out_hw)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(Module):
    r"""Global average pooling: the mean of each channel's plane,
    ``out(n, c) = 1/(H W) \sum_{h, w} x(n, c, h, w)``.

    The same as ``AdaptiveAvgPool2d(1)`` followed by ``Flatten()``, as Keras's
    ``GlobalAveragePooling2D`` does: the output is (N, C), ready for a ``Linear`` layer. The
    backward pass hands every pixel ``grad_out / (H W)``.

    Shape:
        - Input: (N, C, H, W)
        - Output: (N, C)

    https://keras.io/api/layers/pooling_layers/global_average_pooling2d/
    """

    def forward(self, x):
        out, cache = core.global_avg_pool2d(type(self).__name__, x)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.global_avg_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        P.adaptive_output_size(type(self).__name__, input_shape, 1)
        return tuple(input_shape)[:2]


class GlobalMaxPool2d(Module):
    r"""Global max pooling: the maximum of each channel's plane, ``out(n, c) = max_{h,w} x``.

    The same as ``AdaptiveMaxPool2d(1)`` followed by ``Flatten()``, as Keras's
    ``GlobalMaxPooling2D`` does; ties and NaN are resolved as in :class:`MaxPool2d`.

    Shape:
        - Input: (N, C, H, W)
        - Output: (N, C)

    https://keras.io/api/layers/pooling_layers/global_max_pooling2d/
    """

    def forward(self, x):
        out, cache = core.global_max_pool2d(type(self).__name__, x)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return P.global_max_pool2d_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        P.adaptive_output_size(type(self).__name__, input_shape, 1)
        return tuple(input_shape)[:2]
