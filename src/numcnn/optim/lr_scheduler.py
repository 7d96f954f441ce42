"""Learning-rate schedules, stepped once per epoch as in ``torch.optim.lr_scheduler``.

A scheduler changes ``group["lr"]`` of every parameter group of its optimizer. Call
``scheduler.step()`` after ``optimizer.step()`` (once per epoch, or per batch for per-iteration
schedules); :class:`ReduceLROnPlateau` takes the monitored metric, ``scheduler.step(val_loss)``.
The formulas and their order of floating-point operations are PyTorch's, so the learning rates
agree with ``torch.optim.lr_scheduler`` to the last bit.

``state_dict()`` returns plain numbers, lists and strings (JSON-friendly; ``best`` of
:class:`ReduceLROnPlateau` may be ``inf``); ``load_state_dict()`` restores it, and also takes the
state dict of the PyTorch scheduler of the same name.

https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections import Counter
from numbers import Integral, Real
from typing import Any, Iterable

from ..errors import ArgumentError, ArgumentTypeError, StateKeyError
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "ReduceLROnPlateau"]

_EPOCH_DEPRECATION = ("passing an epoch to scheduler.step() is deprecated (as in PyTorch); the "
                      "closed form of the schedule is used. Call scheduler.step() once per epoch.")


class LRScheduler:
    """Base class of the epoch-indexed schedules, in the manner of ``torch.optim.lr_scheduler``.

    On construction (``last_epoch=-1``) each group's current ``lr`` is recorded as
    ``group["initial_lr"]`` (the schedule's ``base_lrs``) and the scheduler takes its step 0.
    Each :meth:`step` then advances ``last_epoch`` by one and sets every group's ``lr`` to
    :meth:`get_lr`. Subclasses implement :meth:`get_lr` (the chainable form, from the current
    ``lr``) and may implement ``_get_closed_form_lr`` (from ``base_lrs`` and ``last_epoch``).

    Args:
        optimizer: the :class:`~numcnn.optim.Optimizer` whose learning rates it sets.
        last_epoch: index of the last epoch; ``-1`` starts a fresh schedule. A value >= 0
            resumes one, and needs ``"initial_lr"`` in every group (from a loaded optimizer).
    """

    # attributes of the state dict that hold plain values (subclasses add theirs)
    _state_keys = ("base_lrs", "last_epoch", "_step_count", "_last_lr")

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise ArgumentTypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not a "
                                    f"numcnn Optimizer")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, Integral) or last_epoch < -1:
            raise ArgumentError(f"{type(self).__name__}: last_epoch must be an int >= -1, "
                                f"got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for number, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise StateKeyError(f"{type(self).__name__}: param 'initial_lr' is not "
                                        "specified "
                                        f"in param_groups[{number}] when resuming a scheduler with "
                                        f"last_epoch={last_epoch}; load the optimizer's state dict "
                                        f"first, or start with last_epoch=-1")
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for epoch ``last_epoch`` (called by :meth:`step`).

        To read the current learning rates use :meth:`get_last_lr`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement get_lr")

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group, as set by the last :meth:`step`."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule one epoch and set each group's ``lr``.

        Call it after ``optimizer.step()``. ``epoch`` (deprecated, as in PyTorch) jumps to that
        epoch using the closed form.
        """
        if self._step_count == 1 and _optimizer_never_stepped(self.optimizer):
            warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                          "Call them in the opposite order: `optimizer.step()` before "
                          "`lr_scheduler.step()`, or the first value of the learning rate "
                          "schedule is skipped.", UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
            self.last_epoch = int(epoch)
            closed_form = getattr(self, "_get_closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    # -- state dict -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The schedule's state as plain numbers and lists (the optimizer is not included)."""
        state = {}
        for key in self._state_keys:
            value = getattr(self, key)
            state[key] = list(value) if isinstance(value, (list, tuple)) else value
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (or from the PyTorch scheduler of this name).

        Keys this scheduler does not keep (PyTorch's private flags) are ignored.
        """
        if not isinstance(state_dict, dict):
            raise ArgumentTypeError(f"{type(self).__name__}.load_state_dict expects a dict, "
                                    f"got {type(state_dict).__name__}")
        missing = [key for key in self._state_keys if key not in state_dict]
        if missing:
            raise StateKeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}")
        for key in self._state_keys:
            value = state_dict[key]
            setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)
        self._after_load()

    def _after_load(self) -> None:
        """Rebuild derived attributes after loading (subclasses override)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


def _optimizer_never_stepped(optimizer: Optimizer) -> bool:
    # Only the base Optimizer.step counts steps; a subclass with its own step() is not judged.
    return type(optimizer).step is Optimizer.step and optimizer._step_count == 0


def _check_positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise ArgumentError(f"{owner}: {name} must be a positive int, got {value!r}")


def _check_gamma(owner: str, gamma) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not gamma >= 0:
        raise ArgumentError(f"{owner}: gamma must be a number >= 0, got {gamma!r}")


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    .. math:: \text{lr}_e = \text{base\_lr} \cdot \gamma^{\lfloor e / \text{step\_size} \rfloor}

    (computed as a running product, as PyTorch does).

    Args:
        optimizer: the wrapped optimizer.
        step_size: period of the decay, in epochs (positive int).
        gamma: multiplicative factor. Default: 0.1.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.StepLR.html
    """

    _state_keys = LRScheduler._state_keys + ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        _check_positive_int("StepLR", "step_size", step_size)
        _check_gamma("StepLR", gamma)
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at each milestone epoch.

    .. math:: \text{lr}_e = \text{base\_lr} \cdot \gamma^{\#\{m \in \text{milestones} : m \le e\}}

    A milestone listed twice decays twice, as in PyTorch.

    Args:
        optimizer: the wrapped optimizer.
        milestones: epoch indices (ints >= 0).
        gamma: multiplicative factor. Default: 0.1.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.MultiStepLR.html
    """

    _state_keys = LRScheduler._state_keys + ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        milestones = list(milestones)
        for milestone in milestones:
            if isinstance(milestone, bool) or not isinstance(milestone, Integral) or milestone < 0:
                raise ArgumentError("MultiStepLR: milestones must be ints >= 0, got "
                                    f"{milestones!r}")
        _check_gamma("MultiStepLR", gamma)
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]

    def state_dict(self):
        state = super().state_dict()
        state["milestones"] = sorted(self.milestones.elements())  # a list, for JSON
        return state

    def _after_load(self):
        if not isinstance(self.milestones, Counter):
            self.milestones = Counter(int(m) for m in self.milestones)


class ExponentialLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every epoch: :math:`\text{lr}_e =
    \text{base\_lr} \cdot \gamma^e` (as a running product, as PyTorch does).

    Args:
        optimizer: the wrapped optimizer.
        gamma: multiplicative factor.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.ExponentialLR.html
    """

    _state_keys = LRScheduler._state_keys + ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        _check_gamma("ExponentialLR", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial learning rate down to ``eta_min`` over ``T_max`` epochs.

    .. math::

        \eta_e = \eta_{\min} + \tfrac12 (\eta_{\text{base}} - \eta_{\min})
                 \left(1 + \cos\frac{e\,\pi}{T_{\max}}\right)

    computed recursively from the current learning rate, as PyTorch does:
    :math:`\eta_{e} = \eta_{\min} + (\eta_{e-1} - \eta_{\min})
    \frac{1 + \cos(e\pi/T_{\max})}{1 + \cos((e-1)\pi/T_{\max})}`. Past ``T_max`` the rate rises
    again along the cosine (no restarts: period ``2 * T_max``).

    Args:
        optimizer: the wrapped optimizer.
        T_max: half period, in epochs (positive int).
        eta_min: minimum learning rate. Default: 0.
        last_epoch: index of the last epoch. Default: -1.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.CosineAnnealingLR.html
    """

    _state_keys = LRScheduler._state_keys + ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        _check_positive_int("CosineAnnealingLR", "T_max", T_max)
        if isinstance(eta_min, bool) or not isinstance(eta_min, Real) or not eta_min >= 0:
            raise ArgumentError("CosineAnnealingLR: eta_min must be a number >= 0, got "
                                f"{eta_min!r}")
        self.T_max = int(T_max)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [lr + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, lr in zip(self.base_lrs, self._current_lrs())]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (lr - self.eta_min) + self.eta_min
                for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class ReduceLROnPlateau(LRScheduler):
    r"""Multiply the learning rate by ``factor`` when a metric has stopped improving.

    Each ``step(metric)`` compares the metric with the best so far. It is an improvement when
    ``metric < best * (1 - threshold)`` (mode ``"min"``, threshold_mode ``"rel"``),
    ``metric < best - threshold`` (``"min"``, ``"abs"``), ``metric > best * (1 + threshold)``
    (``"max"``, ``"rel"``) or ``metric > best + threshold`` (``"max"``, ``"abs"``). After more than
    ``patience`` epochs in a row without one, every group's lr becomes
    ``max(lr * factor, min_lr)`` (unless that changes it by no more than ``eps``), and the next
    ``cooldown`` epochs are not counted.

    Args:
        optimizer: the wrapped optimizer.
        mode: ``"min"`` (lower is better, e.g. a loss) or ``"max"`` (e.g. accuracy).
            Default: ``"min"``.
        factor: new_lr = lr * factor, in [0, 1). Default: 0.1.
        patience: epochs without improvement tolerated before reducing (int >= 0). Default: 10.
        threshold: how much better counts as better (>= 0). Default: 1e-4.
        threshold_mode: ``"rel"`` or ``"abs"``. Default: ``"rel"``.
        cooldown: epochs to wait after a reduction before counting again (int >= 0). Default: 0.
        min_lr: lower bound of the lr, one number or one per group. Default: 0.
        eps: reductions smaller than this are skipped. Default: 1e-8.

    https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.ReduceLROnPlateau.html
    """

    _state_keys = ("factor", "min_lrs", "default_min_lr", "patience", "cooldown", "eps",
                   "last_epoch", "_last_lr", "mode", "threshold", "threshold_mode", "best",
                   "cooldown_counter", "num_bad_epochs", "mode_worse")

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0, eps: float = 1e-8):
        # no LRScheduler.__init__: this schedule has no base_lrs and takes no step 0 (as PyTorch)
        name = "ReduceLROnPlateau"
        if not isinstance(optimizer, Optimizer):
            raise ArgumentTypeError(f"{name}: {type(optimizer).__name__} is not a numcnn Optimizer")
        if isinstance(factor, bool) or not isinstance(factor, Real) or not 0 <= factor < 1:
            raise ArgumentError(f"{name}: factor should be < 1.0 (and >= 0), got {factor!r}")
        for key, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ArgumentError(f"{name}: {key} must be an int >= 0, got {value!r}")
        for key, value in (("threshold", threshold), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
                raise ArgumentError(f"{name}: {key} must be a number >= 0, got {value!r}")
        self.optimizer = optimizer
        self.factor = factor
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ArgumentError(f"{name}: expected {len(optimizer.param_groups)} min_lrs (one "
                                    "per "
                                    f"parameter group), got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ArgumentError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ArgumentError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', "
                                f"got {threshold_mode!r}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, metric: float, best: float) -> bool:
        """Whether ``metric`` improves on ``best`` by more than the threshold."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return metric < best * (1.0 - self.threshold)
        if self.mode == "min":
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def step(self, metrics, epoch: int | None = None) -> None:
        """Record this epoch's ``metrics`` (a number, or a 0-d array) and reduce lr if it stalls."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise ArgumentTypeError("ReduceLROnPlateau.step expects the monitored metric as a "
                                    "number, "
                                    f"got {type(metrics).__name__}") from None
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown are not counted
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ArgumentError(f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter "
                                    f"groups but min_lr gave {len(self.min_lrs)} (a group was "
                                    "added "
                                    "after the scheduler was made); set scheduler.min_lrs to "
                                    "match")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def _after_load(self) -> None:
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


# Warm-up and one-cycle schedules live in their own module (they build on LRScheduler above).
from ._schedules import LambdaLR, LinearLR, OneCycleLR, SequentialLR  # noqa: E402

__all__ += ["LinearLR", "LambdaLR", "OneCycleLR", "SequentialLR"]
