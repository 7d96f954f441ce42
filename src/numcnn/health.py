"""Training health: per-layer gradient norms, update sizes, dead ReLUs, activations, NaN guard.

>>> from numcnn.health import HealthMonitor
>>> monitor = HealthMonitor()
>>> history = fit(model, train, epochs=3, health=monitor)   # numcnn train does this
>>> history.health[-1]["layers"]["4"]["grad_norm"]          # per epoch, per layer
>>> plot_health(history.health, "health.png")

Measured for every layer (named as in ``model.named_modules()``), averaged over an epoch:

- ``grad_norm``: the L2 norm of the layer's parameter gradients, ``sqrt(sum grad^2)`` over its
  weight and bias, every step. Vanishing (< 1e-6) or exploding (> 1e3) norms show here first.
- ``update_ratio``: ``||w_after - w_before|| / ||w_before||`` of the layer's weights over one
  optimiser step, on the sampled steps. About 1e-3 is the usual healthy size (Karpathy,
  "CS231n: neural networks part 3"); much smaller learns slowly, much larger is unstable.
- ``dead``: for ReLU layers, the share of units (positions ``(c, h, w)``) whose output was zero
  for every image of every sampled batch of the epoch.
- ``act_mean`` and ``act_std``: the mean and standard deviation of the layer's output over the
  sampled batches.

Activations and updates are sampled every ``every``-th step (default 10; the dead-unit share is
therefore over the images of those batches), gradient norms are taken every step: the cost is a
few small reductions per layer (the benchmark measures it: ``bench/bench.py --parts health``).

The NaN/Inf guard: every step the loss and every parameter gradient are checked (the gradient
norms are computed anyway). When one is not finite, the batch is run again, forward and backward,
layer by layer, and :class:`NonFiniteError` names the first layer whose output (forward) or
gradient (backward) was not finite, the epoch and step, and a hint. The weights are checked
before the optimiser step, so they are still those that produced the failure.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import NumcnnError

__all__ = ["HealthMonitor", "NonFiniteError", "plot_health", "format_epoch"]

HINT = ("lower the learning rate (--lr), check that the inputs are scaled (e.g. pixels to [0, 1] "
        "and normalised), or clip the gradients")


class NonFiniteError(NumcnnError, FloatingPointError):
    """A NaN or Inf in training. Attributes: ``layer`` (its name and type), ``direction``
    (``"forward"`` or ``"backward"``), ``epoch``, ``step`` (from 1)."""

    def __init__(self, message, layer=None, direction=None, epoch=None, step=None):
        super().__init__(message)
        self.layer, self.direction, self.epoch, self.step = layer, direction, epoch, step


class HealthMonitor:
    """Collects per-layer health statistics during :func:`numcnn.train.fit` (``health=``).

    Args:
        every: sample the activations every ``every`` steps (1: every step). Default: 10.
        guard: check the loss and gradients for NaN/Inf every step. Default: True.
    """

    def __init__(self, every: int = 10, guard: bool = True):
        if int(every) < 1:
            raise NumcnnError(f"HealthMonitor: every must be >= 1, got {every}")
        self.every = int(every)
        self._ones_cache: dict = {}
        self.guard = guard
        self.epochs: list[dict] = []
        self._model = None
        self._wrapped: list = []

    # -- attaching to a model -------------------------------------------------------------------
    def attach(self, model) -> None:
        """Watch ``model``'s layers (their ``forward`` is wrapped until :meth:`detach`)."""
        from . import nn

        self.detach()
        self._model = model
        self._leaves = [(name, m) for name, m in model.named_modules()
                        if name and not m._modules] or [(type(model).__name__, model)]
        self._param_layers = [(name, m, [p for p in m._parameters.values() if p is not None])
                              for name, m in self._leaves if m._parameters]
        self._relus = {name for name, m in self._leaves if isinstance(m, nn.ReLU)}
        self._sampling = self._checking = False
        self._first_bad = None
        for name, module in self._leaves:
            forward = module.forward

            def watched(x, _forward=forward, _name=name, _module=module):
                out = _forward(x)
                if self._sampling:
                    self._record(_name, out)
                if self._checking and self._first_bad is None and not _finite(out):
                    self._first_bad = f"{_name} ({type(_module).__name__})"
                return out

            self._wrapped.append((module, "forward" in module.__dict__, forward))
            object.__setattr__(module, "forward", watched)
        self.begin_epoch()

    def detach(self) -> None:
        for module, had_own, forward in self._wrapped:
            if had_own:
                object.__setattr__(module, "forward", forward)
            else:
                module.__dict__.pop("forward", None)
        self._wrapped = []

    # -- one epoch ------------------------------------------------------------------------------
    def begin_epoch(self) -> None:
        self._step = 0
        self._sums: dict = {}
        self._active: dict = {}
        self._before = [params[0].data.copy() for _, _, params in self._param_layers]

    def before_forward(self) -> None:
        """Called before each training step's forward pass."""
        self._step += 1
        self._sampling = (self._step - 1) % self.every == 0

    def _add(self, name, key, value) -> None:
        entry = self._sums.setdefault(name, {})
        total, count = entry.get(key, (0.0, 0))
        entry[key] = (total + value, count + 1)

    def _ones(self, n, dtype):
        key = (n, np.dtype(dtype))
        ones = self._ones_cache.get(key)
        if ones is None:
            ones = self._ones_cache[key] = np.ones(n, dtype=dtype)
        return ones

    def _record(self, name, out) -> None:
        """Mean and standard deviation of ``out``; for a ReLU, which units fired. Sums are BLAS
        dot products over the array's memory in its own order (no copy), so that a sampled step
        costs a fraction of a millisecond: ``sum x = x . 1``, ``sum x^2 = x . x``, and a ReLU
        unit fired when its (non-negative) outputs summed over the batch are above 0."""
        from .backend.blas import blas_one_thread

        out = np.asarray(out)
        if not np.issubdtype(out.dtype, np.floating) or out.size == 0:
            return
        flat = out.ravel(order="K")  # a view when the memory is contiguous in any axis order
        with blas_one_thread(out.dtype):
            total = float(np.dot(flat, self._ones(flat.size, flat.dtype)))
            squares = float(np.dot(flat, flat))
            mean = total / flat.size
            self._add(name, "act_mean", mean)
            self._add(name, "act_std", math.sqrt(max(squares / flat.size - mean * mean, 0.0)))
            if name in self._relus and out.ndim >= 2:
                n = out.shape[0]
                units = out.transpose(*range(1, out.ndim), 0)  # (..., N)
                if units.flags.c_contiguous:  # numcnn's batch-last layout
                    fired = units.reshape(-1, n) @ self._ones(n, out.dtype)
                elif out.flags.c_contiguous:
                    fired = self._ones(n, out.dtype) @ out.reshape(n, -1)
                else:
                    fired = out.sum(axis=0)
                active = fired.reshape(out.shape[1:]) > 0
                seen = self._active.get(name)
                self._active[name] = active if seen is None else (seen | active)

    def after_step(self) -> None:
        """Called after the optimiser step: on sampled steps, the update / weight ratios."""
        if not self._sampling:
            return
        for (name, _, params), old in zip(self._param_layers, self._before):
            size = float(np.linalg.norm(old))
            if size > 0:
                self._add(name, "update_ratio", float(np.linalg.norm(params[0].data - old)) / size)

    def end_epoch(self, epoch: int) -> dict:
        """The epoch's averages: ``{"epoch", "steps", "layers": {name: {...}}}``; kept in
        :attr:`epochs`."""
        layers = {}
        for name, module in self._leaves:
            stats = {"type": type(module).__name__}
            for key, (total, count) in self._sums.get(name, {}).items():
                stats[key] = total / count if count else None
            if name in self._active:
                stats["dead"] = float(1.0 - np.mean(self._active[name]))
            if len(stats) > 1:
                layers[name] = stats
        summary = {"epoch": int(epoch), "steps": self._step, "layers": layers}
        self.epochs.append(summary)
        self.begin_epoch()
        return summary

    # -- the guard ------------------------------------------------------------------------------
    def after_backward(self, epoch: int, xb=None, yb=None, criterion=None) -> None:
        """Called after the backward pass, before the optimiser step: gradient norms, and the
        guard (which needs the batch and the loss to find the layer); on sampled steps, the
        weights before the step."""
        for name, _, params in self._param_layers:
            squares = sum(float(np.vdot(p.grad, p.grad)) for p in params)
            if self.guard and not math.isfinite(squares):
                self._raise(epoch, xb, yb, criterion, f"a gradient (of layer {name}'s parameters)"
                                                      f" became NaN or Inf")
            self._add(name, "grad_norm", math.sqrt(squares))
        if self._sampling:
            for (_, _, params), old in zip(self._param_layers, self._before):
                np.copyto(old, params[0].data)

    def nonfinite_loss(self, loss, epoch: int, xb, yb, criterion) -> None:
        """The loss is NaN or Inf: find the first layer where it came from and raise."""
        self._raise(epoch, xb, yb, criterion, f"the training loss became {loss}")

    def _raise(self, epoch, xb, yb, criterion, what):
        step = self._step
        layer, direction = self._diagnose(xb, yb, criterion)
        if layer == "input":
            where = "the input batch itself holds NaN or Inf (check the data and its scaling)"
        elif layer is None:
            where = "rerunning the batch gave finite values everywhere (a value close to overflow)"
        else:
            where = f"the first non-finite value appeared in the {direction} pass at layer {layer}"
        raise NonFiniteError(f"{what} at epoch {epoch}, step {step}: {where}; {HINT}",
                             layer=layer, direction=direction, epoch=epoch, step=step)

    def _diagnose(self, xb, yb, criterion):
        """Run the batch again, checking every layer's output, then (if the loss is finite)
        every layer's gradient in backward order: ``(layer, "forward" | "backward")``."""
        if xb is None or criterion is None:
            return None, None
        x = np.asarray(xb)
        if not _finite(x):
            return "input", "forward"
        model = self._model
        self._sampling, self._checking, self._first_bad = False, True, None
        try:
            out = model(x)
            if self._first_bad is not None:
                return self._first_bad, "forward"
            if not math.isfinite(float(criterion(out, yb))):
                return "the loss", "forward"
            first = []
            wrapped = []
            for name, module in self._leaves:
                backward = module.backward

                def checked(grad, *args, _backward=backward, _name=name, _module=module,
                            **kwargs):
                    result = _backward(grad, *args, **kwargs)
                    params_ok = all(_finite(p.grad) for p in _module._parameters.values()
                                    if p is not None)
                    if not first and (not params_ok or (result is not None
                                                        and not _finite(result))):
                        first.append(f"{_name} ({type(_module).__name__})")
                    return result

                wrapped.append((module, "backward" in module.__dict__, backward))
                object.__setattr__(module, "backward", checked)
            try:
                model.zero_grad()
                model.backward(criterion.backward())
            finally:
                for module, had_own, backward in wrapped:
                    if had_own:
                        object.__setattr__(module, "backward", backward)
                    else:
                        module.__dict__.pop("backward", None)
            return (first[0], "backward") if first else (None, None)
        finally:
            self._checking = False


