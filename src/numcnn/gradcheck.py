"""Check a model's backward pass against numerical gradients, layer by layer.

>>> import numcnn
>>> report = numcnn.gradcheck(my_layer, input_shape=(2, 3, 8, 8))
>>> print(report)            # largest relative error per layer and tensor, PASS or FAIL
>>> report.passed

Method (PyTorch's ``torch.autograd.gradcheck``, in numcnn's terms): the module is copied and cast
to float64; a fixed random projection ``R`` of the output turns it into a scalar
``L = sum(R * f(x))``, whose gradient with respect to the output is ``R``. The analytic gradients
are what ``backward(R)`` returns (input) and adds into ``param.grad`` (parameters); the numerical
ones are central differences::

    dL/dx_i ~ (L(x + eps*e_i) - L(x - eps*e_i)) / (2*eps),    eps = 1e-6

for every entry of a tensor of up to ``max_entries`` entries, else for ``max_entries`` entries
drawn at random (a wrong backward, such as a sign flipped or a transpose missing, spoils nearly
every entry). The relative error of a tensor is ``max|analytic - numerical| / scale`` with
``scale = max(max|analytic|, max|numerical|, noise/tol)``, where
``noise = 10 * 2.2e-16 * max(1, sum|R * f(x)|) / eps`` bounds the round-off of the difference
quotient (so a gradient that is zero, such as that of a bias followed by batch norm, is not
divided by itself); a tensor passes below ``tol`` (default
``1e-5``; float64 central differences are good to about 1e-8 here).

The whole model is checked, then every layer alone (for a :class:`~numcnn.nn.Sequential`,
:class:`~numcnn.nn.Residual` or :class:`~numcnn.nn.SeparableConv2d`: each layer inside), each on
a fresh random input of the shape it receives in the model, so a failure names the layer.
Training mode is used (batch norm on batch statistics). Layers that are random in training
(dropout) see the same mask in every evaluation: numcnn's generator is reset to one state before
each forward pass. Points where the gradient is not defined are avoided: an entry whose
perturbation changes the sign pattern of a ReLU's input, or a max pooling's winners, is skipped
and counted (the inputs are continuous random numbers, so ties have probability zero).

The float64 check runs numcnn's NumPy code; the compiled kernels (float32 only) are checked
against it and PyTorch by the test suite. :func:`compare_with_torch` compares a model with its
PyTorch twin (same weights) output by output and gradient by gradient.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from . import _random
from .errors import NumcnnError

__all__ = ["gradcheck", "GradcheckReport", "compare_with_torch", "TorchComparison"]

EPS = 1e-6
TOL = 1e-5


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` returns.

    ``results`` is a list of dicts, one per (layer, tensor): ``layer`` (``"(model)"`` for the
    whole model, else the layer's name), ``type``, ``tensor`` (``"input"`` or the parameter's
    name), ``shape``, ``checked`` and ``skipped`` (entries), ``rel_error`` and ``passed``.
    ``failed_layers`` names the layers with a failing tensor.
    """

    input_shape: tuple
    tol: float
    results: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.results)

    @property
    def failed_layers(self) -> list:
        """The failing layers, each layer inside first, then ``"(model)"`` for the whole."""
        names = []
        for r in self.results:
            if not r["passed"] and r["layer"] not in names:
                names.append(r["layer"])
        return sorted(names, key=lambda name: name == "(model)")

    def describe_failure(self) -> str:
        """``layer 1 (SignFlipped, relative error 2)``, the layers that fail, for messages."""
        worst = {e["layer"]: e for e in self.per_layer()}
        inner = [n for n in self.failed_layers if n != "(model)"]
        if not inner:  # a single layer, or a failure no layer shows alone
            entry = worst.get("(model)")
            if entry is None:
                return "nothing"
            what = "the layer" if len(worst) == 1 else "the whole model"
            return f"{what} {entry['type']} (relative error {entry['rel_error']:.2g})"
        return ", ".join(f"layer {n} ({worst[n]['type']}, relative error "
                         f"{worst[n]['rel_error']:.2g})" for n in inner)

    def per_layer(self) -> list:
        """One dict per layer: ``layer``, ``type``, ``rel_error`` (largest), ``passed``."""
        layers: dict = {}
        for r in self.results:
            entry = layers.setdefault(r["layer"], {"layer": r["layer"], "type": r["type"],
                                                   "rel_error": 0.0, "passed": True})
            entry["rel_error"] = max(entry["rel_error"], r["rel_error"])
            entry["passed"] &= r["passed"]
        return list(layers.values())

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "tol": self.tol, "passed": self.passed,
                "failed_layers": self.failed_layers, "layers": self.per_layer(),
                "results": self.results}

    def format(self) -> str:
        header = ("Layer", "Type", "Tensor", "Shape", "Checked", "Rel. error", "")
        body = [(r["layer"], r["type"], r["tensor"], "x".join(map(str, r["shape"])),
                 f"{r['checked']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else ""),
                 f"{r['rel_error']:.2e}", "ok" if r["passed"] else "FAIL")
                for r in self.results]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        lines = ["  ".join(f"{h:<{w}}" for h, w in zip(header, widths)).rstrip()]
        lines.append("-" * len(lines[0]))
        lines += ["  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip() for row in body]
        lines.append("")
        if self.passed:
            lines.append(f"PASS: every gradient agrees with central differences (float64, eps "
                         f"{EPS:g}) within a relative error of {self.tol:g}")
        else:
            lines.append(f"FAIL: the backward pass disagrees with central differences in "
                         f"{self.describe_failure()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# ----------------------------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------------------------
def gradcheck(module, x=None, *, input_shape=None, eps: float = EPS, tol: float = TOL,
              max_entries: int = 48, per_layer: bool = True, seed: int = 0) -> GradcheckReport:
    """Compare ``module``'s backward pass with central differences, whole and layer by layer.

    Args:
        module: a :class:`numcnn.nn.Module` (left untouched: a float64 copy is checked).
        x: the input (batch axis included). Default: standard normal of ``input_shape``.
        input_shape: the input's shape with the batch axis, e.g. ``(2, 1, 28, 28)``, when ``x``
            is not given.
        eps: the step of the central differences. Default: 1e-6.
        tol: the largest relative error that passes. Default: 1e-5.
        max_entries: entries checked per tensor (all of a smaller tensor). Default: 48.
        per_layer: also check each layer inside a container on its own. Default: True.
        seed: seeds the input, the projection and the entries drawn.

    Returns:
        A :class:`GradcheckReport`.

    Raises:
        NumcnnError: no input and no shape, or a module whose forward or backward fails (the
            layer is named).
    """
    from . import nn

    if x is None and input_shape is None:
        raise NumcnnError("gradcheck: give an input x or its input_shape (batch axis included)")
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal(tuple(int(s) for s in input_shape))
    x = np.array(x, dtype=np.float64)
    model = copy.deepcopy(module).to(np.float64).train()
    report = GradcheckReport(input_shape=tuple(x.shape), tol=tol)
    saved_rng = copy.deepcopy(_random.get_rng().bit_generator.state)
    from threadpoolctl import threadpool_limits

    # thousands of small float64 products: one BLAS thread is fastest (threads only contend)
    try:
        with threadpool_limits(1, user_api="blas"):
            targets = [("(model)", model, x.shape)]
            if per_layer:
                leaves = _leaves(model, "", x.shape, nn)
                if len(leaves) > 1 or (leaves and leaves[0][1] is not model):
                    targets += leaves
            for name, layer, shape in targets:
                layer_x = x if layer is model else rng.standard_normal(shape)
                report.results += _check_one(name, layer, layer_x, eps, tol, max_entries, rng,
                                             nn)
    finally:
        _random.get_rng().bit_generator.state = saved_rng
    return report


def _leaves(module, name, shape, nn):
    """(name, layer, input shape) of every layer inside containers, in forward order."""
    if isinstance(module, nn.Sequential):
        found = []
        for child_name, child in module._modules.items():
            found += _leaves(child, f"{name}.{child_name}" if name else child_name, shape, nn)
            shape = tuple(child.output_shape(shape))
        return found
    if isinstance(module, nn.Residual):
        return _leaves(module.fn, f"{name}.fn" if name else "fn", shape, nn)
    if isinstance(module, nn.SeparableConv2d):
        inner = module.depthwise.output_shape(shape)
        return ([(f"{name}.depthwise", module.depthwise, tuple(shape)),
                 (f"{name}.pointwise", module.pointwise, tuple(inner))])
    return [(name or type(module).__name__, module, tuple(shape))]


def _check_one(name, layer, x, eps, tol, max_entries, rng, nn):
    kind = type(layer).__name__
    state = copy.deepcopy(_random.get_rng().bit_generator.state)  # fixes dropout masks
    watched = [m for m in layer.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d))]
    patterns: list = []

    def run(inp):
        _random.get_rng().bit_generator.state = copy.deepcopy(state)
        patterns.clear()
        try:
            return np.asarray(layer(inp), dtype=np.float64)
        except NumcnnError:
            raise
        except Exception as error:
            raise NumcnnError(f"gradcheck: {name} ({kind}): forward failed: "
                              f"{type(error).__name__}: {error}") from None

    originals = _watch(watched, patterns)
    try:
        y = run(x)
        if not np.issubdtype(y.dtype, np.floating):
            raise NumcnnError(f"gradcheck: {name} ({kind}) returns {y.dtype}, not floats")
        projection = rng.standard_normal(y.shape)
        layer.zero_grad()
        try:
            grad_x = layer.backward(projection.copy())
        except Exception as error:
            raise NumcnnError(f"gradcheck: {name} ({kind}): backward failed: "
                              f"{type(error).__name__}: {error}") from None
        grads = {pname: p.grad.copy() for pname, p in layer.named_parameters()}

        def loss(inp):
            return float(np.sum(run(inp) * projection))

        base = float(np.sum(np.abs(y * projection)))  # the size of L's terms, for round-off
        results = []
        if grad_x is not None:
            grad_x = np.asarray(grad_x, dtype=np.float64)
            if grad_x.shape != x.shape:
                results.append(_result(name, kind, "input", x.shape, 0, 0, math.inf, False))
            else:
                results.append(_compare(name, kind, "input", x, grad_x, lambda: loss(x), eps,
                                        tol, max_entries, rng, patterns, base))
        for pname, param in layer.named_parameters():
            results.append(_compare(name, kind, pname, param.data, grads[pname],
                                    lambda: loss(x), eps, tol, max_entries, rng, patterns,
                                    base))
    finally:
        _unwatch(originals)
        for module in layer.modules():
            module.__dict__.get("_caches", {}).pop(threading.get_ident(), None)
    return results


