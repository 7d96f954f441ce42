"""Loss functions with their gradients with respect to the input.

Each loss comes as ``loss(input, target, ...)``, ``loss_forward(...) -> (value, cache)`` and
``loss_backward(grad, cache) -> d loss / d input``. The target is data: no gradient is returned
for it. ``reduction`` is ``'mean'`` (the default), ``'sum'`` or ``'none'`` as in PyTorch: with
``'mean'`` or ``'sum'`` the value is a NumPy scalar of the input's dtype and ``grad`` a scalar
(default 1); with ``'none'`` the value is the per-element array and ``grad`` has its shape (a
scalar ``grad`` is broadcast, which is the gradient of the sum).

Notation for the classification losses::

    n      batch size
    C      number of classes (axis 1 of the input; axis 0 of an unbatched (C,) input)
    m      positions per sample: d1*...*dk for an input (n, C, d1, ..., dk), 1 for (n, C)

Their inputs are viewed as ``(n, C, m)`` and class-index targets as ``(n, m)``.

Cross-entropy from logits ``x`` with class-index targets ``y``, class weights ``w`` and label
smoothing ``eps``, per element (``p = softmax(x)``, ``log p = log_softmax(x)``)::

    loss_i = -(1 - eps) * w[y_i] * log p[i, y_i] - eps / C * sum_c w[c] * log p[i, c]
    d loss_i / d x[i, k] = p[i, k] * sum_c a[i, c] - a[i, k],
        with a[i, c] = (1 - eps) * w[y_i] * [c == y_i] + eps / C * w[c]

(without weights and smoothing: ``p - onehot(y)``). Elements whose target is ``ignore_index``
contribute nothing; ``'mean'`` divides by ``sum_i w[y_i]`` over the others, as PyTorch. With
probability targets ``t`` (the input's shape) ``a[i, c] = w[c] * t'[i, c]``, where
``t' = (1 - eps) * t + eps / C``, and ``'mean'`` divides by the number of elements ``n * m``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError
from .activation import sigmoid

__all__ = [
    "cross_entropy", "cross_entropy_forward", "cross_entropy_backward",
    "nll_loss", "nll_loss_forward", "nll_loss_backward",
    "mse_loss", "mse_loss_forward", "mse_loss_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_forward",
    "binary_cross_entropy_with_logits_backward",
]

REDUCTIONS = ("none", "mean", "sum")


# -- shared checks and helpers ------------------------------------------------------------------
def check_reduction(reduction: str, name: str) -> None:
    if reduction not in REDUCTIONS:
        raise ArgumentError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _float_input(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    return x


def _class_layout(x: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input viewed as ``(n, C, m)``, and the shape of its class-index targets."""
    if x.ndim == 0:
        raise ShapeError(f"{name}: expected an input (n, C), (n, C, d1, ...) or (C,), got a "
                         f"0-D input")
    if x.ndim == 1:                                              # unbatched (C,)
        return x.reshape(1, x.shape[0], 1), ()
    n, c = x.shape[:2]
    m = int(np.prod(x.shape[2:], dtype=np.int64))                # sizes, not -1: n may be 0
    return x.reshape(n, c, m), x.shape[:1] + x.shape[2:]         # (n, C, m)


def _class_weight(weight, n_classes: int, dtype, name: str):
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.shape != (n_classes,):
        raise ShapeError(f"{name}: weight should have shape ({n_classes},), one value per class, "
                         f"got {weight.shape}")
    return weight.astype(dtype, copy=False)


