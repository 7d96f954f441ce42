"""Gradient clipping, as ``torch.nn.utils``: call between ``backward`` and ``optimizer.step()``.

>>> model.backward(criterion.backward())
>>> nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
>>> opt.step()
"""

from __future__ import annotations

import math

import numpy as np

from .._text import a
from ..errors import ArgumentError, NumcnnError
from .module import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]


def _grads(parameters) -> list[np.ndarray]:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    grads = []
    for param in parameters:
        if not isinstance(param, Parameter):
            raise NumcnnError(f"gradient clipping takes numcnn Parameters (model.parameters()), "
                              f"got {a(type(param).__name__)}")
        if param.grad is not None:
            grads.append(param.grad)
    return grads


def get_total_norm(grads, norm_type: float = 2.0) -> float:
    """The ``norm_type``-norm of all the arrays ``grads`` together, as if concatenated:
    ``(sum_i ||g_i||_p^p)^(1/p)``, or the largest ``|g|`` for ``norm_type=inf``."""
    norm_type = float(norm_type)
    if not grads:
        return 0.0
    if norm_type == math.inf:
        return float(max(np.max(np.abs(g)) if g.size else 0.0 for g in grads))
    if norm_type <= 0:
        raise ArgumentError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    norms = np.array([np.linalg.norm(g.reshape(-1).astype(np.float64), ord=norm_type)
                      for g in grads])
    return float(np.linalg.norm(norms, ord=norm_type))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Scale all gradients together so that their total norm is at most ``max_norm``, in place.

    .. math::
        \text{total} = \Big(\sum_i \lVert g_i \rVert_p^p\Big)^{1/p}, \qquad
        g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{\text{max\_norm}}{\text{total} + 10^{-6}}\Big)

    Args:
        parameters: an iterable of :class:`Parameter` (or one).
        max_norm: the largest total norm allowed.
        norm_type: ``p`` (a positive number or ``float("inf")``). Default: 2.
        error_if_nonfinite: raise if the total norm is NaN or infinite (else the gradients are
            scaled by a NaN factor, as PyTorch). Default: False.

    Returns:
        The total norm of the gradients before clipping (a float).

    Raises:
        NumcnnError: with ``error_if_nonfinite`` and a non-finite total norm.

    https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
    """
    grads = _grads(parameters)
    total = get_total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise NumcnnError(f"clip_grad_norm_: the total norm of order {float(norm_type)} of the "
                          f"gradients is non-finite ({total}), so it cannot be clipped; pass "
                          f"error_if_nonfinite=False to scale them anyway")
    coef = min(float(max_norm) / (total + 1e-6), 1.0) if math.isfinite(total) else \
        float(max_norm) / (total + 1e-6)
    for grad in grads:
        grad *= grad.dtype.type(coef)
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]``, in place.

    https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_value_.html
    """
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ArgumentError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for grad in _grads(parameters):
        np.clip(grad, -clip_value, clip_value, out=grad)