def _compare(name, kind, tensor_name, array, analytic, loss, eps, tol, max_entries, rng,
             patterns, base):
    """Central differences of ``loss`` along entries of ``array`` (perturbed in place)."""
    flat = array.reshape(-1)
    if flat.base is not array and not np.shares_memory(flat, array):
        raise NumcnnError(f"gradcheck: {name}: {tensor_name} is not contiguous")
    count = flat.size
    picks = (np.arange(count) if count <= max_entries
             else rng.choice(count, size=max_entries, replace=False))
    analytic = np.asarray(analytic, dtype=np.float64).reshape(-1)
    numeric, kept = [], []
    skipped = 0
    for index in picks:
        original = flat[index]
        flat[index] = original + eps
        plus = loss()
        plus_pattern = list(patterns)
        flat[index] = original - eps
        minus = loss()
        minus_pattern = list(patterns)
        flat[index] = original
        if plus_pattern != minus_pattern:  # a kink between the two points: not differentiable
            skipped += 1
            continue
        numeric.append((plus - minus) / (2 * eps))
        kept.append(index)
    if not kept:
        return _result(name, kind, tensor_name, array.shape, 0, skipped, 0.0, True)
    numeric = np.array(numeric)
    exact = analytic[np.array(kept)]
    # Round-off of the difference quotient: about machine epsilon * |L| / eps. Gradients
    # smaller than that / tol (e.g. a bias followed by batch norm, whose gradient is 0) are
    # compared on that absolute scale instead of their own.
    noise = 10 * np.finfo(np.float64).eps * max(1.0, base) / eps
    scale = max(float(np.max(np.abs(numeric))), float(np.max(np.abs(exact))), noise / tol)
    error = float(np.max(np.abs(exact - numeric))) / scale
    return _result(name, kind, tensor_name, array.shape, len(kept), skipped, error, error <= tol)


