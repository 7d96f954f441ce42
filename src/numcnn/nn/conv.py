"""Convolution layers: ``Conv2d``, ``Conv1d``, ``ConvTranspose2d`` and ``SeparableConv2d``.

Thin wrappers over :mod:`numcnn.functional.conv` that own the weight and bias, pad with the
chosen ``padding_mode`` and check their input. The maths (cross-correlation, the output-size
formula, im2col, and why the input gradient is a full convolution with the rotated kernel) is in
the docstring of :mod:`numcnn.functional.conv`.
"""

from __future__ import annotations

import math

import numpy as np

from .._text import a
from ..errors import ArgumentError, ShapeError
from ..functional import conv as C
from ..functional import core
from ..functional._windows import (
    PADDING_MODES,
    ntuple,
    output_size,
    pad2d,
    pad2d_backward,
    resolve_padding,
    transposed_output_size,
)
from . import init
from ._unbatched import accepts_unbatched
from .module import Module, Parameter, chain_shapes, check_flag, check_positive_int

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "SeparableConv2d"]


def _check_sizes(layer: str, **values) -> None:
    for name, value in values.items():
        if any(v < 1 for v in value):
            raise ArgumentError(f"{layer}: {name} must be positive, got {value!r}")


def _checked_parameters(layer, weight_shape: tuple):
    """``(weight, bias)`` of a convolution layer, refused (ShapeError) when an array assigned
    to ``.data`` since the layer was built has another shape than the one it was built with
    (the kernels would read past its end)."""
    weight = layer.weight.data
    if weight.shape != weight_shape:
        raise ShapeError(f"{type(layer).__name__}: its weight has shape {weight.shape}, but the "
                         f"layer was built for {weight_shape} (out/in channels, groups and "
                         f"kernel_size); build a new layer for another shape")
    bias = layer.bias.data if layer.bias is not None else None
    if bias is not None and bias.shape != (layer.out_channels,):
        raise ShapeError(f"{type(layer).__name__}: its bias has shape {bias.shape}, expected "
                         f"({layer.out_channels},)")
    return weight, bias


