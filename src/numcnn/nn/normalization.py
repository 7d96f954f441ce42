"""Batch normalisation layers with PyTorch's running statistics and buffers."""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .. import functional as F
from ..errors import ShapeError
from . import init
from .module import (Module, Parameter, check_flag, check_number, check_positive_int,
                     check_real)

__all__ = ["BatchNorm1d", "BatchNorm2d"]

_RUNNING_STATS_LOCK = threading.Lock()


class _BatchNorm(Module):
    """Shared by :class:`BatchNorm1d` and :class:`BatchNorm2d`; they differ in the input ranks."""

    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, num_features=num_features)
        check_number(name, "eps", eps, 0.0, low_open=True)  # eps <= 0 divides by zero (NaN)
        if momentum is not None:
            check_number(name, "momentum", momentum, 0.0, 1.0)
        check_flag(name, affine=affine, track_running_stats=track_running_stats)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(init.ones(num_features))
            self.bias = Parameter(init.zeros(num_features))
        else:
            self.weight = None
            self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", init.zeros(num_features))
            self.register_buffer("running_var", init.ones(num_features))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _check_shape(self, shape) -> None:
        shape = tuple(shape)
        name = type(self).__name__
        if len(shape) not in self._ranks:
            raise ShapeError(f"{name}: expected {self._layout}, got a {len(shape)}-D input of "
                             f"shape {shape}")
        if shape[1] != self.num_features:
            raise ShapeError(f"{name}: expected {self.num_features} channels "
                             f"(num_features={self.num_features}), got input of shape {shape} "
                             f"with {shape[1]} channels")

    def forward(self, x):
        x = check_real(type(self).__name__, x)
        self._check_shape(x.shape)
        if self.weight is not None:
            x = x.astype(self.weight.dtype, copy=False)
        elif self.running_mean is not None:
            x = x.astype(self.running_mean.dtype, copy=False)
        if x.shape[0] == 0:  # an empty batch: an empty output, the statistics untouched
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1  # as PyTorch, which counts it all the same
            out = np.empty(x.shape, dtype=x.dtype)
            self._keep(output=out, cache=None)
            return out
        use_batch_stats = self.training or self.running_mean is None
        update = self.training and self.track_running_stats
        # the running statistics are updated in place: one thread at a time
        with _RUNNING_STATS_LOCK if update else contextlib.nullcontext():
            # As torch.nn.modules.batchnorm._BatchNorm.forward: momentum=None is a cumulative
            # average.
            factor = 0.0 if self.momentum is None else self.momentum
            if update:
                self.num_batches_tracked += 1
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
            out, cache = F.batch_norm_forward(
                x, self.running_mean if update or not self.training else None,
                self.running_var if update or not self.training else None,
                None if self.weight is None else self.weight.data,
                None if self.bias is None else self.bias.data,
                use_batch_stats, factor, self.eps)
        self._keep(output=out, cache=cache)
        return out

    def backward(self, grad_out):
        cache = self._take(grad_out)["cache"]
        if cache is None:  # the empty batch: nothing flows back
            return np.zeros(np.shape(grad_out), dtype=np.asarray(grad_out).dtype)
        grad_x, grad_w, grad_b = F.batch_norm_backward(grad_out, cache)
        if self.weight is not None:
            self.weight.accumulate(grad_w)
            self.bias.accumulate(grad_b)
        return grad_x

    def output_shape(self, input_shape):
        self._check_shape(input_shape)
        return tuple(input_shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs, per channel ``C``.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, the statistics over ``N`` (and
    ``L``). See :class:`BatchNorm2d` for the training/eval behaviour and the buffers.

    Args:
        num_features: ``C``.
        eps: added to the variance. Default: ``1e-5``.
        momentum: weight of each new batch in the running statistics, or ``None`` for a
            cumulative average. Default: ``0.1``.
        affine: learn ``weight`` (ones) and ``bias`` (zeros). Default: ``True``.
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``; when ``False``, batch statistics are used in eval mode too.
            Default: ``True``.

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``. Output: the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm1d.html
    """

    _ranks = (2, 3)
    _layout = "a 2-D input (N, C) or a 3-D input (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` inputs, per channel ``C``.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, mean and (biased) variance taken over
    ``(N, H, W)`` of each channel. In training mode the batch's statistics are used and the
    running ones updated, ``running = (1 - momentum) * running + momentum * batch_stat`` with the
    *unbiased* batch variance (or a cumulative average when ``momentum=None``), and
    ``num_batches_tracked`` counts the batches. In eval mode the running statistics are used,
    unless ``track_running_stats=False``, in which case there are none and batch statistics are
    used in both modes. All as PyTorch, so ``state_dict`` keys and values carry over.

    Args:
        num_features: ``C``.
        eps: added to the variance. Default: ``1e-5``.
        momentum: weight of each new batch in the running statistics, or ``None`` for a
            cumulative average. Default: ``0.1``.
        affine: learn ``weight`` (ones) and ``bias`` (zeros). Default: ``True``.
        track_running_stats: keep running statistics. Default: ``True``.

    Shape:
        - Input: ``(N, C, H, W)``. Output: ``(N, C, H, W)``.

    Attributes:
        weight, bias: ``(C,)`` parameters, or ``None`` when ``affine=False``.
        running_mean, running_var: ``(C,)`` buffers (zeros, ones), or ``None``.
        num_batches_tracked: 0-d int64 buffer, or ``None``.

    See https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
    """

    _ranks = (4,)
    _layout = "a 4-D input (N, C, H, W)"