def _result(layer, kind, tensor, shape, checked, skipped, error, passed):
    return {"layer": layer, "type": kind, "tensor": tensor, "shape": list(shape),
            "checked": int(checked), "skipped": int(skipped), "rel_error": float(error),
            "passed": bool(passed)}


def _watch(modules, patterns):
    """Record the sign pattern of each ReLU's input and each max pooling's output, so that
    central differences across a kink can be recognised."""
    from .functional.pooling import max_pool2d
    from .nn import MaxPool2d

    originals = []
    for module in modules:
        forward = module.forward

        def watched(x, _forward=forward, _module=module):
            out = _forward(x)
            if isinstance(_module, MaxPool2d):  # the winner of every window
                _, winners = max_pool2d(np.asarray(x), _module.kernel_size, _module.stride,
                                        _module.padding, _module.dilation, _module.ceil_mode,
                                        return_indices=True)
                patterns.append(hash(winners.tobytes()))
            else:  # which inputs are above zero
                patterns.append(hash(np.packbits(np.asarray(x) > 0).tobytes()))
            return out

        originals.append((module, "forward" in module.__dict__, forward))
        object.__setattr__(module, "forward", watched)
    return originals


def _unwatch(originals):
    for module, had_own, forward in originals:
        if had_own:
            object.__setattr__(module, "forward", forward)
        else:
            del module.__dict__["forward"]