class _ConvNd(Module):
    """What Conv1d and Conv2d share; the computation is always 2-D (1-D has height 1)."""

    _dims = 2
    _layout = "(N, C, H, W)"
    _axes = ("height", "width")

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                 bias, padding_mode):
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, in_channels=in_channels, out_channels=out_channels, groups=groups)
        check_flag(name, bias=bias)
        if in_channels % groups:
            raise ArgumentError(f"{name}: in_channels ({in_channels}) must be divisible by groups "
                                f"({groups})")
        if out_channels % groups:
            raise ArgumentError(f"{name}: out_channels ({out_channels}) must be divisible by "
                                "groups "
                                f"({groups})")
        if padding_mode not in PADDING_MODES:
            raise ArgumentError(f"{name}: padding_mode must be one of {PADDING_MODES}, got "
                                f"{padding_mode!r}")
        d = self._dims
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = ntuple(kernel_size, d, "kernel_size")
        self.stride = ntuple(stride, d, "stride")
        self.padding = padding if isinstance(padding, str) else ntuple(padding, d, "padding")
        self.dilation = ntuple(dilation, d, "dilation")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        _check_sizes(name, kernel_size=self.kernel_size, stride=self.stride,
                     dilation=self.dilation)
        pads = resolve_padding(padding, self.kernel_size, self.dilation, self.stride)
        # the computation is 2-D: a 1-D layer works on a height-1 image with a (1, k) kernel
        self._pads = ((0, 0),) * (2 - d) + pads
        self._stride2d = (1,) * (2 - d) + self.stride
        self._dilation2d = (1,) * (2 - d) + self.dilation

        fan_in = in_channels // groups * math.prod(self.kernel_size)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(init.default_weight(shape, fan_in))
        self.bias = Parameter(init.default_bias((out_channels,), fan_in)) if bias else None

    # -- shapes ---------------------------------------------------------------------------------
    def _spatial_out(self, shape) -> tuple[int, ...]:
        """Check an input shape and return the output's spatial sizes (ShapeError if bad)."""
        name = type(self).__name__
        shape = tuple(shape)
        if len(shape) != self._dims + 2:
            raise ShapeError(f"{name}: expected {a(f'{self._dims + 2}-D')} input "
                             f"{self._layout.replace('C', str(self.in_channels), 1)}, "
                             f"got shape {shape}")
        core.check_channels(name, shape, self.in_channels, self._layout)
        pads = self._pads[2 - self._dims:]
        if self.padding_mode in ("reflect", "circular"):
            for axis, size, (lo, hi) in zip(self._axes, shape[2:], pads):
                reflect = self.padding_mode == "reflect"
                if max(lo, hi) >= size if reflect else max(lo, hi) > size:
                    limit = "smaller than" if reflect else "at most"
                    raise ShapeError(f"{name}: padding_mode={self.padding_mode!r} needs a padding "
                                     f"{limit} the input along the {axis}, got padding "
                                     f"({lo}, {hi}) for input of shape {shape}")
        return output_size(name, shape, self.kernel_size, self.stride, pads, self.dilation)

    def output_shape(self, input_shape):
        spatial = self._spatial_out(input_shape)
        return (input_shape[0], self.out_channels, *spatial)

    # -- computation ----------------------------------------------------------------------------
    def forward(self, x):
        x = np.asarray(x)
        spatial = self._spatial_out(x.shape)
        weight, bias = _checked_parameters(self, (self.out_channels,
                                                  self.in_channels // self.groups,
                                                  *self.kernel_size))
        x = core.check_input(type(self).__name__, x, x.ndim, self._layout, weight.dtype)
        if self._dims == 1:  # (n, c, l) -> (n, c, 1, l)
            x, weight = x[:, :, None, :], weight[:, :, None, :]
        pads = self._pads
        if self.padding_mode != "zeros":
            x = pad2d(x, pads, self.padding_mode)
            pads = C.NO_PADS
        out_hw = (1,) * (2 - self._dims) + spatial
        y, cache = core.conv2d(x, weight, bias, self._stride2d, pads, self._dilation2d,
                                     self.groups, out_hw, type(self).__name__)
        self._keep(cache=cache)
        return y[:, :, 0, :] if self._dims == 1 else y

    def backward(self, grad_out, input_grad: bool = True):
        cache = self._take()["cache"]
        if self._dims == 1:  # (n, oc, l) -> (n, oc, 1, l)
            grad_out = core.conv1d_grad_as_2d(grad_out, cache)
        grad_x, grad_w, grad_b = C.conv2d_backward(grad_out, cache, input_grad)
        self.weight.accumulate(grad_w.reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.accumulate(grad_b)
        if grad_x is None:
            return None
        if self.padding_mode != "zeros":
            grad_x = pad2d_backward(grad_x, self._pads, self.padding_mode)
        return grad_x[:, :, 0, :] if self._dims == 1 else grad_x

    def backward_params(self, grad_out) -> None:
        """Parameter gradients only: the input gradient (a third of the work) is skipped."""
        self.backward(grad_out, input_grad=False)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


@accepts_unbatched(4)
class Conv2d(_ConvNd):
    """2-D convolution layer (cross-correlation) over NCHW images.

    ``y[n, o] = b[o] + sum_{ci < C/groups} (w[o, ci] star x_pad[n, g*C/groups + ci])``, where
    ``star`` slides the kernel over the padded input with ``stride`` and ``dilation``; see
    :func:`numcnn.functional.conv2d` for the index formula and the im2col computation.

    Args:
        in_channels: channels of the input (C).
        out_channels: channels of the output, one kernel each.
        kernel_size: int or (kH, kW).
        stride: int or (sh, sw). Default: 1.
        padding: int, (ph, pw), ``'valid'`` (none), ``'same'`` (output size = input size, stride
            1 only; an odd total padding puts the extra pixel bottom/right) or ``'full'``
            (``dilation*(k-1)`` on each side). Default: 0.
        dilation: int or (dh, dw), spacing between kernel taps. Default: 1 (none).
        groups: split input and output channels into this many groups, each convolved on its own;
            ``groups=in_channels`` is a depthwise convolution. Default: 1.
        bias: learn an additive bias per output channel. Default: True.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
            Default: ``'zeros'``.

    Shape:
        - Input ``(N, in_channels, H, W)``, or ``(in_channels, H, W)`` for one image.
        - Output ``(N, out_channels, H_out, W_out)`` (no ``N`` for one image) with
          ``H_out = floor((H + 2*ph - dh*(kH-1) - 1) / sh) + 1`` (likewise W_out).

    Attributes:
        weight: ``(out_channels, in_channels/groups, kH, kW)``, initialised from
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels/groups * kH*kW``
            (PyTorch's ``kaiming_uniform_(a=sqrt(5))``).
        bias: ``(out_channels,)`` from the same distribution, or None.

    An input with the wrong number of axes or channels, or one the kernel does not fit after
    padding, raises a ShapeError naming the layer, the expected and the received shape (and the
    output-size formula with the numbers filled in).

    Example::

        >>> conv = Conv2d(1, 16, kernel_size=5, padding=2)
        >>> conv.output_shape((64, 1, 28, 28))
        (64, 16, 28, 28)

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)


@accepts_unbatched(3)
class Conv1d(_ConvNd):
    """1-D convolution layer (cross-correlation) over (N, C, L) sequences.

    ``y[n, o, p] = b[o] + sum_{ci, i} w[o, ci, i] * x_pad[n, g*C/groups + ci, p*stride +
    i*dilation]``; computed as a 2-D convolution of a height-1 image.

    Args:
        in_channels, out_channels: as in :class:`Conv2d`.
        kernel_size: int (or a 1-tuple).
        stride, padding (int, ``'valid'``, ``'same'``, ``'full'``), dilation, groups, bias,
            padding_mode: as in :class:`Conv2d`, along the one axis.

    Shape:
        - Input ``(N, in_channels, L)``, output ``(N, out_channels, L_out)`` (or both without
          ``N``, one signal) with
          ``L_out = floor((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``.

    Attributes:
        weight: ``(out_channels, in_channels/groups, k)``, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
            with ``fan_in = in_channels/groups * k``.
        bias: ``(out_channels,)`` or None.

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.Conv1d.html
    """

    _dims = 1
    _layout = "(N, C, L)"
    _axes = ("length",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)


@accepts_unbatched(4)
class ConvTranspose2d(Module):
    """Transposed 2-D convolution: the adjoint of :class:`Conv2d`, which expands images.

    Each input pixel scatters a copy of its kernel, scaled by its value, into the output
    ``stride`` pixels apart; overlaps add up. It computes what the input gradient of a
    ``Conv2d`` computes (see :func:`numcnn.functional.conv_transpose2d`); it is not an inverse
    of a convolution, but it maps the convolution's output shape back to its input shape.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: int or (kH, kW).
        stride: int or pair. Default: 1.
        padding: int or pair, cropped off each side of the output (the padding of the
            convolution this transposes). Default: 0.
        output_padding: int or pair added to the bottom/right of the output to pick among the
            input sizes a strided convolution maps to the same size; smaller than the stride or
            the dilation. Default: 0.
        groups: Default: 1.
        bias: Default: True.
        dilation: int or pair. Default: 1.
        padding_mode: only ``'zeros'``, as in PyTorch.

    Shape:
        - Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H_out, W_out)`` (or both
          without ``N``, one image) with
          ``H_out = (H - 1)*sh - 2*ph + dh*(kH-1) + output_padding + 1`` (likewise W_out).

    Attributes:
        weight: ``(in_channels, out_channels/groups, kH, kW)`` (in_channels first), from
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with PyTorch's
            ``fan_in = out_channels/groups * kH*kW`` (computed from the weight's second axis).
        bias: ``(out_channels,)`` or None.

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros"):
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, in_channels=in_channels, out_channels=out_channels, groups=groups)
        check_flag(name, bias=bias)
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ArgumentError(f"{name}: {what} ({channels}) must be divisible by groups "
                                    f"({groups})")
        if padding_mode != "zeros":
            raise ArgumentError(f"{name}: only padding_mode='zeros' is supported (as in PyTorch), "
                                f"got {padding_mode!r}")
        if isinstance(padding, str):
            raise ArgumentError(f"{name}: padding must be an int or a pair of ints, got "
                                f"{padding!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = ntuple(kernel_size, 2, "kernel_size")
        self.stride = ntuple(stride, 2, "stride")
        self.padding = ntuple(padding, 2, "padding")
        self.dilation = ntuple(dilation, 2, "dilation")
        _check_sizes(name, kernel_size=self.kernel_size, stride=self.stride,
                     dilation=self.dilation)
        if any(p < 0 for p in self.padding):
            raise ArgumentError(f"{name}: padding must be non-negative, got {padding!r}")
        self.output_padding = C.check_output_padding(name, output_padding, self.stride,
                                                     self.dilation)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self._pads = tuple((p, p) for p in self.padding)

        fan_in = out_channels // groups * math.prod(self.kernel_size)
        shape = (in_channels, out_channels // groups, *self.kernel_size)
        self.weight = Parameter(init.default_weight(shape, fan_in))
        self.bias = Parameter(init.default_bias((out_channels,), fan_in)) if bias else None

    def _spatial_out(self, shape) -> tuple[int, int]:
        name = type(self).__name__
        shape = tuple(shape)
        if len(shape) != 4:
            raise ShapeError(f"{name}: expected a 4-D input (N, {self.in_channels}, H, W), "
                             f"got shape {shape}")
        core.check_channels(name, shape, self.in_channels, "(N, C, H, W)")
        return transposed_output_size(name, shape, self.kernel_size, self.stride, self._pads,
                                      self.dilation, self.output_padding)

    def output_shape(self, input_shape):
        return (input_shape[0], self.out_channels, *self._spatial_out(input_shape))

    def forward(self, x):
        x = np.asarray(x)
        out_hw = self._spatial_out(x.shape)
        weight, bias = _checked_parameters(self, (self.in_channels,
                                                  self.out_channels // self.groups,
                                                  *self.kernel_size))
        x = core.check_input(type(self).__name__, x, 4, "(N, C, H, W)", weight.dtype)
        y, cache = core.conv_transpose2d(x, weight, bias, self.stride, self._pads,
                                               self.dilation, self.groups, out_hw,
                                               type(self).__name__)
        self._keep(cache=cache)
        return y

    def backward(self, grad_out):
        grad_x, grad_w, grad_b = C.conv_transpose2d_backward(grad_out, self._take()["cache"])
        self.weight.accumulate(grad_w)
        if self.bias is not None:
            self.bias.accumulate(grad_b)
        return grad_x

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class SeparableConv2d(Module):
    """Depthwise separable convolution: a depthwise ``Conv2d`` then a 1x1 ``Conv2d``.

    ``depthwise`` filters each input channel on its own (``groups=in_channels``, with
    ``depth_multiplier`` kernels per channel); ``pointwise`` mixes the channels with a 1x1
    convolution. Together they cost ``C*m*kH*kW + C*m*out_channels (+ out_channels)`` parameters
    instead of a full convolution's ``C*out_channels*kH*kW (+ out_channels)``, e.g. 688 instead
    of 4,640 for 16 -> 32 channels with 3x3 kernels. As in Keras, only the pointwise convolution
    has a bias (a depthwise bias would be redundant: the pointwise convolution is linear).

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, padding, dilation, padding_mode: of the depthwise convolution, as in
            :class:`Conv2d`.
        bias: give the pointwise convolution a bias. Default: True.
        depth_multiplier: depthwise output channels per input channel (m). Default: 1.

    Shape:
        - Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H_out, W_out)`` with
          ``H_out`` as for :class:`Conv2d` with the same kernel, stride, padding, dilation.

    Attributes:
        depthwise: ``Conv2d(in_channels, in_channels*m, kernel_size, ..., groups=in_channels,
            bias=False)``, weight ``(in_channels*m, 1, kH, kW)``.
        pointwise: ``Conv2d(in_channels*m, out_channels, 1, bias=bias)``.
        bias: the pointwise convolution's bias (the same Parameter, held once) or None.

    Keras: https://keras.io/api/layers/convolution_layers/separable_convolution2d/ (PyTorch has
    no such layer; it is built there from the same two ``Conv2d``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, padding_mode: str = "zeros",
                 depth_multiplier: int = 1):
        super().__init__()
        check_positive_int(type(self).__name__, depth_multiplier=depth_multiplier)
        self.depthwise = Conv2d(in_channels, in_channels * depth_multiplier, kernel_size, stride,
                                padding, dilation, groups=in_channels, bias=False,
                                padding_mode=padding_mode)
        self.pointwise = Conv2d(in_channels * depth_multiplier, out_channels, 1, bias=bias)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = self.depthwise.kernel_size
        self.stride = self.depthwise.stride
        self.padding = self.depthwise.padding
        self.dilation = self.depthwise.dilation
        self.padding_mode = padding_mode
        self.depth_multiplier = int(depth_multiplier)
        # the pointwise bias, visible as `bias` like every layer's, but registered only once
        object.__setattr__(self, "bias", self.pointwise.bias)

    def _children(self):
        return (("depthwise", self.depthwise), ("pointwise", self.pointwise))

    def forward(self, x):
        for child_name, child in self._children():
            try:
                x = child(x)
            except ShapeError as error:
                raise ShapeError(f"SeparableConv2d ({child_name}): {error}") from None
        return x

    def backward(self, grad_out):
        return self.depthwise.backward(self.pointwise.backward(grad_out))

    def backward_params(self, grad_out) -> None:
        self.depthwise.backward_params(self.pointwise.backward(grad_out))

    def output_shape(self, input_shape):
        return chain_shapes(self._children(), tuple(input_shape),
                            lambda _, child, shape: child.output_shape(shape), self._label)

    def _summary_rows(self, name, shape, rows):
        """One summary row per child, so the depthwise/pointwise split and its saving show."""
        def step(child_name, child, shape):
            return child._summary_rows(f"{name}.{child_name}" if name else child_name, shape,
                                       rows)
        return chain_shapes(self._children(), shape, step, self._label)

    @staticmethod
    def _label(child_name, child) -> str:
        return f"SeparableConv2d ({child_name})"

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.depth_multiplier != 1:
            s += f", depth_multiplier={self.depth_multiplier}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s
