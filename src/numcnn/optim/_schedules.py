"""Warm-up and one-cycle schedules: LinearLR, LambdaLR, OneCycleLR and SequentialLR.

Re-exported by :mod:`numcnn.optim.lr_scheduler`, where they belong; the formulas and the order of
their floating-point operations are PyTorch's (torch 2.13), so learning rates (and OneCycleLR's
momenta) agree with ``torch.optim.lr_scheduler`` step for step.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from numbers import Real
from typing import Any, Callable

from .._text import count
from ..errors import ArgumentError, ArgumentTypeError
from .lr_scheduler import LRScheduler, ReduceLROnPlateau, _check_positive_int
from .optimizer import Optimizer

__all__ = ["LinearLR", "LambdaLR", "OneCycleLR", "SequentialLR"]


class LinearLR(LRScheduler):
    r"""Scale the learning rate by a factor moving linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps (a warm-up when ``start_factor < 1``), then hold it.

    .. math::
        \eta_e = \eta_{\text{base}} \left(s + (f - s) \frac{\min(e, T)}{T}\right)

    computed recursively from the current rate as PyTorch does.

    Args:
        optimizer: the wrapped optimizer.
        start_factor: factor at epoch 0, in ``(0, 1]``. Default: ``1/3``.
        end_factor: factor from epoch ``total_iters`` on, in ``[0, 1]``. Default: ``1.0``.
        total_iters: steps of the ramp (positive int). Default: 5.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.LinearLR.html
    """

    _state_keys = LRScheduler._state_keys + ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if not (isinstance(start_factor, Real) and 0 < start_factor <= 1):
            raise ArgumentError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        if not (isinstance(end_factor, Real) and 0 <= end_factor <= 1):
            raise ArgumentError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        _check_positive_int("LinearLR", "total_iters", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        ratio = 1.0 + (self.end_factor - self.start_factor) / (
            self.total_iters * self.start_factor
            + (self.last_epoch - 1) * (self.end_factor - self.start_factor))
        return [lr * ratio for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class LambdaLR(LRScheduler):
    r"""The learning rate of epoch ``e`` is ``base_lr * lr_lambda(e)``.

    Args:
        optimizer: the wrapped optimizer.
        lr_lambda: a function of the epoch index giving the factor, or a list of such functions,
            one per parameter group.
        last_epoch: index of the last epoch. Default: -1.

    ``state_dict`` keeps no functions (as PyTorch keeps none that are plain functions): build the
    scheduler with the same ``lr_lambda`` before loading a state.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.LambdaLR.html
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list,
                 last_epoch: int = -1):
        groups = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ArgumentError(f"LambdaLR: expected {groups} lr_lambdas (one per parameter "
                                    f"group), but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * groups
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise ArgumentTypeError(f"LambdaLR: lr_lambda must be callable, got {fn!r}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * fn(self.last_epoch)
                for fn, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class OneCycleLR(LRScheduler):
    r"""The one-cycle policy (Smith and Topin, arXiv:1708.07120), stepped once per batch.

    The learning rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of ``total_steps``, then anneals to ``initial_lr / final_div_factor`` (with
    ``three_phase``, it first falls back to the initial rate, symmetrically). Each phase
    interpolates by ``anneal_strategy``: ``"cos"``, ``end + (start - end) / 2 * (1 + cos(pi *
    pct))``, or ``"linear"``. With ``cycle_momentum`` the optimizer's momentum (or Adam's
    ``beta1``) moves inversely, between ``max_momentum`` and ``base_momentum``.

    Args:
        optimizer: the wrapped optimizer.
        max_lr: the peak learning rate, one number or one per group.
        total_steps: steps in the cycle; else ``epochs * steps_per_epoch``.
        epochs, steps_per_epoch: see ``total_steps``.
        pct_start: fraction of the cycle spent rising (a float in [0, 1]). Default: 0.3.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum: cycle the momentum too. Default: True.
        base_momentum, max_momentum: the momentum's range. Default: 0.85, 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: the three-phase variant. Default: False.
        last_epoch: index of the last step. Default: -1.

    Raises:
        ValueError: for a bad argument, an optimizer without momentum or betas when
            ``cycle_momentum``, or a step beyond ``total_steps``.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.OneCycleLR.html
    """

    _state_keys = LRScheduler._state_keys + ("total_steps", "cycle_momentum", "use_beta1",
                                             "_anneal_func_type", "_schedule_phases")

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise ArgumentTypeError(f"OneCycleLR: {type(optimizer).__name__} is not a numcnn "
                                    f"Optimizer")
        if total_steps is not None:
            _check_positive_int("OneCycleLR", "total_steps", total_steps)
            self.total_steps = int(total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            _check_positive_int("OneCycleLR", "epochs", epochs)
            _check_positive_int("OneCycleLR", "steps_per_epoch", steps_per_epoch)
            self.total_steps = int(epochs) * int(steps_per_epoch)
        else:
            raise ArgumentError("OneCycleLR: give either total_steps or (epochs and "
                                "steps_per_epoch)")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ArgumentError(f"OneCycleLR: pct_start must be a float in [0, 1], got "
                                f"{pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ArgumentError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                                f"{anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        total = self.total_steps
        if three_phase:
            self._schedule_phases = [
                dict(end_step=float(pct_start * total) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * total) - 2, start_lr="max_lr",
                     end_lr="initial_lr", start_momentum="base_momentum",
                     end_momentum="max_momentum"),
                dict(end_step=total - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum"),
            ]
        else:
            self._schedule_phases = [
                dict(end_step=float(pct_start * total) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=total - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
            ]
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for peak, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = False
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ArgumentError("OneCycleLR: the optimizer must have a momentum or betas with "
                                    "cycle_momentum=True (pass cycle_momentum=False)")
            self.use_beta1 = "betas" in optimizer.defaults
            max_momenta = _per_group("max_momentum", optimizer, max_momentum)
            base_momenta = _per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for top, base, group in zip(max_momenta, base_momenta, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (top, *group["betas"][1:])
                    else:
                        group["momentum"] = top
                    group["max_momentum"] = top
                    group["base_momentum"] = base
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ArgumentError(f"OneCycleLR: tried to step {count(step, 'time')}; the specified "
                                f"number of total steps is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for index, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or index == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


def _per_group(name: str, optimizer: Optimizer, value) -> list:
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ArgumentError(f"OneCycleLR: expected {count(groups, 'value')} for {name} "
                                f"(one per parameter group), got {len(value)}")
        return list(value)
    return [value] * groups


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the epochs in ``milestones``: e.g.
    a linear warm-up then a cosine decay::

        warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
        cosine = CosineAnnealingLR(opt, T_max=95)
        schedule = SequentialLR(opt, [warmup, cosine], milestones=[5])

    At a milestone the next scheduler starts from its epoch 0 (its closed form, as PyTorch).

    Args:
        optimizer: the wrapped optimizer (every scheduler's).
        schedulers: the schedulers, in order (not :class:`ReduceLROnPlateau`).
        milestones: ``len(schedulers) - 1`` increasing epoch indices.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.SequentialLR.html
    """

    def __init__(self, optimizer: Optimizer, schedulers: list, milestones: list[int],
                 last_epoch: int = -1):
        if len(schedulers) < 1:
            raise ArgumentError("SequentialLR expects at least one scheduler, but got none")
        for index, scheduler in enumerate(schedulers):
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ArgumentError(f"SequentialLR does not support ReduceLROnPlateau (it needs a "
                                    f"metric at each step), got one at index {index}")
            if not isinstance(scheduler, LRScheduler):
                raise ArgumentTypeError(f"SequentialLR: the scheduler at index {index} is a "
                                        f"{type(scheduler).__name__}, not a numcnn LRScheduler")
            if scheduler.optimizer is not optimizer:
                raise ArgumentError(f"SequentialLR expects all schedulers to belong to the same "
                                    f"optimizer, but the one at index {index} does not")
        if len(milestones) != len(schedulers) - 1:
            raise ArgumentError(f"SequentialLR expects one milestone fewer than schedulers, got "
                                f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self._step_count = 0
        self._is_initial = False
        for group in optimizer.param_groups:          # back to the initial rates
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:            # undo each scheduler's initial step
            scheduler.last_epoch -= 1
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._step_count = 0                         # its initial step, alone
        first._is_initial = True
        try:
            first.step()
        finally:
            first._is_initial = False
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler.last_epoch = 0                  # a fresh start, in closed form
            closed_form = getattr(scheduler, "_get_closed_form_lr", None)
            values = closed_form() if closed_form is not None else scheduler.get_lr()
            for group, lr in zip(self.optimizer.param_groups, values, strict=True):
                group["lr"] = lr
            scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return dict(last_epoch=self.last_epoch, _milestones=list(self._milestones),
                    _last_lr=list(self._last_lr),
                    _schedulers=[s.state_dict() for s in self._schedulers])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = state_dict["last_epoch"]
        self._milestones = list(state_dict["_milestones"])
        self._last_lr = list(state_dict["_last_lr"])
        for scheduler, state in zip(self._schedulers, state_dict["_schedulers"], strict=True):
            scheduler.load_state_dict(state)