# ----------------------------------------------------------------------------------------------
# PyTorch twin
# ----------------------------------------------------------------------------------------------
@dataclass
class TorchComparison:
    """What :func:`compare_with_torch` returns: ``results``, one dict per compared array
    (``what``: ``"output"`` of a layer, ``"input gradient"`` or ``"gradient"`` of a parameter;
    ``name``; ``max_abs_diff``; ``passed``), and ``passed``."""

    results: list = field(default_factory=list)
    rtol: float = 1e-7
    atol: float = 1e-9

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.results)

    def format(self) -> str:
        width = max(len(f"{r['what']} {r['name']}") for r in self.results)
        lines = [f"{'PyTorch twin (float64)':<{width}}  max |numcnn - torch|"]
        lines += [f"{r['what'] + ' ' + r['name']:<{width}}  {r['max_abs_diff']:.2e}  "
                  f"{'ok' if r['passed'] else 'FAIL'}" for r in self.results]
        verdict = ("PASS: outputs and gradients equal PyTorch's" if self.passed else
                   "FAIL: differs from PyTorch in: " + ", ".join(
                       f"{r['what']} {r['name']}" for r in self.results if not r["passed"]))
        return "\n".join(lines + ["", verdict + f" (rtol {self.rtol:g}, atol {self.atol:g})"])

    def __str__(self) -> str:
        return self.format()


def _torch():
    try:
        import torch
    except ImportError:
        raise NumcnnError("the comparison with PyTorch needs torch: pip install torch") from None
    return torch


def torch_twin(model):
    """The same architecture in PyTorch (``torch.nn`` layers of the same names and arguments,
    ``Residual`` as ``x + fn(x)``), with ``model``'s weights copied, in float64.

    Raises:
        NumcnnError: torch is missing, or a layer has no PyTorch counterpart.
    """
    from . import models

    torch = _torch()
    try:
        spec = models.to_spec(model)
    except NumcnnError as error:
        raise NumcnnError(f"no PyTorch twin: {error}") from None
    twin = _torch_module(spec, torch).double()
    own = twin.state_dict()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float64 if np.issubdtype(
        np.asarray(v).dtype, np.floating) else np.asarray(v).dtype))
        for k, v in model.state_dict().items() if k in own}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise NumcnnError(f"no PyTorch twin: torch's layers have {missing} that numcnn's lack")
    twin.load_state_dict(state, strict=False)
    return twin