def _finite(array) -> bool:
    return bool(np.isfinite(np.asarray(array)).all())


# ----------------------------------------------------------------------------------------------
# Text and picture
# ----------------------------------------------------------------------------------------------
def format_epoch(summary: dict) -> str:
    """One line: the range of gradient norms and update ratios, the deadest ReLU layer, the
    range of activation standard deviations."""
    layers = summary["layers"]

    def span(key, fmt):
        values = [(v[key], n) for n, v in layers.items() if v.get(key) is not None]
        if not values:
            return None
        low, high = min(values), max(values)
        return f"{fmt(low[0])} ({low[1]}) .. {fmt(high[0])} ({high[1]})"

    parts = []
    for key, label, fmt in (("grad_norm", "grad norm", lambda v: f"{v:.2g}"),
                            ("update_ratio", "update/weight", lambda v: f"{v:.1e}"),
                            ("act_std", "activation std", lambda v: f"{v:.2g}")):
        text = span(key, fmt)
        if text:
            parts.append(f"{label} {text}")
    dead = [(v["dead"], n) for n, v in layers.items() if "dead" in v]
    if dead:
        worst = max(dead)
        parts.append(f"dead ReLU units up to {100 * worst[0]:.1f}% ({worst[1]})")
    return f"health epoch {summary['epoch']}: " + "; ".join(parts)


