"""RMSprop and Adagrad: per-coordinate step sizes from running sums of squared gradients."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_nonnegative

__all__ = ["RMSprop", "Adagrad"]


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, Lecture 6e of "Neural Networks for Machine Learning"), step for step
    ``torch.optim.RMSprop``.

    For each parameter :math:`\theta` with gradient :math:`g_t`:

    .. math::

        g_t &\leftarrow -g_t \ \text{if maximize}; \qquad
            g_t \leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &\leftarrow \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \tilde v_t &\leftarrow v_t - \bar g_t^2, \quad
            \bar g_t \leftarrow \alpha \bar g_{t-1} + (1 - \alpha) g_t
            \quad \text{if centered, else } \tilde v_t = v_t \\
        b_t &\leftarrow \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon), \quad
            \theta_t \leftarrow \theta_{t-1} - \gamma b_t
            \quad \text{if } \mu > 0, \ \text{else} \quad
            \theta_t \leftarrow \theta_{t-1} - \gamma g_t / (\sqrt{\tilde v_t} + \epsilon)

    with :math:`v_0 = \bar g_0 = b_0 = 0`.

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate :math:`\gamma` (>= 0). Default: 1e-2.
        alpha: smoothing constant :math:`\alpha` (>= 0). Default: 0.99.
        eps: :math:`\epsilon` added to the denominator (>= 0). Default: 1e-8.
        weight_decay: :math:`\lambda` (>= 0). Default: 0.
        momentum: :math:`\mu` (>= 0). Default: 0.
        centered: normalise by an estimate of the gradient's variance. Default: False.
        maximize: ascend the objective. Default: False.

    State per parameter: ``"step"``, ``"square_avg"`` (:math:`v`), with momentum
    ``"momentum_buffer"`` (:math:`b`), when centered ``"grad_avg"`` (:math:`\bar g`).

    https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group):
        for key, label in (("lr", "learning rate lr"), ("alpha", "alpha"), ("eps", "epsilon eps"),
                           ("weight_decay", "weight_decay"), ("momentum", "momentum")):
            check_nonnegative("RMSprop", label, group[key])

    def _step_group(self, group):
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        weight_decay, momentum = float(group["weight_decay"]), float(group["momentum"])
        centered, maximize = bool(group["centered"]), bool(group["maximize"])
        for param, grad in self._params_with_grad(group):
            p = param.data
            state = self.state[param]
            if not state:
                state["step"] = 0
                state["square_avg"] = np.zeros_like(p)
                if momentum > 0:
                    state["momentum_buffer"] = np.zeros_like(p)
                if centered:
                    state["grad_avg"] = np.zeros_like(p)
            state["step"] += 1
            d = self._effective_grad(p, grad, weight_decay, maximize)
            square_avg = self._state_array(param, "square_avg")
            square_avg *= alpha                                   # v <- alpha v + (1-alpha) g^2
            square_avg += (1 - alpha) * d * d
            if centered:
                grad_avg = self._state_array(param, "grad_avg")
                grad_avg += (d - grad_avg) * p.dtype.type(1 - alpha)   # lerp towards g
                avg = np.sqrt(square_avg - grad_avg * grad_avg)
            else:
                avg = np.sqrt(square_avg)
            avg += eps
            if momentum > 0:
                buf = self._state_array(param, "momentum_buffer")
                buf *= momentum
                buf += d / avg
                p -= lr * buf
            else:
                p -= lr * (d / avg)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan and Singer, JMLR 2011), step for step ``torch.optim.Adagrad``.

    .. math::

        g_t &\leftarrow -g_t \ \text{if maximize}; \qquad
            g_t \leftarrow g_t + \lambda \theta_{t-1} \\
        \tilde\gamma_t &\leftarrow \gamma / (1 + (t - 1)\,\eta) \\
        s_t &\leftarrow s_{t-1} + g_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t \, g_t / (\sqrt{s_t} + \epsilon)

    with :math:`s_0` = ``initial_accumulator_value``.

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate :math:`\gamma` (>= 0). Default: 1e-2.
        lr_decay: :math:`\eta` (>= 0). Default: 0.
        weight_decay: :math:`\lambda` (>= 0). Default: 0.
        initial_accumulator_value: :math:`s_0` (>= 0). Default: 0.
        eps: :math:`\epsilon` added to the denominator (>= 0). Default: 1e-10.
        maximize: ascend the objective. Default: False.

    State per parameter: ``"step"`` and ``"sum"`` (:math:`s`).

    https://pytorch.org/docs/stable/generated/torch.optim.Adagrad.html
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *,
                 maximize: bool = False):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group):
        for key, label in (("lr", "learning rate lr"), ("lr_decay", "lr_decay"),
                           ("weight_decay", "weight_decay"), ("eps", "epsilon eps"),
                           ("initial_accumulator_value", "initial_accumulator_value")):
            check_nonnegative("Adagrad", label, group[key])

    def _step_group(self, group):
        lr, lr_decay, eps = float(group["lr"]), float(group["lr_decay"]), float(group["eps"])
        weight_decay, maximize = float(group["weight_decay"]), bool(group["maximize"])
        for param, grad in self._params_with_grad(group):
            p = param.data
            state = self.state[param]
            if not state:
                state["step"] = 0
                state["sum"] = np.full_like(p, group["initial_accumulator_value"])
            state["step"] += 1
            d = self._effective_grad(p, grad, weight_decay, maximize)
            clr = lr / (1 + (state["step"] - 1) * lr_decay)
            total = self._state_array(param, "sum")
            total += d * d
            std = np.sqrt(total)
            std += eps
            p -= clr * (d / std)