def _torch_module(spec, torch):
    import inspect

    kind = spec.get("type")
    if kind == "Sequential":
        layers = [_torch_module(layer, torch) for layer in spec.get("layers", [])]
        names = spec.get("names")
        if names:
            from collections import OrderedDict

            return torch.nn.Sequential(OrderedDict(zip(names, layers)))
        return torch.nn.Sequential(*layers)
    if kind == "Residual":
        class Residual(torch.nn.Module):
            def __init__(self, fn):
                super().__init__()
                self.fn = fn

            def forward(self, x):
                return x + self.fn(x)

        return Residual(_torch_module(spec["fn"], torch))
    cls = getattr(torch.nn, str(kind), None)
    if cls is None:
        raise NumcnnError(f"no PyTorch twin: torch.nn has no layer {kind!r}")
    accepted = inspect.signature(cls).parameters
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()
              if k != "type" and k in accepted and k != "split_ties"}
    return cls(**kwargs)


def compare_with_torch(module, x=None, *, input_shape=None, rtol: float = 1e-7,
                       atol: float = 1e-9, seed: int = 0) -> TorchComparison:
    """Compare ``module`` with its PyTorch twin (:func:`torch_twin`) in float64, on the same
    input and output gradient: every layer's output, the input gradient and every parameter's
    gradient. Training mode (batch norm on batch statistics), dropout off in both (their masks
    cannot be the same). Each array passes when ``|numcnn - torch| <= atol + rtol*|torch|``.

    Raises:
        NumcnnError: torch is missing or a layer has no PyTorch counterpart.
    """
    from . import nn

    torch = _torch()
    if x is None and input_shape is None:
        raise NumcnnError("compare_with_torch: give an input x or its input_shape")
    rng = np.random.default_rng(seed)
    x = np.array(rng.standard_normal(tuple(input_shape)) if x is None else x, dtype=np.float64)
    model = copy.deepcopy(module).to(np.float64).train()
    twin = torch_twin(model).train()
    for layer in model.modules():
        if isinstance(layer, nn.Dropout):
            layer.eval()
    for layer in twin.modules():
        if isinstance(layer, torch.nn.modules.dropout._DropoutNd):
            layer.eval()

    ours: dict = {}
    originals = []
    for name, layer in model.named_modules():
        if name and not layer._modules:
            forward = layer.forward

            def recorded(inp, _forward=forward, _name=name):
                out = _forward(inp)
                ours[_name] = np.array(out)
                return out

            originals.append((layer, "forward" in layer.__dict__, forward))
            object.__setattr__(layer, "forward", recorded)
    theirs: dict = {}
    hooks = [layer.register_forward_hook(
        lambda _m, _i, out, _name=name: theirs.__setitem__(_name, out.detach().numpy().copy()))
        for name, layer in twin.named_modules() if name and not list(layer.children())]
    try:
        y = model(x)
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        ty = twin(tx)
    finally:
        _unwatch(originals)
        for hook in hooks:
            hook.remove()
    projection = rng.standard_normal(y.shape)
    model.zero_grad()
    grad_x = model.backward(projection.copy())
    ty.backward(torch.from_numpy(projection))

    report = TorchComparison(rtol=rtol, atol=atol)

    def add(what, name, a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            report.results.append({"what": what, "name": name, "max_abs_diff": math.inf,
                                   "passed": False})
            return
        diff = np.abs(a - b)
        report.results.append({"what": what, "name": name,
                               "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                               "passed": bool(np.all(diff <= atol + rtol * np.abs(b)))})

    for name in ours:
        if name in theirs:
            add("output of", name, ours[name], theirs[name])
    add("output of", "(model)", y, ty.detach().numpy())
    add("gradient of", "input", grad_x, tx.grad.numpy())
    torch_params = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        add("gradient of", name, param.grad, torch_params[name].grad.numpy())
    return report
