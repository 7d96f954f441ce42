"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from .optimizer import Optimizer, check_nonnegative

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent (optionally with momentum), step for step ``torch.optim.SGD``.

    For each parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t`:

    .. math::

        g_t &\leftarrow -g_t \quad \text{if maximize} \\
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad \text{(weight decay } \lambda) \\
        b_t &\leftarrow \begin{cases} g_t & t = 1 \\
                                      \mu b_{t-1} + (1 - \tau) g_t & t > 1 \end{cases}
              \quad \text{(momentum } \mu \ne 0 \text{, dampening } \tau) \\
        g_t &\leftarrow g_t + \mu b_t \ \text{ if nesterov, else } \ b_t \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma g_t \quad \text{(learning rate } \gamma)

    The first momentum buffer is the gradient itself (no dampening), as in PyTorch.

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate :math:`\gamma` (>= 0). Default: 1e-3.
        momentum: momentum factor :math:`\mu` (>= 0). Default: 0.
        dampening: dampening :math:`\tau` of the momentum. Default: 0.
        weight_decay: L2 penalty :math:`\lambda` (>= 0). Default: 0.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
            Default: False.
        maximize: ascend the objective instead of descending it. Default: False.

    State per parameter (with momentum): ``"momentum_buffer"`` (parameter shape and dtype).

    Every update is done in place on ``param.data``, in the parameter's dtype, with scratch
    arrays reused from step to step.

    https://pytorch.org/docs/stable/generated/torch.optim.SGD.html
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group):
        check_nonnegative("SGD", "learning rate lr", group["lr"])
        check_nonnegative("SGD", "momentum", group["momentum"])
        check_nonnegative("SGD", "weight_decay", group["weight_decay"])
        check_nonnegative("SGD", "dampening", group["dampening"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ArgumentError("SGD: Nesterov momentum requires a momentum > 0 and zero "
                                "dampening, "
                                f"got momentum={group['momentum']!r}, "
                                f"dampening={group['dampening']!r}")

    def _step_group(self, group):
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        nesterov = bool(group["nesterov"])
        maximize = bool(group["maximize"])

        for param, grad in self._params_with_grad(group):
            data = param.data
            arrays = [data, grad]
            first_step = False
            if momentum != 0:
                state = self.state[param]
                if "momentum_buffer" not in state:
                    # b_1 = d_1: filled block by block below
                    state["momentum_buffer"] = np.empty_like(data)
                    first_step = True
                arrays.append(self._state_array(param, "momentum_buffer"))
            for blocks in self._blocks(*arrays):
                self._update(blocks, lr, momentum, dampening, weight_decay, nesterov, maximize,
                             first_step)

    def _update(self, blocks, lr, momentum, dampening, weight_decay, nesterov, maximize,
                first_step):
        """One block of the update: ``blocks`` is ``[param, grad]`` (+ ``[momentum_buffer]``)."""
        p, grad = blocks[0], blocks[1]
        update = self._work(p, 0)
        d = self._effective_grad(p, grad, weight_decay, maximize)

        if momentum != 0:
            buf = blocks[2]
            if first_step:
                np.copyto(buf, d)
            else:
                buf *= momentum
                if dampening == 0:
                    buf += d
                else:
                    scaled = self._work(p, 1)
                    np.multiply(d, 1 - dampening, out=scaled)
                    buf += scaled
            if nesterov:
                # d + momentum * buf, built in the scratch array
                scaled = self._work(p, 1)
                np.multiply(buf, momentum, out=scaled)
                np.add(d, scaled, out=update)
                d = update
            else:
                d = buf

        # param <- param - lr * d
        if d is update:
            update *= lr
        else:
            np.multiply(d, lr, out=update)
        p -= update
