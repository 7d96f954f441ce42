"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

from numbers import Real

import numpy as np

from ..errors import ArgumentError
from .optimizer import Optimizer, check_nonnegative

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam, step for step ``torch.optim.Adam``.

    For each parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t = 1, 2, \dots`:

    .. math::

        g_t &\leftarrow -g_t \quad \text{if maximize} \\
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\, \theta_{t-1}
            \quad \text{if decoupled weight decay (AdamW), else} \quad
            g_t \leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &\leftarrow \max(\hat v_{t-1}, v_t) \ \text{ if amsgrad, else } \ v_t \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \,
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = \hat v_0 = 0`. The operations and their order are PyTorch's (the first
    moment is a ``lerp`` towards the gradient, the bias corrections are Python floats), so results
    agree to rounding: ~1e-15 relative per step in float64.

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate :math:`\gamma` (>= 0). Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default: (0.9, 0.999).
        eps: :math:`\epsilon` added to the denominator (>= 0). Default: 1e-8.
        weight_decay: :math:`\lambda` (>= 0). Default: 0.
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad). Default: False.
        maximize: ascend the objective instead of descending it. Default: False.
        decoupled_weight_decay: decay the weights directly (AdamW) instead of adding
            :math:`\lambda\theta` to the gradient. Default: False.

    State per parameter: ``"step"`` (int), ``"exp_avg"`` (:math:`m`), ``"exp_avg_sq"``
    (:math:`v`) and, with amsgrad, ``"max_exp_avg_sq"`` (:math:`\hat v`); arrays of the
    parameter's shape and dtype, updated in place.

    https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False):
        defaults = dict(lr=lr, betas=_as_pair(type(self).__name__, betas), eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate(self, group):
        name = type(self).__name__
        check_nonnegative(name, "learning rate lr", group["lr"])
        check_nonnegative(name, "epsilon eps", group["eps"])
        check_nonnegative(name, "weight_decay", group["weight_decay"])
        group["betas"] = betas = _as_pair(name, group["betas"])
        for index, beta in enumerate(betas):
            if isinstance(beta, bool) or not isinstance(beta, Real) or not 0.0 <= beta < 1.0:
                raise ArgumentError(f"{name}: invalid beta parameter at index {index}: {beta!r} "
                                    f"(must be in [0, 1))")

    def _step_group(self, group):
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        amsgrad = bool(group["amsgrad"])
        maximize = bool(group["maximize"])
        decoupled = bool(group["decoupled_weight_decay"])

        for param, grad in self._params_with_grad(group):
            data = param.data
            state = self.state[param]
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(data)
                state["exp_avg_sq"] = np.zeros_like(data)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = np.zeros_like(data)
            arrays = [data, grad, self._state_array(param, "exp_avg"),
                      self._state_array(param, "exp_avg_sq")]
            if amsgrad:
                arrays.append(self._state_array(param, "max_exp_avg_sq"))
            state["step"] += 1
            step = state["step"]
            # scalars of this step, as Python floats (cast to the parameter dtype by NumPy)
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2 ** 0.5
            lerp_weight = data.dtype.type(1 - beta1)
            decay = 1 - lr * weight_decay if decoupled and weight_decay != 0 else None

            for blocks in self._blocks(*arrays):
                p, grad_block, exp_avg, exp_avg_sq = blocks[:4]
                work = self._work(p, 0)
                tmp = self._work(p, 1)
                if decay is not None:  # AdamW: the decay shrinks the weights, not the gradient
                    p *= decay
                d = self._effective_grad(p, grad_block, 0 if decay is not None else weight_decay,
                                         maximize)

                # m <- lerp(m, d, 1 - beta1), in PyTorch's two forms of lerp
                np.subtract(d, exp_avg, out=tmp)
                if abs(lerp_weight) < 0.5:
                    tmp *= lerp_weight
                    exp_avg += tmp
                else:
                    tmp *= lerp_weight - 1
                    np.add(d, tmp, out=exp_avg)
                # v <- beta2 * v + (1 - beta2) * d * d
                exp_avg_sq *= beta2
                np.multiply(d, 1 - beta2, out=tmp)
                tmp *= d
                exp_avg_sq += tmp

                if amsgrad:
                    second = blocks[4]
                    np.maximum(second, exp_avg_sq, out=second)
                else:
                    second = exp_avg_sq
                # denominator sqrt(v) / sqrt(1 - beta2^t) + eps, in tmp
                np.sqrt(second, out=tmp)
                tmp /= bias_correction2_sqrt
                tmp += eps
                # param <- param + (-step_size) * m / denominator (d is no longer needed)
                np.multiply(exp_avg, -step_size, out=work)
                work /= tmp
                p += work


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, step for step ``torch.optim.AdamW``.

    Each step first shrinks the weights, :math:`\theta \leftarrow (1 - \gamma\lambda)\theta`, then
    takes the Adam step without weight decay in the gradient (see :class:`Adam` for the formula).

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate :math:`\gamma` (>= 0). Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default: (0.9, 0.999).
        eps: :math:`\epsilon` (>= 0). Default: 1e-8.
        weight_decay: decoupled weight decay :math:`\lambda` (>= 0). Default: 1e-2.
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad). Default: False.
        maximize: ascend the objective instead of descending it. Default: False.

    https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _as_pair(name: str, betas) -> tuple:
    try:
        pair = tuple(betas)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise ArgumentError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    return pair