def _class_indices(target, target_shape: tuple[int, ...], input_shape: tuple[int, ...],
                   n_classes: int, ignore_index: int, name: str, probabilities: bool = False):
    """Check class-index targets; return them as ``(n, m)`` int64 (ignored ones set to 0) and
    the ``(n, m)`` mask of the elements that count. ``probabilities``: the loss also takes
    probability targets (mentioned in the messages)."""
    target = np.asarray(target)
    if target.shape != target_shape:
        probs = f" or probability targets of shape {input_shape}" if probabilities else ""
        raise ShapeError(f"{name}: an input of shape {input_shape} needs class-index targets of "
                         f"shape {target_shape}{probs}, got a target of shape {target.shape}")
    if not (np.issubdtype(target.dtype, np.integer) or target.dtype == bool):
        hint = (f" (probability targets must have the input's shape {input_shape})"
                if probabilities else "")
        raise DTypeError(f"{name}: class-index targets must be integers, got dtype "
                         f"{target.dtype}{hint}")
    rows = input_shape[0] if len(input_shape) > 1 else 1
    m = int(np.prod(input_shape[2:], dtype=np.int64)) if len(input_shape) > 1 else 1
    labels = target.astype(np.int64).reshape(rows, m)
    valid = labels != ignore_index                                # (n, m)
    bad = valid & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        raise ArgumentError(f"{name}: expected class indices in [0, {n_classes}) "
                         f"(or ignore_index={ignore_index}), got {labels[bad][0]}")
    labels[~valid] = 0
    return labels, valid


def _element_scale(grad, reduction: str, denom, shape: tuple[int, ...], dtype, name: str):
    """d loss / d per-element loss: ``grad / denom`` ('mean'), ``grad`` ('sum'), or the
    per-element ``grad`` ('none'), as an array of ``shape``."""
    grad = np.asarray(grad, dtype=dtype)
    if reduction == "none":
        try:
            return np.broadcast_to(grad, shape)
        except ValueError:
            raise ShapeError(f"{name}.backward: with reduction='none' grad must have the loss's "
                             f"shape {shape}, got {grad.shape}") from None
    if grad.size != 1:
        raise ShapeError(f"{name}.backward: with reduction={reduction!r} the loss is a scalar, so "
                         f"grad must be one number, got shape {grad.shape}")
    grad = grad.reshape(())
    if reduction == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):    # nothing counted: nan
            grad = grad / denom
    return np.broadcast_to(grad, shape)


def _reduce(losses: np.ndarray, reduction: str, denom, out_shape: tuple[int, ...], dtype):
    if reduction == "none":
        return np.asarray(losses).reshape(out_shape)
    total = losses.sum(dtype=dtype)
    if reduction == "sum":
        return dtype.type(total)
    with np.errstate(divide="ignore", invalid="ignore"):      # nothing counted: nan, as PyTorch
        return dtype.type(total / denom)


