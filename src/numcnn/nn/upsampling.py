"""Layers that enlarge feature maps: :class:`MaxUnpool2d` (the partial inverse of max pooling)
and :class:`Upsample` (nearest and (bi)linear interpolation), thin wrappers over
:mod:`numcnn.functional.unpool` and :mod:`numcnn.functional.upsample`."""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, ShapeError
from ..functional import unpool as U
from ..functional import upsample as I
from .module import Module

__all__ = ["MaxUnpool2d", "Upsample"]


class MaxUnpool2d(Module):
    """The partial inverse of :class:`MaxPool2d`: each value goes back to where its maximum came
    from (``indices`` from ``MaxPool2d(..., return_indices=True)``), zeros elsewhere.

    ``forward(input, indices, output_size=None)``; ``backward(grad_out)`` returns the input's
    gradient, ``grad_out`` gathered at ``indices``.

    Args:
        kernel_size: the pooling window, int or (kh, kw).
        stride: the pooling stride. Default: ``kernel_size``.
        padding: the pooling padding. Default: 0.

    Shape:
        - Input: ``(N, C, H_in, W_in)`` or ``(C, H_in, W_in)``; ``indices`` the same shape.
        - Output: ``(N, C, H_out, W_out)`` or ``(C, H_out, W_out)``,
          ``H_out = (H_in - 1)*stride[0] - 2*padding[0] + kernel_size[0]`` (likewise ``W_out``),
          or ``output_size``.

    https://pytorch.org/docs/stable/generated/torch.nn.MaxUnpool2d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding

    def forward(self, x, indices=None, output_size=None):
        if indices is None:
            raise ShapeError("MaxUnpool2d: forward needs the indices of the maxima, as "
                             "MaxPool2d(..., return_indices=True) returns them: "
                             "unpool(out, indices)")
        x, indices = np.asarray(x), np.asarray(indices)
        unbatched = x.ndim == 3
        if unbatched:
            x, indices = x[None], indices[None]
        out, cache = U.max_unpool2d_forward(x, indices, self.kernel_size, self.stride,
                                            self.padding, output_size)
        self._keep(cache=cache, unbatched=unbatched)
        return out[0] if unbatched else out

    def backward(self, grad_out):
        kept = self._take()
        if kept["unbatched"]:
            return U.max_unpool2d_backward(np.asarray(grad_out)[None], kept["cache"])[0]
        return U.max_unpool2d_backward(grad_out, kept["cache"])

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        size = U.max_unpool2d_output_size(shape, self.kernel_size, self.stride, self.padding)
        return (*shape[:-2], *size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Upsample(Module):
    """Resize feature maps to ``size`` or by ``scale_factor``, by nearest-neighbour or (bi)linear
    interpolation (PyTorch's index rules; see :mod:`numcnn.functional.upsample` for the
    formulas). The backward pass is the transposed interpolation.

    Args:
        size: output spatial size, int or tuple. Give this or ``scale_factor``.
        scale_factor: multiplier of the spatial size, float or tuple.
        mode: ``"nearest"`` (3-D or 4-D input), ``"linear"`` (3-D) or ``"bilinear"`` (4-D).
            Default: ``"nearest"``.
        align_corners: for the linear modes, align the corner pixels' centres. Default: ``None``
            (``False``).
        recompute_scale_factor: take the coordinate scale from the sizes instead of
            ``1 / scale_factor``. Default: ``None``.

    Shape:
        - Input: ``(N, C, L_in)`` or ``(N, C, H_in, W_in)``.
        - Output: ``(N, C, L_out)`` or ``(N, C, H_out, W_out)``, each size ``size`` or
          ``floor(input size * scale_factor)``.

    https://pytorch.org/docs/stable/generated/torch.nn.Upsample.html
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size = tuple(size) if isinstance(size, list) else size
        self.scale_factor = (tuple(scale_factor) if isinstance(scale_factor, list)
                             else scale_factor)
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        if mode not in ("nearest", "linear", "bilinear"):
            raise ArgumentError(f"Upsample: mode must be 'nearest', 'linear' or 'bilinear', got "
                                f"{mode!r}")
        if (size is None) == (scale_factor is None):
            raise ArgumentError("Upsample: give exactly one of size and scale_factor")
        if align_corners is not None and mode == "nearest":
            raise ArgumentError("Upsample: align_corners option can only be set with the "
                                "interpolating modes: linear | bilinear")

    def forward(self, x):
        out, cache = I.interpolate_forward(x, self.size, self.scale_factor, self.mode,
                                           self.align_corners, self.recompute_scale_factor)
        self._keep(cache=cache)
        return out

    def backward(self, grad_out):
        return I.interpolate_backward(grad_out, self._take()["cache"])

    def output_shape(self, input_shape):
        return I.interpolate_output_size(input_shape, self.size, self.scale_factor, self.mode,
                                         self.align_corners)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"
