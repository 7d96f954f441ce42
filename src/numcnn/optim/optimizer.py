"""The :class:`Optimizer` base class: parameter groups, per-parameter state, state dicts.

An optimizer walks the ``(param.data, param.grad)`` pairs of the :class:`~numcnn.nn.Parameter` s it
was given and updates ``param.data`` in place, exactly as ``torch.optim`` updates its tensors. The
bookkeeping follows ``torch.optim.Optimizer`` one to one:

- ``param_groups``: a list of dicts, each with a ``"params"`` list and every hyperparameter
  (``"lr"``, ``"weight_decay"``, ...); a group given without a hyperparameter takes the
  optimizer's default. Schedulers change ``group["lr"]``.
- ``state``: a dict from each Parameter to its own dict of running buffers (``"momentum_buffer"``,
  ``"exp_avg"``, ``"step"``, ...), created on the parameter's first step.
- ``state_dict()`` / ``load_state_dict()``: the same two entries with parameters replaced by their
  index (counted across groups in order), so a run can be saved and resumed exactly.

https://pytorch.org/docs/stable/optim.html
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np

from .._text import count
from ..errors import ArgumentError, ArgumentTypeError, DTypeError, NumcnnError, ShapeError
from ..nn.module import Parameter

__all__ = ["Optimizer"]

# Bytes per array in one block of an update (see Optimizer._blocks): small enough that the
# handful of arrays an update touches fit in a core's L2 cache.
_BLOCK_BYTES = 256 * 1024


class Optimizer:
    """Base class of every optimizer, in the manner of ``torch.optim.Optimizer``.

    Args:
        params: an iterable of :class:`~numcnn.nn.Parameter` (e.g. ``model.parameters()``), of
            ``(name, Parameter)`` pairs (``model.named_parameters()``), or of dicts
            ``{"params": [...], "lr": ..., ...}`` that each define a parameter group with its own
            hyperparameters.
        defaults: the hyperparameters of a group that does not set them.

    A Parameter may appear only once: given twice in one group, or in two groups, it would be
    updated twice per step, so both raise ``ValueError`` (PyTorch refuses the second case and warns
    about the first).

    Subclasses define ``_validate(group)`` (raise ``ValueError`` for bad hyperparameters) and
    ``_step_group(group)`` (update every parameter of one group); :meth:`step` calls the latter for
    each group. A parameter whose ``grad`` is ``None`` is skipped, as in PyTorch.

    **State dict.** :meth:`state_dict` returns plain Python containers, NumPy arrays and numbers
    (arrays are copies, so the dict is a snapshot)::

        {
            "state": {                  # per parameter index; only parameters that have state
                0: {"step": 3, "exp_avg": ndarray, "exp_avg_sq": ndarray},
                1: {...},
            },
            "param_groups": [           # one dict per group: every hyperparameter, and
                {"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1]},   # the indices
                {"lr": 0.01, ..., "params": [2, 3, 4]},
            ],
        }

    Parameter indices count across the groups in order, as in PyTorch, and each state array has the
    shape and dtype of its parameter. To write it to safetensors + JSON, put the arrays under keys
    such as ``"state.0.exp_avg"`` and everything else in the JSON: :meth:`load_state_dict` accepts
    the indices as strings (``"0"``), tuples as lists (``betas``), numbers as 0-d arrays, and also
    a ``torch.optim`` state dict whose tensors were turned into arrays (``t.numpy()``).
    """

    def __init__(self, params, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._step_count = 0
        self._workspace: dict[tuple[np.dtype, int], np.ndarray] = {}

        if isinstance(params, (Parameter, np.ndarray)):
            raise ArgumentTypeError(f"{type(self).__name__}: params should be an iterable of "
                                    "Parameters or "
                                    f"of dicts, but got a single {type(params).__name__}; "
                                    f"use model.parameters() or [param]")
        if isinstance(params, (set, frozenset)):
            raise ArgumentTypeError(f"{type(self).__name__}: parameters must be given in an "
                                    "ordered "
                                    "collection (a list), not a set, whose order changes between "
                                    "runs")
        groups = list(params)
        if len(groups) == 0:
            raise ArgumentError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups ---------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (the rest from ``defaults``).

        Useful when fine-tuning: layers frozen so far can be made trainable mid-run.
        """
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise ArgumentTypeError(f"{name}: a param group must be a dict, "
                                    f"got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ArgumentError(f"{name}: a param group needs a 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise ArgumentTypeError(f"{name}: parameters must be given in an ordered collection "
                                    "(a list), "
                                    f"not a set, whose order changes between runs")
        params = list(params)

        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ArgumentError(f"{name}: give every parameter with a name or none "
                                    f"(some (name, param) pairs are mixed with bare parameters)")
            group["param_names"] = names
            params = [p[1] for p in params]
        group["params"] = params

        for index, param in enumerate(params):
            if not isinstance(param, Parameter):
                raise ArgumentTypeError(f"{name} can only optimize numcnn Parameters, but entry "
                                        f"{index} "
                                        "of the group is "
                                        f"{type(param).__module__}.{type(param).__name__}")
            if not np.issubdtype(param.dtype, np.floating):
                raise DTypeError(f"{name} can only optimize floating-point parameters, but entry "
                                 f"{index} of the group has dtype {param.dtype}")

        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate(group)

        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ArgumentError(f"{name}: a parameter group holds the same Parameter more than "
                                "once; "
                                f"it would be updated twice per step")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen & set(ids):
            raise ArgumentError(f"{name}: some parameters appear in more than one parameter group")
        if any(("param_names" in g) != ("param_names" in group) for g in self.param_groups):
            raise ArgumentError(f"{name}: all parameter groups should be with names or all without")
        self.param_groups.append(group)

    def _validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` for a bad hyperparameter of ``group`` (subclasses extend this)."""

    # -- stepping -------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero, in place.

        numcnn layers *add* into ``param.grad``, so it stays an array (PyTorch's default
        ``set_to_none=True`` has no counterpart here).
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad[...] = 0

    def step(self, closure: Callable[[], float] | None = None):
        """Update every parameter from its gradient; returns ``closure()`` if one is given.

        The closure, if any, is called first: it should recompute the loss and the gradients.
        """
        loss = None
        if closure is not None:
            loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        self._step_count += 1
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _step_group")

    def _params_with_grad(self, group: dict[str, Any]):
        """Yield ``(param, grad)`` for each parameter of ``group`` that has a gradient.

        The gradient must match the parameter's shape and dtype: a float64 gradient on a float32
        parameter would upcast every update, a broadcastable shape would update silently wrong.
        """
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            data = param.data
            if grad.shape != data.shape:
                raise ShapeError(f"{type(self).__name__}: parameter {self._index_of(param)} has "
                                 f"shape {data.shape}, but its grad has shape {grad.shape}")
            if grad.dtype != data.dtype:
                raise DTypeError(f"{type(self).__name__}: parameter {self._index_of(param)} has "
                                 f"dtype {data.dtype}, but its grad has dtype {grad.dtype}")
            yield param, grad

    def _state_array(self, param: Parameter, key: str) -> np.ndarray:
        """``self.state[param][key]``, checked against the parameter's current shape and dtype."""
        array = self.state[param][key]
        if array.shape != param.data.shape or array.dtype != param.data.dtype:
            raise DTypeError(f"{type(self).__name__}: state {key!r} of parameter "
                             f"{self._index_of(param)} is {array.dtype} {array.shape}, but the "
                             f"parameter is now {param.data.dtype} {param.data.shape}; create the "
                             f"optimizer after converting the model (model.to(dtype))")
        return array

    @staticmethod
    def _blocks(*arrays: np.ndarray):
        """Yield matching cache-sized pieces of same-shaped arrays (1-D views, in order).

        An update is a chain of element-wise NumPy operations; run on pieces of ~256 KiB, its
        temporaries stay in the CPU cache instead of streaming the whole parameter through memory
        once per operation. Arrays that are not all C-contiguous come back whole.
        """
        if not all(a.flags.c_contiguous for a in arrays):
            yield arrays
            return
        flat = [a.reshape(-1) for a in arrays]
        size = flat[0].size
        block = max(1, _BLOCK_BYTES // flat[0].itemsize)
        if size <= block:
            yield flat
            return
        for start in range(0, size, block):
            yield [a[start:start + block] for a in flat]

    def _effective_grad(self, p: np.ndarray, grad: np.ndarray, weight_decay: float,
                        maximize: bool) -> np.ndarray:
        """The gradient an update follows, as PyTorch's optimisers form it::

            d = grad + weight_decay * p        (-grad + weight_decay * p with maximize)

        ``grad`` itself when there is nothing to add, else built in scratch slot 0.
        """
        if weight_decay == 0 and not maximize:
            return grad
        d = self._work(p, 0)
        if weight_decay == 0:
            return np.negative(grad, out=d)
        np.multiply(p, weight_decay, out=d)
        return (np.subtract if maximize else np.add)(d, grad, out=d)

    def _work(self, like: np.ndarray, slot: int) -> np.ndarray:
        """A scratch array of ``like``'s shape and dtype (contents undefined), reused every step.

        Each ``(dtype, slot)`` has one flat buffer, grown to the largest block seen (see
        :meth:`_blocks`), so the scratch memory is small and allocated once.
        """
        key = (like.dtype, slot)
        buffer = self._workspace.get(key)
        if buffer is None or buffer.size < like.size:
            buffer = self._workspace[key] = np.empty(like.size, dtype=like.dtype)
        return buffer[:like.size].reshape(like.shape)

    def _index_of(self, param: Parameter) -> int:
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p is param:
                    return index
                index += 1
        return -1

    # -- state dict -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer: ``{"state": {...}, "param_groups": [...]}``.

        See the class docstring for the layout. Arrays are copies; numbers are Python numbers.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for param in group["params"]:
                index_of[id(param)] = len(index_of)
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for param, entries in self.state.items():
            if id(param) in index_of and entries:
                state[index_of[id(param)]] = {
                    key: (np.array(value, copy=True) if isinstance(value, np.ndarray) else value)
                    for key, value in entries.items()
                }
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot taken by :meth:`state_dict` (of an optimizer over the same params).

        Groups must match in number and size. State arrays are copied and cast to their
        parameter's dtype; the hyperparameters (``lr`` included) are those of the snapshot.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ArgumentError(f"{name}.load_state_dict expects a dict with 'state' and "
                                f"'param_groups', got {_describe(state_dict)}")
        _check_state_layout(name, state_dict)
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ArgumentError(f"{name}.load_state_dict: expected {len(self.param_groups)} "
                                f"parameter groups (the optimizer's), got {len(saved_groups)} in "
                                f"the state dict")
        id_map: dict[int, Parameter] = {}
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ArgumentError(f"{name}.load_state_dict: parameter group {number} has "
                                    f"{count(len(saved['params']), 'parameter')} in the state "
                                    f"dict, "
                                    f"{len(group['params'])} in the optimizer")
            for index, param in zip(saved["params"], group["params"]):
                id_map[int(index)] = param

        state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        for index, entries in state_dict["state"].items():
            if int(index) not in id_map:
                raise ArgumentError(f"{name}.load_state_dict: state for parameter index {index}, "
                                    f"which no parameter group lists")
            param = id_map[int(index)]
            state[param] = {key: _load_state_value(name, index, key, value, param)
                            for key, value in entries.items()}

        groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new = {}
            for key, value in saved.items():
                if key == "params":
                    continue
                value = copy.deepcopy(value)
                if isinstance(group.get(key), tuple) and isinstance(value, list):
                    value = tuple(value)  # betas come back from JSON as a list
                new[key] = _plain(value)
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            for key, value in self.defaults.items():
                new.setdefault(key, value)
            self._validate(new)
            groups.append(new)
        self.state = state
        self.param_groups = groups

    # -- display --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {number}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


# -- helpers shared by the optimizers -----------------------------------------------------------
def check_nonnegative(owner: str, name: str, value) -> None:
    """Raise an ArgumentError (a ValueError) unless ``value`` is a finite real number >= 0
    (NaN and infinity refused: they would turn every weight into NaN at the first step)."""
    if (isinstance(value, bool) or not isinstance(value, Real) or not value >= 0
            or not math.isfinite(value)):
        raise ArgumentError(f"{owner}: invalid {name} {value!r} (must be a finite number >= 0)")


def _describe(value) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    return type(value).__name__


def _plain(value):
    """A NumPy scalar or 0-d array (as from JSON or ``tensor.numpy()``) as a Python number."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d torch tensor
        return value.item()
    return value


def _is_index(value) -> bool:
    if isinstance(value, str):
        return value.isdigit()
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 0


def _check_state_layout(owner: str, state_dict) -> None:
    """The layout :meth:`Optimizer.state_dict` writes: ``{"state": {index: {key: value}},
    "param_groups": [{"params": [index, ...], hyperparameter: value, ...}]}``."""
    groups, state = state_dict["param_groups"], state_dict["state"]
    expected = (f"{owner}.load_state_dict: expected the layout state_dict() writes "
                f"({{'state': {{index: {{name: value}}}}, 'param_groups': [{{'params': "
                f"[index, ...], ...}}]}}), got ")
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        raise ArgumentError(expected + f"param_groups {_describe(groups)}")
    for group in groups:
        params = group.get("params")
        if not isinstance(params, (list, tuple)) or not all(map(_is_index, params)):
            raise ArgumentError(expected + f"a group's params {str(params)[:80]}")
        if not all(isinstance(key, str) for key in group):
            raise ArgumentError(expected + f"a group with keys {sorted(map(str, group))}")
    if not isinstance(state, dict) or not all(map(_is_index, state)) or not all(
            isinstance(entries, dict) and all(isinstance(k, str) for k in entries)
            for entries in state.values()):
        raise ArgumentError(expected + f"state {str(state)[:80]}")


def _load_state_value(owner: str, index, key: str, value, param: Parameter):
    """Copy one saved state entry: arrays to the parameter's dtype and shape, ``step`` to int."""
    try:
        return _convert_state_value(owner, index, key, value, param)
    except (TypeError, ValueError, OverflowError) as error:
        if isinstance(error, NumcnnError):
            raise
        raise ArgumentError(f"{owner}.load_state_dict: state {key!r} of parameter {index}: "
                            f"expected a number or an array of the parameter's shape, got "
                            f"{_describe(value)} ({error})") from None


def _convert_state_value(owner: str, index, key: str, value, param: Parameter):
    if key == "step":
        step = float(np.asarray(value))
        if not (math.isfinite(step) and step >= 0 and step == int(step)):
            raise ArgumentError(f"{owner}.load_state_dict: parameter {index} has step {value!r}, "
                                f"expected a whole number >= 0")
        return int(step)
    if isinstance(value, (Integral, Real)) or value is None:
        return value
    array = np.array(value, dtype=param.dtype, copy=True)
    if array.ndim == 0:
        return array.item()
    if array.shape != param.shape:
        raise ShapeError(f"{owner}.load_state_dict: state {key!r} of parameter {index} has shape "
                         f"{array.shape}, but the parameter has shape {param.shape}")
    return array