def _log_softmax_classes(x3: np.ndarray) -> np.ndarray:
    """``log_softmax`` along the class axis of an ``(n, C, m)`` array."""
    out = np.subtract(x3, x3.max(axis=1, keepdims=True))
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def _pick(a3: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``a3[i, labels[i, j], j]`` for every ``(i, j)``: an ``(n, m)`` array."""
    return np.take_along_axis(a3, labels[:, None, :], axis=1)[:, 0, :]


# -- negative log-likelihood --------------------------------------------------------------------
def nll_loss_forward(input, target, weight=None, *, ignore_index: int = -100,
                     reduction: str = "mean"):
    """``loss_i = -w[y_i] * input[i, y_i]`` for log-probabilities ``input``.

    Args:
        input: log-probabilities ``(n, C)``, ``(n, C, d1, ...)`` or ``(C,)``.
        target: class indices ``(n,)``, ``(n, d1, ...)`` or ``()``, in ``[0, C)`` or
            ``ignore_index``.
        weight: ``(C,)`` class weights, or ``None``.
        ignore_index: target value that contributes nothing. Default: ``-100``.
        reduction: ``'mean'`` (weighted: divided by ``sum w[y_i]``), ``'sum'`` or ``'none'``.
    """
    name = "NLLLoss"
    check_reduction(reduction, name)
    x = _float_input(input, name)
    x3, target_shape = _class_layout(x, name)
    n_classes = x3.shape[1]
    weight = _class_weight(weight, n_classes, x.dtype, name)
    labels, valid = _class_indices(target, target_shape, x.shape, n_classes, ignore_index, name)
    w_y = valid.astype(x.dtype) if weight is None else weight[labels] * valid   # (n, m)
    losses = -w_y * _pick(x3, labels)
    denom = w_y.sum()
    cache = dict(labels=labels, valid=valid, w_y=w_y, denom=denom, reduction=reduction,
                 shape=x.shape, loss_shape=target_shape)
    return _reduce(losses, reduction, denom, target_shape, x.dtype), cache


def nll_loss_backward(grad, cache):
    """``d loss / d input[i, c] = -w[y_i] * [c == y_i]`` times the upstream scale."""
    labels, w_y = cache["labels"], cache["w_y"]
    n, m = labels.shape
    scale = _element_scale(grad, cache["reduction"], cache["denom"], cache["loss_shape"],
                           w_y.dtype, "NLLLoss").reshape(n, m)
    scale = np.where(cache["valid"], scale, 0)          # ignored: 0, even when the mean is nan
    grad_in = np.zeros((n, cache["shape"][1 if len(cache["shape"]) > 1 else 0], m),
                       dtype=w_y.dtype)                                       # (n, C, m)
    grad_in[np.arange(n)[:, None], labels, np.arange(m)[None, :]] = -w_y * scale
    return grad_in.reshape(cache["shape"])


def nll_loss(input, target, weight=None, *, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood loss. See ``torch.nn.functional.nll_loss``."""
    return nll_loss_forward(input, target, weight, ignore_index=ignore_index,
                            reduction=reduction)[0]


# -- cross-entropy ------------------------------------------------------------------------------
def cross_entropy_forward(input, target, weight=None, *, ignore_index: int = -100,
                          reduction: str = "mean", label_smoothing: float = 0.0):
    """Cross-entropy of logits ``input`` against class indices or class probabilities.

    Args:
        input: logits ``(n, C)``, ``(n, C, d1, ...)`` or unbatched ``(C,)``.
        target: class indices (integers) of shape ``(n,)``, ``(n, d1, ...)`` or ``()``; or
            probabilities / one-hot rows of the input's shape (floating point).
        weight: ``(C,)`` class weights, or ``None``.
        ignore_index: class-index target that contributes nothing. Default: ``-100``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.
        label_smoothing: ``eps`` in ``[0, 1]``; the target becomes ``(1 - eps) * target +
            eps / C``. Default: ``0.0``.
    """
    name = "CrossEntropyLoss"
    check_reduction(reduction, name)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError(f"{name}: label_smoothing must be between 0.0 and 1.0, got "
                            f"{label_smoothing}")
    x = _float_input(input, name)
    x3, target_shape = _class_layout(x, name)
    n, n_classes, m = x3.shape
    dtype = x.dtype
    weight = _class_weight(weight, n_classes, dtype, name)
    log_p = _log_softmax_classes(x3)                                       # (n, C, m)
    target = np.asarray(target)
    smooth = label_smoothing / n_classes
    if target.shape == x.shape and x.ndim > 0:                           # probabilities
        if not np.issubdtype(target.dtype, np.floating):
            raise DTypeError(f"{name}: a target of the input's shape {x.shape} holds class "
                             f"probabilities and must be floating point, got dtype "
                             f"{target.dtype} (class indices have shape {target_shape})")
        coeff = target.astype(dtype).reshape(x3.shape)                    # a[i, c], a copy
        if label_smoothing:
            coeff *= 1 - label_smoothing
            coeff += smooth
        if weight is not None:
            coeff *= weight[:, None]
        losses = -np.einsum("icj,icj->ij", coeff, log_p)                  # (n, m)
        denom = dtype.type(n * m)
        cache = dict(kind="probabilities", coeff=coeff)
    else:
        labels, valid = _class_indices(target, target_shape, x.shape, n_classes, ignore_index,
                                       name, probabilities=True)
        w_y = valid.astype(dtype) if weight is None else weight[labels] * valid   # (n, m)
        losses = -(1 - label_smoothing) * w_y * _pick(log_p, labels)
        if label_smoothing:
            if weight is None:
                smooth_terms = log_p.sum(axis=1)                            # (n, m)
            else:
                smooth_terms = np.einsum("c,icj->ij", weight, log_p)
            losses -= smooth * smooth_terms * valid
        denom = w_y.sum()
        cache = dict(kind="indices", labels=labels, valid=valid, w_y=w_y, weight=weight)
    cache.update(log_p=log_p, denom=denom, reduction=reduction, shape=x.shape,
                 loss_shape=target_shape, label_smoothing=label_smoothing)
    return _reduce(losses, reduction, denom, target_shape, dtype), cache


def cross_entropy_backward(grad, cache):
    """``d loss / d x[i, k] = scale_i * (p[i, k] * sum_c a[i, c] - a[i, k])`` (module docstring)."""
    log_p = cache["log_p"]
    n, n_classes, m = log_p.shape
    dtype = log_p.dtype
    scale = _element_scale(grad, cache["reduction"], cache["denom"], cache["loss_shape"], dtype,
                           "CrossEntropyLoss").reshape(n, m)
    grad_in = np.exp(log_p)                                                  # p, (n, C, m)
    if cache["kind"] == "probabilities":
        coeff = cache["coeff"]
        grad_in *= (scale * coeff.sum(axis=1))[:, None, :]
        grad_in -= coeff * scale[:, None, :]
        return grad_in.reshape(cache["shape"])
    eps = cache["label_smoothing"]
    labels, valid, w_y, weight = cache["labels"], cache["valid"], cache["w_y"], cache["weight"]
    scale = np.where(valid, scale, 0)                    # ignored: 0, even when the mean is nan
    smooth = eps / n_classes
    weight_total = n_classes if weight is None else weight.sum()
    total = (1 - eps) * w_y + smooth * weight_total * valid                  # sum_c a[i, c]
    grad_in *= (scale * total)[:, None, :]
    grad_in[np.arange(n)[:, None], labels, np.arange(m)[None, :]] -= (1 - eps) * w_y * scale
    if eps:
        class_w = np.ones(n_classes, dtype=dtype) if weight is None else weight
        grad_in -= smooth * class_w[None, :, None] * scale[:, None, :]
    return grad_in.reshape(cache["shape"])


def cross_entropy(input, target, weight=None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """Cross-entropy of logits. See ``torch.nn.functional.cross_entropy``."""
    return cross_entropy_forward(input, target, weight, ignore_index=ignore_index,
                                 reduction=reduction, label_smoothing=label_smoothing)[0]


# -- mean squared error -------------------------------------------------------------------------
def _same_shape_target(x: np.ndarray, target, name: str) -> np.ndarray:
    target = np.asarray(target)
    if target.shape != x.shape:
        raise ShapeError(f"{name}: the target must have the input's shape {x.shape}, got "
                         f"{target.shape} (no broadcasting: it usually hides a bug)")
    if not (np.issubdtype(target.dtype, np.number) or target.dtype == bool):
        raise DTypeError(f"{name}: expected a numeric target, got dtype {target.dtype}")
    return target.astype(x.dtype, copy=False)


def mse_loss_forward(input, target, *, reduction: str = "mean"):
    """``loss_i = (input_i - target_i)^2``; ``'mean'`` divides by the number of elements."""
    name = "MSELoss"
    check_reduction(reduction, name)
    x = _float_input(input, name)
    diff = np.subtract(x, _same_shape_target(x, target, name))
    losses = np.square(diff)
    cache = dict(diff=diff, reduction=reduction, denom=x.dtype.type(x.size))
    return _reduce(losses, reduction, cache["denom"], x.shape, x.dtype), cache


def mse_loss_backward(grad, cache):
    """``d loss / d input_i = 2 (input_i - target_i)`` times the upstream scale."""
    diff = cache["diff"]
    scale = _element_scale(grad, cache["reduction"], cache["denom"], diff.shape, diff.dtype,
                           "MSELoss")
    grad_in = np.multiply(diff, scale)
    grad_in *= 2
    return grad_in


def mse_loss(input, target, *, reduction: str = "mean"):
    """Mean squared error. See ``torch.nn.functional.mse_loss``."""
    return mse_loss_forward(input, target, reduction=reduction)[0]


# -- binary cross-entropy from logits -----------------------------------------------------------
def _broadcast_to_input(value, shape: tuple[int, ...], dtype, what: str, name: str):
    if value is None:
        return None
    value = np.asarray(value)
    try:
        np.broadcast_shapes(value.shape, shape)
    except ValueError:
        raise ShapeError(f"{name}: {what} of shape {value.shape} does not broadcast to the "
                         f"input's shape {shape}") from None
    if np.broadcast_shapes(value.shape, shape) != shape:
        raise ShapeError(f"{name}: {what} of shape {value.shape} would enlarge the input's shape "
                         f"{shape}")
    return value.astype(dtype, copy=False)


def binary_cross_entropy_with_logits_forward(input, target, weight=None, *,
                                             reduction: str = "mean", pos_weight=None):
    """``loss_i = w_i * [(1 - t_i) x_i + l_i * softplus(-x_i)]``, ``l_i = 1 + (pw - 1) t_i``.

    ``softplus(-x) = -log(sigmoid(x)) = max(-x, 0) + log1p(exp(-|x|))``, stable for any ``x``.

    Args:
        input: logits, any shape.
        target: the input's shape, values in ``[0, 1]``.
        weight: rescaling weight broadcast to the input's shape, or ``None``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Default: ``'mean'``.
        pos_weight: weight of the positive examples, broadcast along the last axis (one per
            class), or ``None``.
    """
    name = "BCEWithLogitsLoss"
    check_reduction(reduction, name)
    x = _float_input(input, name)
    t = _same_shape_target(x, target, name)
    weight = _broadcast_to_input(weight, x.shape, x.dtype, "weight", name)
    pos_weight = _broadcast_to_input(pos_weight, x.shape, x.dtype, "pos_weight", name)
    softplus_neg = np.abs(x)                               # softplus(-x) = -log(sigmoid(x))
    np.negative(softplus_neg, out=softplus_neg)
    np.exp(softplus_neg, out=softplus_neg)
    np.log1p(softplus_neg, out=softplus_neg)
    softplus_neg += np.maximum(np.negative(x), 0)
    log_weight = None if pos_weight is None else 1 + (pos_weight - 1) * t
    losses = (1 - t) * x
    losses += softplus_neg if log_weight is None else log_weight * softplus_neg
    if weight is not None:
        losses *= weight
    cache = dict(x=x, t=t, weight=weight, pos_weight=pos_weight, log_weight=log_weight,
                 reduction=reduction, denom=x.dtype.type(x.size))
    return _reduce(losses, reduction, cache["denom"], x.shape, x.dtype), cache


def binary_cross_entropy_with_logits_backward(grad, cache):
    """``d loss_i / d x_i = w_i * (l_i * sigmoid(x_i) - pw * t_i)`` (``sigmoid(x) - t`` plain)."""
    x, t = cache["x"], cache["t"]
    scale = _element_scale(grad, cache["reduction"], cache["denom"], x.shape, x.dtype,
                           "BCEWithLogitsLoss")
    grad_in = sigmoid(x)
    if cache["pos_weight"] is None:
        grad_in -= t
    else:
        grad_in *= cache["log_weight"]
        grad_in -= cache["pos_weight"] * t
    if cache["weight"] is not None:
        grad_in *= cache["weight"]
    grad_in *= scale
    return grad_in


def binary_cross_entropy_with_logits(input, target, weight=None, *, reduction: str = "mean",
                                     pos_weight=None):
    """Binary cross-entropy of logits. See
    ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    return binary_cross_entropy_with_logits_forward(input, target, weight, reduction=reduction,
                                                    pos_weight=pos_weight)[0]