def plot_health(epochs: list, path) -> str:
    """``health.png``: per layer, across epochs, the gradient norm, the update/weight ratio (with
    1e-3 marked), the share of dead ReLU units and the activations' standard deviation."""
    import os

    from .io import atomic_write
    from .visualize import _figure

    if not epochs:
        raise NumcnnError("plot_health: no epochs recorded")
    numbers = [e["epoch"] for e in epochs]
    names = list(dict.fromkeys(n for e in epochs for n in e["layers"]))
    fig = _figure(11.0, 7.5)
    axes = fig.subplots(2, 2, squeeze=False).flat
    panels = (("grad_norm", "gradient norm ||dL/dW||", True),
              ("update_ratio", "update / weight ||dW|| / ||W||", True),
              ("dead", "dead ReLU units (share)", False),
              ("act_std", "activation standard deviation", False))
    for ax, (key, title, log) in zip(axes, panels):
        drawn = 0
        for name in names:
            values = [e["layers"].get(name, {}).get(key) for e in epochs]
            if all(v is None for v in values):
                continue
            kind = next(e["layers"][name]["type"] for e in epochs if name in e["layers"])
            ax.plot(numbers, [np.nan if v is None else v for v in values], marker="o",
                    label=f"{name} ({kind})")
            drawn += 1
        if key == "update_ratio" and drawn:
            ax.axhline(1e-3, color="gray", linestyle="--", linewidth=1, label="1e-3")
        if log and drawn:
            ax.set_yscale("log")
        if key == "dead":
            ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xticks(numbers)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no such layers", ha="center", va="center",
                    transform=ax.transAxes)
    fig.suptitle("Training health per layer (averages over each epoch)")
    path = os.fspath(path)
    atomic_write(path, lambda file: fig.savefig(
        file, format="png", metadata={"numcnn-grid": "2x2", "Software": "numcnn"}))
    return path
