"""Normalisation layers: batch norm with PyTorch's running statistics and buffers, and the
per-sample layer, group and instance norms (:mod:`numcnn.functional.norms`)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .. import functional as F
from .._text import a, count
from ..errors import ArgumentError, ShapeError
from . import init
from .module import Module, Parameter, check_flag, check_number, check_positive_int, check_real

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d"]

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
            raise ShapeError(f"{name}: expected {self._layout}, got "
                             f"{a(f'{len(shape)}-D')} input of shape {shape}")
        if shape[1] != self.num_features:
            raise ShapeError(f"{name}: expected {count(self.num_features, 'channel')} "
                             f"(num_features={self.num_features}), got input of shape {shape} "
                             f"with {count(shape[1], 'channel')}")

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


class _AffineNorm(Module):
    """The backward pass shared by the per-sample norms: add the affine gradients."""

    _backward = None

    def backward(self, grad_out):
        grad_x, grad_w, grad_b = type(self)._backward(grad_out, self._take()["cache"])
        if self.weight is not None:
            self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x

    def _data(self, name):
        param = getattr(self, name)
        return None if param is None else param.data

    def _dtype(self, x):
        """The weight's dtype; without one, the input's (float32 for integer input)."""
        if self.weight is not None:
            return self.weight.dtype
        return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32


class LayerNorm(_AffineNorm):
    """Layer normalisation over the last ``len(normalized_shape)`` axes of each sample.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, mean and biased variance over those
    axes; ``weight`` and ``bias`` have the shape ``normalized_shape`` (one value per element).
    The same in training and evaluation (no running statistics).

    Args:
        normalized_shape: int or tuple, the trailing shape normalised over.
        eps: added to the variance. Default: ``1e-5``.
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros). Default: ``True``.
        bias: with ``elementwise_affine``, learn the bias too. Default: ``True``.

    Shape:
        - Input: ``(*, *normalized_shape)``. Output: the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html (Ba et al.,
    arXiv:1607.06450).
    """

    _backward = staticmethod(F.layer_norm_backward)

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32)) if bias \
                else None
        else:
            self.weight = None
            self.bias = None

    def forward(self, x):
        x = np.asarray(x)
        x = x.astype(self._dtype(x), copy=False)
        out, cache = F.layer_norm_forward(x, self.normalized_shape, self._data("weight"),
                                          self._data("bias"), self.eps)
        self._keep(cache=cache)
        return out

    def output_shape(self, input_shape):
        shape, k = tuple(input_shape), len(self.normalized_shape)
        if len(shape) < k or shape[len(shape) - k:] != self.normalized_shape:
            raise ShapeError(f"LayerNorm: expected an input ending in normalized_shape="
                             f"{self.normalized_shape}, got shape {shape}")
        return shape

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(_AffineNorm):
    """Group normalisation: the channels of each sample in ``num_groups`` groups, each group
    normalised over its channels and positions.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, mean and biased variance per
    (sample, group); ``weight`` and ``bias`` per channel. The same in training and evaluation.

    Args:
        num_groups: ``G``; must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance. Default: ``1e-5``.
        affine: learn ``weight`` (ones) and ``bias`` (zeros), each ``(C,)``. Default: ``True``.

    Shape:
        - Input: ``(N, C, *)``. Output: the same shape.

    Raises:
        ValueError: if ``num_channels`` is not divisible by ``num_groups``.

    See https://pytorch.org/docs/stable/generated/torch.nn.GroupNorm.html (Wu and He,
    arXiv:1803.08494).
    """

    _backward = staticmethod(F.group_norm_backward)

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True):
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups:
            raise ArgumentError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                                f"num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.weight = Parameter(np.ones(num_channels, dtype=np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype=np.float32)) if affine else None

    def forward(self, x):
        x = np.asarray(x)
        self.output_shape(x.shape)
        x = x.astype(self._dtype(x), copy=False)
        out, cache = F.group_norm_forward(x, self.num_groups, self._data("weight"),
                                          self._data("bias"), self.eps)
        self._keep(cache=cache)
        return out

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ShapeError(f"GroupNorm: expected an input (N, {self.num_channels}, *) "
                             f"(num_channels={self.num_channels}), got shape {shape}")
        return shape

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class InstanceNorm2d(_AffineNorm):
    """Instance normalisation: each channel of each image normalised over its ``H * W`` positions.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, mean and biased variance per
    (sample, channel). With ``track_running_stats`` the running mean and (unbiased) variance,
    averaged over the batch, are kept in training as batch norm keeps them, and used in
    evaluation; without, each instance's own statistics are used in both modes.

    Args:
        num_features: ``C``.
        eps: added to the variance. Default: ``1e-5``.
        momentum: weight of each new batch in the running statistics. Default: ``0.1``.
        affine: learn ``weight`` (ones) and ``bias`` (zeros), each ``(C,)``. Default: ``False``.
        track_running_stats: keep ``running_mean``, ``running_var`` (and PyTorch's
            ``num_batches_tracked``). Default: ``False``.

    Shape:
        - Input: ``(N, C, H, W)`` or ``(C, H, W)``. Output: the same shape.

    See https://pytorch.org/docs/stable/generated/torch.nn.InstanceNorm2d.html (Ulyanov et al.,
    arXiv:1607.08022).
    """

    _backward = staticmethod(F.instance_norm_backward)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype=np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype=np.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _check_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in (3, 4):
            raise ShapeError(f"InstanceNorm2d: expected a 4-D input (N, C, H, W) or a 3-D input "
                             f"(C, H, W), got shape {shape}")
        channels = shape[-3]
        if (self.affine or self.track_running_stats) and channels != self.num_features:
            raise ShapeError(f"InstanceNorm2d: expected {count(self.num_features, 'channel')} "
                             f"(num_features={self.num_features}), got input of shape {shape}")
        return shape

    def forward(self, x):
        x = np.asarray(x)
        self._check_shape(x.shape)
        unbatched = x.ndim == 3
        dtype = self.running_mean.dtype if self.running_mean is not None else self._dtype(x)
        x = x.astype(self.weight.dtype if self.weight is not None else dtype, copy=False)
        if unbatched:
            x = x[None]
        use_input_stats = self.training or not self.track_running_stats
        out, cache = F.instance_norm_forward(
            x, self.running_mean, self.running_var, self._data("weight"), self._data("bias"),
            use_input_stats, 0.0 if self.momentum is None else self.momentum, self.eps)
        self._keep(cache=cache, unbatched=unbatched)
        return out[0] if unbatched else out

    def backward(self, grad_out):
        kept = self._take()
        if kept["unbatched"]:
            grad_out = np.asarray(grad_out)[None]
        grad_x, grad_w, grad_b = F.instance_norm_backward(grad_out, kept["cache"])
        if self.weight is not None:
            self.weight.grad += grad_w
            self.bias.grad += grad_b
        return grad_x[0] if kept["unbatched"] else grad_x

    def output_shape(self, input_shape):
        return self._check_shape(input_shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
