"""The checked core that the layers of :mod:`numcnn.nn` call.

The public functional ops (:func:`~numcnn.functional.conv2d`, :func:`~numcnn.functional.max_pool2d`,
...) check and normalise every argument on every call, for a user calling them directly. A layer
checks its constructor arguments once, when it is built, and on each call only what can change
(the input); it then calls the functions below. Each is the same computation as its public
namesake, with two differences:

- ``layer``, the layer's name (``"Conv2d"``, ``"MaxPool2d"`` ...), is the first word of every
  error message, so that a user reads which layer refused what;
- the arguments a layer normalised when it was built come in that form (``pads`` as
  ``((top, bottom), (left, right))``, ``stride`` as a pair ...), and the forward functions
  return ``(output, cache)``, the cache for the public ``*_backward`` function of the op.

Errors: ShapeError, DTypeError and ArgumentError (all :class:`numcnn.NumcnnError`) saying what
was expected and what came, as the public ops raise.
"""

from __future__ import annotations

from . import conv as _conv
from .pooling import _common, adaptive_pool, avg_pool, global_pool, lp_pool, max_pool

__all__ = ["check_input", "check_channels", "conv2d", "conv1d_grad_as_2d", "conv_transpose2d",
           "pool_args", "lp_norm_type", "max_pool2d", "avg_pool2d", "lp_pool2d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "global_avg_pool2d",
           "global_max_pool2d"]


# -- convolution ---------------------------------------------------------------------------------
def check_input(layer: str, x, ndim: int, layout: str, dtype):
    """``x`` as an ``ndim``-D array of ``dtype`` (the weight's; integers and bools cast, complex
    refused), laid out as ``layout`` (e.g. ``"(N, C, H, W)"``), else a ShapeError/DTypeError."""
    return _conv._check_input(layer, x, ndim, layout, dtype)


def check_channels(layer: str, shape, expected: int, layout: str, why: str = "") -> None:
    """ShapeError unless ``shape[1]`` (the input's channels) is ``expected``."""
    _conv._check_channels(layer, shape, expected, layout, why)


def conv2d(x, weight, bias, stride, pads, dilation, groups: int, out_hw, layer: str):
    """:func:`numcnn.functional.conv2d_forward` on a layer's normalised arguments:
    ``x (n, c, h, w)`` of the weight's dtype, ``pads`` ``((t, b), (l, r))``, ``out_hw`` the
    output size the layer computed. Returns ``(y, cache)`` for ``conv2d_backward``."""
    return _conv._conv2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw, layer)


def conv1d_grad_as_2d(grad_out, cache):
    """A 1-D convolution's output gradient ``(n, oc, l)``, checked against the forward output,
    as the ``(n, oc, 1, l)`` gradient of the height-1 2-D convolution that computed it."""
    return _conv._grad_1d_as_2d(grad_out, cache)


def conv_transpose2d(x, weight, bias, stride, pads, dilation, groups: int, out_hw, layer: str):
    """:func:`numcnn.functional.conv_transpose2d_forward` on a layer's normalised arguments;
    ``(y, cache)`` for ``conv_transpose2d_backward``."""
    return _conv._conv_transpose2d_forward(x, weight, bias, stride, pads, dilation, groups,
                                           out_hw, layer)


# -- pooling -------------------------------------------------------------------------------------
def pool_args(layer: str, kernel_size, stride, padding, dilation=1):
    """``(kernel, stride, padding, dilation)`` as pairs, each checked: positive kernel, stride
    and dilation, non-negative padding of at most half the kernel (PyTorch's rule)."""
    return _common._pool_args(layer, kernel_size, stride, padding, dilation)


def lp_norm_type(layer: str, norm_type) -> float:
    """The power ``p`` of L_p pooling as a float; ArgumentError for 0 or NaN."""
    return lp_pool._lp_norm_type(layer, norm_type)


def max_pool2d(layer: str, x, kernel_size, stride, padding, dilation, ceil_mode: bool,
               return_indices: bool, split_ties: bool, need_grad: bool):
    """Max pooling; ``(out, cache)`` or ``((out, indices), cache)``. ``need_grad`` False keeps
    no winners (inference under ``numcnn.no_grad()``)."""
    return max_pool._max_pool2d_forward(layer, x, kernel_size, stride, padding, dilation,
                                        ceil_mode, return_indices, split_ties, need_grad)


def avg_pool2d(layer: str, x, kernel_size, stride, padding, ceil_mode: bool,
               count_include_pad: bool, divisor_override):
    """Average pooling; ``(out, cache)``."""
    return avg_pool._avg_pool2d_forward(layer, x, kernel_size, stride, padding, ceil_mode,
                                        count_include_pad, divisor_override)


def lp_pool2d(layer: str, x, norm_type: float, kernel_size, stride, ceil_mode: bool):
    """Power-average pooling ``(sum x^p)^(1/p)``; ``(out, cache)``."""
    return lp_pool._lp_pool2d_forward(layer, x, norm_type, kernel_size, stride, ceil_mode)


def adaptive_avg_pool2d(layer: str, x, output_size):
    """Adaptive average pooling; ``(out, cache)``."""
    return adaptive_pool._adaptive_avg_pool2d_forward(layer, x, output_size)


def adaptive_max_pool2d(layer: str, x, output_size, return_indices: bool, need_grad: bool):
    """Adaptive max pooling; ``(out, cache)`` or ``((out, indices), cache)``."""
    return adaptive_pool._adaptive_max_pool2d_forward(layer, x, output_size, return_indices,
                                                      need_grad)


def global_avg_pool2d(layer: str, x):
    """The mean of each channel's plane, ``(n, c, 1, 1)``; ``(out, cache)``."""
    return global_pool._global_avg_pool2d_forward(layer, x)


def global_max_pool2d(layer: str, x):
    """The maximum of each channel's plane, ``(n, c, 1, 1)``; ``(out, cache)``."""
    return global_pool._global_max_pool2d_forward(layer, x)
