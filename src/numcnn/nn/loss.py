"""Loss layers: ``loss = criterion(input, target)``, then ``criterion.backward()`` gives
``d loss / d input`` to hand to ``model.backward``.

``forward`` returns a NumPy scalar of the input's dtype (``reduction='mean'`` or ``'sum'``) or
the per-element losses (``reduction='none'``); ``backward(grad=1.0)`` takes the gradient of
whatever ``forward`` returned (a scalar, or an array of the per-element shape). Arguments after
``weight`` are keyword-only: PyTorch's positional order still holds the deprecated
``size_average`` and ``reduce``, so positional use would silently mean something else.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentTypeError, DTypeError, ShapeError
from ..functional.loss import check_reduction
from .module import Module, check_number

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    """A criterion given by a ``(forward, backward)`` pair of functional losses."""

    _forward = None
    _backward = None

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def _options(self) -> dict:
        return dict(reduction=self.reduction)

    _elementwise = False  # MSE and BCE: one loss per element, any shape

    def forward(self, input, target):
        input, target = np.asarray(input), np.asarray(target)
        name = type(self).__name__
        scalar = self._elementwise and input.ndim == 0  # run as shape (1,): arrays throughout
        if scalar:
            if target.shape != ():
                raise ShapeError(f"{name}: the target must have the input's shape (), got "
                                 f"{target.shape}")
            input, target = input.reshape(1), target.reshape(1)
        if not self._elementwise and input.ndim >= 1:
            classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
            if classes == 0:
                raise ShapeError(f"{name}: expected at least one class (C >= 1) in an input "
                                 f"(N, C, ...) or (C,), got shape {input.shape}")
        loss, cache = type(self)._forward(input, target, **self._options())
        if scalar and self.reduction == "none":
            loss = np.asarray(loss).reshape(())
        self._keep(cache=cache, scalar=scalar)
        return loss

    def backward(self, grad=1.0):
        """``d loss / d input``, times ``grad`` (the gradient of the value forward returned)."""
        kept = self._take()
        if kept["scalar"]:
            grad = np.asarray(grad).reshape(1) if self.reduction == "none" else grad
            return np.asarray(type(self)._backward(grad, kept["cache"])).reshape(())
        return type(self)._backward(grad, kept["cache"])

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


def _check_index(owner: str, ignore_index) -> None:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ArgumentTypeError(f"{owner}: ignore_index must be an int, got "
                                f"{type(ignore_index).__name__} {ignore_index!r}")


def _weight_buffer(weight):
    """A weight array kept as given (float64 stays float64; integers become float32)."""
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.dtype.kind not in "biuf":
        raise DTypeError(f"weight: expected real numbers, got dtype {weight.dtype}")
    return weight if np.issubdtype(weight.dtype, np.floating) else weight.astype(np.float32)


class CrossEntropyLoss(_Loss):
    """Cross-entropy between logits and class indices or class probabilities.

    With class indices ``y`` (``ignore_index`` elements excluded)::

        loss_i = -w[y_i] * log(softmax(x_i)[y_i])        mean: sum_i loss_i / sum_i w[y_i]

    With probabilities ``t`` of the input's shape (e.g. one-hot rows)::

        loss_i = -sum_c w[c] * t[i, c] * log(softmax(x_i)[c])       mean: divided by n

    ``label_smoothing=eps`` mixes the target with the uniform distribution:
    ``(1 - eps) * target + eps / C``. The softmax is taken inside, stably: pass raw logits.

    Args:
        weight: ``(C,)`` class weights, or ``None``. Default: ``None``.
        ignore_index: class-index target value that is ignored. Default: ``-100``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.
        label_smoothing: in ``[0, 1]``. Default: ``0.0``.

    Shape:
        - Input: ``(N, C)``, ``(N, C, d1, ..., dk)`` or ``(C,)``.
        - Target: class indices (any integer dtype) ``(N,)``, ``(N, d1, ..., dk)`` or ``()``,
          in ``[0, C)``; or probabilities of the input's shape (floating point).
        - Output: a scalar, or ``(N, d1, ..., dk)`` with ``reduction='none'``.

    See https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
    """

    _forward = staticmethod(F.cross_entropy_forward)
    _backward = staticmethod(F.cross_entropy_backward)

    def __init__(self, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(reduction)
        check_number("CrossEntropyLoss", "label_smoothing", label_smoothing, 0.0, 1.0)
        _check_index("CrossEntropyLoss", ignore_index)
        self.register_buffer("weight", _weight_buffer(weight))
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def _options(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index,
                    reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (e.g. the output of ``LogSoftmax(dim=1)``).

    ``loss_i = -w[y_i] * input[i, y_i]``; ``'mean'`` divides by ``sum_i w[y_i]`` over the
    elements whose target is not ``ignore_index``.

    Args:
        weight: ``(C,)`` class weights, or ``None``. Default: ``None``.
        ignore_index: target value that is ignored. Default: ``-100``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.

    Shape:
        - Input: ``(N, C)``, ``(N, C, d1, ..., dk)`` or ``(C,)``.
        - Target: class indices ``(N,)``, ``(N, d1, ..., dk)`` or ``()``, in ``[0, C)``.
        - Output: a scalar, or ``(N, d1, ..., dk)`` with ``reduction='none'``.

    See https://pytorch.org/docs/stable/generated/torch.nn.NLLLoss.html
    """

    _forward = staticmethod(F.nll_loss_forward)
    _backward = staticmethod(F.nll_loss_backward)

    def __init__(self, weight=None, *, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(reduction)
        _check_index("NLLLoss", ignore_index)
        self.register_buffer("weight", _weight_buffer(weight))
        self.ignore_index = ignore_index

    def _options(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error ``loss_i = (input_i - target_i)^2``.

    Args:
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.

    Shape:
        - Input: ``(*)``. Target: ``(*)``, the same shape (not broadcast).
        - Output: a scalar, or ``(*)`` with ``reduction='none'``.

    See https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html
    """

    _elementwise = True
    _forward = staticmethod(F.mse_loss_forward)
    _backward = staticmethod(F.mse_loss_backward)

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits, with the sigmoid inside (stable log-sum-exp form).

    ``loss_i = -w_i * [pw * t_i * log(sigmoid(x_i)) + (1 - t_i) * log(1 - sigmoid(x_i))]``,
    computed as ``w_i * [(1 - t_i) x_i + (1 + (pw - 1) t_i) * softplus(-x_i)]``.

    Args:
        weight: rescaling weight broadcast to the input's shape, or ``None``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.
        pos_weight: weight of positive examples, broadcast along the last axis (one per
            class), or ``None``.

    Shape:
        - Input: ``(*)``. Target: ``(*)``, the same shape, values in ``[0, 1]``.
        - Output: a scalar, or ``(*)`` with ``reduction='none'``.

    See https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html
    """

    _elementwise = True
    _forward = staticmethod(F.binary_cross_entropy_with_logits_forward)
    _backward = staticmethod(F.binary_cross_entropy_with_logits_backward)

    def __init__(self, weight=None, *, reduction: str = "mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", _weight_buffer(weight))
        self.register_buffer("pos_weight", _weight_buffer(pos_weight))

    def _options(self):
        return dict(weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight)

