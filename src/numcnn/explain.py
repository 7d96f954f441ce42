"""Every layer of a model with its numbers: shapes, parameters, FLOPs and memory.

>>> from numcnn import models
>>> report = models.preset("convnet-bn").explain((1, 28, 28), batch_size=64)
>>> print(report)                      # a readable block per layer, then a table and the totals
>>> report.rows[0]["flops_forward"]    # the rows as data (dicts); report.to_dict() for JSON

For each layer, for the given input shape:

- the output-size formula with the numbers filled in, per axis (PyTorch's formula, e.g.
  ``out = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1``, as the sliding-window module
  :mod:`numcnn.functional._windows` writes it in its errors);
- the output shape, and the parameter count as a product (``16*32*5*5 + 32 = 12,832``);
- for convolutions, the im2col view: the column matrix ``(C_in/groups*kh*kw) x (N*H_out*W_out)``
  and the weight matrix ``C_out x (C_in/groups*kh*kw)``, and the backward rules in the course's
  terms (the input gradient is the full correlation of the output gradient, dilated by the
  stride, with the kernel rotated by 180 degrees; the weight gradient is the correlation of the
  input with the output gradient);
- FLOPs of the forward and backward passes, and the bytes the layer keeps for its backward pass.

FLOP conventions: a multiply-add counts 2 (as in PyTorch's ``torch.utils.flop_counter``, which
counts the products of convolutions and linear layers only); adding a bias counts 1 per output
element; element-wise layers count the arithmetic per element given in :data:`ELEMENTWISE_FLOPS`
(a comparison counts 1). A convolution's or linear layer's backward pass is two products (input
gradient and weight gradient, each as many multiply-adds as the forward pass) and the bias
gradient (a sum, 1 per output element). A training step skips the first layer's input gradient
(the images need none), as :meth:`numcnn.nn.Module.backward_params` does.

Memory: "kept" is what each layer's forward pass holds for its backward pass, measured by running
the model once in training mode on random input (arrays shared between layers, such as a ReLU's
output that the next max pooling also keeps, are counted once, at the first layer holding them).
The weights a layer refers to are not counted. The peak activation memory is measured with
:mod:`tracemalloc` (which sees NumPy's allocations) over one forward and backward pass at the
given batch size; the parameters are not included. The
model's weights, running statistics and numcnn's random generator are left as they were.
"""

from __future__ import annotations

import json
import math
import threading
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from .errors import NumcnnError, ShapeError
from .functional._windows import formula as size_formula
from .functional._windows import transposed_formula

__all__ = ["explain", "Explanation", "ELEMENTWISE_FLOPS", "FORMATS"]

FORMATS = ("table", "json", "markdown")

# FLOPs per element: (forward in training, forward in inference, backward).
ELEMENTWISE_FLOPS = {
    "ReLU": (1, 1, 1),          # max(x, 0); backward: dy * (x > 0)
    "LeakyReLU": (2, 2, 2),     # compare, multiply
    "Sigmoid": (4, 4, 3),       # exp, add, divide (negate); backward dy * s * (1 - s)
    "Tanh": (4, 4, 3),
    "Gaussian": (3, 3, 4),      # exp(-x^2)
    "Softmax": (4, 4, 4),       # subtract max, exp, sum, divide
    "LogSoftmax": (4, 4, 3),
    "Dropout": (1, 0, 1),       # multiply by the mask / (1-p); identity in inference
    "Dropout2d": (1, 0, 1),
    "BatchNorm": (8, 2, 9),     # mean 1, variance 3, normalise 2, scale and shift 2; inference:
                                # one multiply-add; backward: dgamma 2, dbeta 1, dx 6
}


@dataclass
class Explanation:
    """What :func:`explain` returns: ``rows`` (one dict per layer) and ``totals``.

    Each row has ``name``, ``type``, ``input_shape``, ``output_shape``, ``output_size`` (lines of
    the filled-in formula, one per axis), ``params`` and ``params_formula``, ``im2col`` (for
    convolutions: the shapes of the column and weight matrices, and the text), ``backward`` (the
    backward rule in words), ``macs`` (multiply-adds of the forward pass),
    ``flops_forward``, ``flops_inference``, ``flops_backward``, ``flops_backward_input`` (the
    part of ``flops_backward`` that is the input gradient) and ``bytes_kept``. FLOPs and bytes
    are for the whole batch. ``totals`` holds ``params``, ``flops_per_image_training``,
    ``flops_per_image_inference``, ``bytes_kept``, ``peak_activation_bytes`` and the batch size.
    """

    input_shape: tuple
    batch_size: int
    rows: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "batch_size": self.batch_size,
                "layers": [_jsonable(row) for row in self.rows], "totals": dict(self.totals)}

    def format(self, fmt: str = "table") -> str:
        """The explanation as ``"table"`` (plain text), ``"json"`` or ``"markdown"``."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2)
        if fmt == "markdown":
            return _markdown(self)
        if fmt == "table":
            return _table(self)
        raise NumcnnError(f"explain: format must be one of {', '.join(FORMATS)}, got {fmt!r}")

    def __str__(self) -> str:
        return self.format("table")

    def _repr_markdown_(self) -> str:  # notebooks
        return self.format("markdown")


# ----------------------------------------------------------------------------------------------
# The walk over the model
# ----------------------------------------------------------------------------------------------
def explain(model, input_shape, batch_size: int = 1, measure: bool = True) -> Explanation:
    """Explain every layer of ``model`` for inputs of ``input_shape`` (one sample, e.g.
    ``(1, 28, 28)``) in batches of ``batch_size``.

    Args:
        model: a :class:`numcnn.nn.Module`.
        input_shape: the shape of one input sample, without the batch axis.
        batch_size: N, for the shapes, FLOPs and memory. Default: 1.
        measure: run the model once to measure the bytes kept for backward and the peak
            activation memory (otherwise those are ``None``). Default: True.

    Returns:
        An :class:`Explanation`.

    Raises:
        ShapeError: the model does not take inputs of that shape (the layer is named).
        NumcnnError: a batch size below 1 or a malformed shape.
    """
    from . import nn

    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise NumcnnError(f"explain: input_shape must be a tuple of positive integers (one "
                          f"sample, e.g. (1, 28, 28)), got {input_shape!r}") from None
    if not input_shape or min(input_shape) < 1:
        raise NumcnnError(f"explain: input_shape must be positive integers, got {input_shape}")
    if int(batch_size) < 1:
        raise NumcnnError(f"explain: batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    shape = (batch_size, *input_shape)
    rows: list[dict] = []
    out_shape = _walk(model, "", shape, rows, nn)
    if rows:
        rows[0]["first_layer"] = True
    result = Explanation(input_shape=input_shape, batch_size=batch_size, rows=rows)
    kept = peak = None
    if measure:
        kept, peak = _measure(model, shape, rows)
    first_input = rows[0]["flops_backward_input"] or 0 if rows else 0
    forward = sum(row["flops_forward"] or 0 for row in rows)
    inference = sum(row["flops_inference"] or 0 for row in rows)
    backward = sum(row["flops_backward"] or 0 for row in rows) - first_input
    result.totals = {
        "params": int(model.num_parameters()),
        "output_shape": list(out_shape),
        "batch_size": batch_size,
        "flops_per_image_inference": inference // batch_size,
        "flops_per_image_training": (forward + backward) // batch_size,
        "flops_forward": forward, "flops_backward": backward,
        "bytes_kept": kept,
        "peak_activation_bytes": peak,
        "unknown_layers": [row["name"] for row in rows if row["flops_forward"] is None],
    }
    return result


def _walk(module, name, shape, rows, nn):
    """Append the rows of ``module`` (containers: of their children) and return its output
    shape for an input of ``shape``."""
    try:
        if isinstance(module, nn.Sequential):
            for child_name, child in module._modules.items():
                shape = _walk(child, _join(name, child_name), shape, rows, nn)
            return shape
        if isinstance(module, nn.Residual):
            out = _walk(module.fn, _join(name, "fn"), shape, rows, nn)
            shortcut = getattr(module, "shortcut", None)
            if shortcut is not None:  # a projection: y = f(x) + shortcut(x)
                skip = _walk(shortcut, _join(name, "shortcut"), shape, rows, nn)
            else:
                skip = shape
            if tuple(out) != tuple(skip):
                module.output_shape(shape)  # raises the ShapeError that names the block
            size = math.prod(out)
            if shortcut is None:
                what, formula = "Residual (x + f(x))", "out = in (the block keeps the shape)"
                backward = ("dL/dx = dL/dy + f.backward(dL/dy): the gradient goes through the "
                            "skip unchanged")
            else:
                what, formula = ("Residual (f(x) + shortcut(x))",
                                 "out = f's output = the shortcut's output")
                backward = ("dL/dx = f.backward(dL/dy) + shortcut.backward(dL/dy): the gradient "
                            "goes back through both branches")
            rows.append(_row(name or "residual", what, shape, tuple(out), module,
                             formula=[formula], flops=(size, size, size, size),
                             backward=backward))
            return tuple(out)
        if isinstance(module, nn.SeparableConv2d):
            shape = _walk(module.depthwise, _join(name, "depthwise"), shape, rows, nn)
            return _walk(module.pointwise, _join(name, "pointwise"), shape, rows, nn)
        out = tuple(module.output_shape(shape))
    except ShapeError as error:
        if name and not str(error).startswith("layer "):
            raise ShapeError(f"layer {name} ({type(module).__name__}): {error}") from None
        raise
    rows.append(_explain_layer(module, name or type(module).__name__, tuple(shape), out, nn))
    return out


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _row(name, kind, in_shape, out_shape, module, *, formula, flops, backward, macs=0,
         params_formula=None, im2col=None):
    forward, inference, back, back_input = flops
    params = sum(p.size for p in module._parameters.values() if p is not None)
    if params_formula is None:
        params_formula = "0" if params == 0 else _sum_of_shapes(module)
    return {"name": name, "type": kind, "input_shape": list(in_shape),
            "output_shape": list(out_shape), "output_size": formula, "params": int(params),
            "params_formula": params_formula, "im2col": im2col, "backward": backward,
            "macs": macs, "flops_forward": forward, "flops_inference": inference,
            "flops_backward": back, "flops_backward_input": back_input, "bytes_kept": None}


def _sum_of_shapes(module) -> str:
    parts = ["*".join(str(s) for s in p.shape) for p in module._parameters.values()
             if p is not None]
    total = sum(p.size for p in module._parameters.values() if p is not None)
    return f"{' + '.join(parts)} = {total:,}"


# ----------------------------------------------------------------------------------------------
# One layer
# ----------------------------------------------------------------------------------------------
def _explain_layer(module, name, in_shape, out_shape, nn) -> dict:
    kind = type(module).__name__
    out_size = math.prod(out_shape)
    in_size = math.prod(in_shape)
    if isinstance(module, (nn.Conv2d, nn.Conv1d)):
        return _conv_row(module, name, in_shape, out_shape)
    if isinstance(module, nn.ConvTranspose2d):
        return _conv_transpose_row(module, name, in_shape, out_shape)
    if isinstance(module, nn.Linear):
        k, m = module.in_features, module.out_features
        rows_in = in_size // k
        macs = rows_in * k * m
        bias = out_size if module.bias is not None else 0
        params_formula = (f"{m}*{k}" + (f" + {m}" if module.bias is not None else "")
                          + f" = {module.num_parameters():,}")
        return _row(name, kind, in_shape, out_shape, module,
                    formula=[f"features: out = out_features = {m}"],
                    params_formula=params_formula, macs=macs,
                    flops=(2 * macs + bias, 2 * macs + bias, 4 * macs + bias, 2 * macs),
                    backward=f"dL/dx = dL/dy @ W ({rows_in}x{m} @ {m}x{k}); dL/dW = dL/dy^T @ x "
                             f"({m}x{rows_in} @ {rows_in}x{k}); dL/db = sum of dL/dy over the "
                             f"batch")
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
        return _pool_row(module, name, in_shape, out_shape, nn)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.GlobalAvgPool2d,
                           nn.GlobalMaxPool2d)):
        window = math.prod(in_shape[2:]) // max(1, math.prod(out_shape[2:]))
        is_max = "Max" in kind
        lines = [f"{axis}: out = {o} (fixed by the layer)"
                 for axis, o in zip(("height", "width"), out_shape[2:])]
        return _row(name, kind, in_shape, out_shape, module, formula=lines,
                    flops=(out_size * window, out_size * window,
                           out_size * (1 if is_max else window),
                           out_size * (1 if is_max else window)),
                    backward=("dL/dy goes to the largest input of each bin, zero elsewhere"
                              if is_max else "dL/dy / (bin size) spread evenly over each bin"))
    if isinstance(module, nn.Flatten):
        sizes = "*".join(str(s) for s in in_shape[1:])
        return _row(name, kind, in_shape, out_shape, module,
                    formula=[f"features: out = {sizes} = {out_shape[-1]:,}"
                             if len(out_shape) == 2 else f"out = {list(out_shape)}"],
                    flops=(0, 0, 0, 0), backward="dL/dx = dL/dy reshaped back to the input shape")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        fwd, inf, back = ELEMENTWISE_FLOPS["BatchNorm"]
        c = module.num_features
        return _row(name, kind, in_shape, out_shape, module, formula=["out = in"],
                    params_formula=(f"2*{c} (gamma, beta) = {2 * c:,}" if module.affine
                                    else "0"),
                    flops=(fwd * in_size, inf * in_size, back * in_size, 6 * in_size),
                    backward="x_hat = (x - mean)/sqrt(var + eps); dL/dx = gamma/sqrt(var + eps) "
                             "* (dy - mean(dy) - x_hat * mean(dy * x_hat)) per channel; "
                             "dL/dgamma = sum(dy * x_hat); dL/dbeta = sum(dy)")
    if kind in ELEMENTWISE_FLOPS:
        fwd, inf, back = ELEMENTWISE_FLOPS[kind]
        rules = {"ReLU": "dL/dx = dL/dy * (x > 0)",
                 "LeakyReLU": "dL/dx = dL/dy * (1 if x > 0 else negative_slope)",
                 "Sigmoid": "dL/dx = dL/dy * s * (1 - s), s = sigmoid(x)",
                 "Tanh": "dL/dx = dL/dy * (1 - tanh(x)^2)",
                 "Gaussian": "dL/dx = dL/dy * (-2x * exp(-x^2))",
                 "Softmax": "dL/dx = s * (dL/dy - sum(dL/dy * s)), s = softmax(x)",
                 "LogSoftmax": "dL/dx = dL/dy - softmax(x) * sum(dL/dy)",
                 "Dropout": "dL/dx = dL/dy * mask / (1 - p) (the mask of the forward pass)",
                 "Dropout2d": "dL/dx = dL/dy * mask / (1 - p), one mask value per channel"}
        return _row(name, kind, in_shape, out_shape, module, formula=["out = in"],
                    flops=(fwd * in_size, inf * in_size, back * in_size, back * in_size),
                    backward=rules[kind])
    if isinstance(module, nn.Identity):
        return _row(name, kind, in_shape, out_shape, module, formula=["out = in"],
                    flops=(0, 0, 0, 0), backward="dL/dx = dL/dy")
    # a layer numcnn does not know (a user's own): shapes and parameters only
    return _row(name, kind, in_shape, out_shape, module, formula=["(no formula known)"],
                flops=(None, None, None, None), backward="(a user-defined backward)")


def _conv_axes(module, in_shape, out_shape):
    d = module._dims
    pads = module._pads[2 - d:]
    lines = []
    for axis, size, k, s, (lo, hi), dil in zip(module._axes, in_shape[2:], module.kernel_size,
                                               module.stride, pads, module.dilation):
        lines.append(f"{axis}: {size_formula(size, k, s, lo, hi, dil)}")
    return lines


def _conv_row(module, name, in_shape, out_shape):
    n, c_in = in_shape[0], module.in_channels
    c_out, g = module.out_channels, module.groups
    kernel = module.kernel_size
    k_text = "*".join(str(k) for k in kernel)
    per_group_in = c_in // g
    k_rows = per_group_in * math.prod(kernel)
    positions = n * math.prod(out_shape[2:])
    macs = c_out * k_rows * positions
    bias = math.prod(out_shape) if module.bias is not None else 0
    kh = "kh*kw" if len(kernel) == 2 else "k"
    out_sp = "H_out*W_out" if len(kernel) == 2 else "L_out"
    cols = f"(C_in/groups*{kh}) x (N*{out_sp})"
    out_text = "*".join(str(s) for s in out_shape[2:])
    group_note = f", per group ({g} groups)" if g > 1 else ""
    im2col_text = (f"columns {cols} = ({c_in}/{g}*{k_text}) x ({n}*{out_text}) = "
                   f"{k_rows:,} x {positions:,}; weights C_out x (C_in/groups*{kh}) = "
                   f"{c_out // g if g > 1 else c_out} x {k_rows:,}{group_note}; output = weights "
                   f"@ columns = {c_out // g if g > 1 else c_out} x {positions:,}")
    params_formula = (f"{c_out}*{per_group_in}*{k_text}" + (f" + {c_out}" if module.bias is not None
                                                              else "")
                      + f" = {module.num_parameters():,}")
    stride = "x".join(str(s) for s in module.stride)
    zeros = ("no zeros inserted" if max(module.stride) == 1
             else "stride-1 zeros between its values")
    backward = (f"dL/dx = full correlation of dL/dy (dilated by the stride {stride}: {zeros}) "
                f"with the kernel rotated by 180 degrees (im2col: col2im(W^T @ dY), "
                f"{k_rows:,}x{c_out // g} @ {c_out // g}x{positions:,}); dL/dW = correlation of "
                f"the input x with dL/dy (dY @ columns^T, {c_out // g}x{positions:,} @ "
                f"{positions:,}x{k_rows:,}); dL/db = sum of dL/dy over N and the positions")
    return _row(name, type(module).__name__, in_shape, out_shape, module,
                formula=_conv_axes(module, in_shape, out_shape), params_formula=params_formula,
                macs=macs, im2col={"columns": [k_rows, positions],
                                   "weights": [c_out // g, k_rows], "groups": g,
                                   "text": im2col_text},
                flops=(2 * macs + bias, 2 * macs + bias, 4 * macs + bias, 2 * macs),
                backward=backward)


def _conv_transpose_row(module, name, in_shape, out_shape):
    n, c_in, c_out, g = in_shape[0], module.in_channels, module.out_channels, module.groups
    kernel = module.kernel_size
    k_cols = c_out // g * math.prod(kernel)
    positions = n * math.prod(in_shape[2:])
    macs = c_in * k_cols * positions
    bias = math.prod(out_shape) if module.bias is not None else 0
    lines = []
    for axis, size, k, s, (lo, hi), dil, extra in zip(
            ("height", "width"), in_shape[2:], kernel, module.stride, module._pads,
            module.dilation, module.output_padding):
        lines.append(f"{axis}: {transposed_formula(size, k, s, lo, hi, dil, extra)}")
    return _row(name, "ConvTranspose2d", in_shape, out_shape, module, formula=lines, macs=macs,
                im2col={"columns": [k_cols, positions], "weights": [c_in // g, k_cols],
                        "groups": g,
                        "text": f"columns = W^T @ x = {k_cols:,} x {positions:,}, then col2im "
                                f"(the adjoint of a convolution's im2col)"},
                flops=(2 * macs + bias, 2 * macs + bias, 4 * macs + bias, 2 * macs),
                backward="dL/dx = the convolution of dL/dy with the kernel (the forward pass of "
                         "the matching Conv2d); dL/dW = correlation of dL/dy with x")


def _pool_row(module, name, in_shape, out_shape, nn):
    from .functional import core

    kind = type(module).__name__
    stride = module.stride
    padding = getattr(module, "padding", 0)
    dilation = getattr(module, "dilation", 1)
    kernel, stride, padding, dilation = core.pool_args(kind, module.kernel_size, stride, padding,
                                                     dilation)
    lines = []
    for axis, size, k, s, p, d in zip(("height", "width"), in_shape[2:], kernel, stride, padding,
                                      dilation):
        lines.append(f"{axis}: {size_formula(size, k, s, p, p, d, module.ceil_mode)}")
    window = math.prod(kernel)
    out_size = math.prod(out_shape)
    if isinstance(module, nn.MaxPool2d):
        flops = ((window - 1) * out_size,) * 2 + (out_size, out_size)
        backward = "dL/dy goes to the largest input of each window (the winner), zero elsewhere"
    elif isinstance(module, nn.AvgPool2d):
        flops = (window * out_size,) * 2 + (window * out_size,) * 2
        backward = f"dL/dy / {window} (the window size) spread evenly over each window"
    else:
        flops = (3 * window * out_size,) * 2 + (3 * window * out_size,) * 2
        backward = "dL/dx = dL/dy * x^(p-1) * y^(1-p) over each window"
    return _row(name, kind, in_shape, out_shape, module, formula=lines, flops=flops,
                backward=backward)


# ----------------------------------------------------------------------------------------------
# Measured memory
# ----------------------------------------------------------------------------------------------
def _measure(model, shape, rows):
    """Bytes each layer keeps for backward, and the traced peak of one forward and backward."""
    from . import _random

    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    state = model.state_dict()
    rng_state = _random.get_rng().bit_generator.state
    was_training = model.training
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    try:
        model.train()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            y = model(x)
            kept = _kept_bytes(model, rows)
            model.backward_params(np.ones_like(y))
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    finally:
        model.load_state_dict(state)
        model.zero_grad()
        model.train(was_training)
        _random.get_rng().bit_generator.state = rng_state
        for module in model.modules():  # drop caches a layer's backward did not take
            module.__dict__.get("_caches", {}).pop(threading.get_ident(), None)
    return kept, int(peak)


def _kept_bytes(model, rows) -> int:
    """Fill ``bytes_kept`` of each row from the caches the forward pass kept; the total."""
    def key(array):
        root = array
        while isinstance(root.base, np.ndarray):
            root = root.base
        return (root.__array_interface__["data"][0], root.nbytes), root

    seen: set = {key(p.data)[0] for p in model.parameters()}  # weights are not activations
    by_name = {row["name"]: row for row in rows}
    total = 0
    for name, module in model.named_modules():
        cache = module._cache  # this thread's kept cache (numcnn.nn.Module._keep)
        if cache is None:
            continue
        size = 0
        for array in _arrays(cache, depth=0):
            address, root = key(array)
            if address not in seen:
                seen.add(address)
                size += root.nbytes
        total += size
        row = by_name.get(name or type(module).__name__)
        if row is not None:
            row["bytes_kept"] = size
    for row in rows:
        if row["bytes_kept"] is None:
            row["bytes_kept"] = 0
    return total


def _arrays(value, depth):
    if depth > 6:
        return
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item, depth + 1)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays(item, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for item in vars(value).values():
            yield from _arrays(item, depth + 1)
    elif hasattr(value, "__slots__"):
        for slot in value.__slots__:
            yield from _arrays(getattr(value, slot, None), depth + 1)


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------
def _count(value) -> str:
    return "?" if value is None else f"{value:,}"


def _bytes(value) -> str:
    if value is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _summary_columns(report):
    header = ["Layer", "Type", "Output shape", "Params", "FLOPs fwd", "FLOPs bwd", "Kept"]
    body = [[row["name"], row["type"], _shape(row["output_shape"]), _count(row["params"]),
             _count(row["flops_forward"]), _count(row["flops_backward"]),
             _bytes(row["bytes_kept"])] for row in report.rows]
    return header, body


def _total_lines(report) -> list[str]:
    t = report.totals
    lines = [f"input {_shape((report.batch_size, *report.input_shape))} -> output "
             f"{_shape(t['output_shape'])}",
             f"parameters: {t['params']:,}",
             f"FLOPs per image: inference {t['flops_per_image_inference']:,}, training "
             f"{t['flops_per_image_training']:,} (forward + backward, without the first layer's "
             f"input gradient)",
             f"kept for backward at batch {report.batch_size}: {_bytes(t['bytes_kept'])}; peak "
             f"activation memory (forward + backward, traced): "
             f"{_bytes(t['peak_activation_bytes'])}"]
    if t["unknown_layers"]:
        lines.append(f"FLOPs unknown for: {', '.join(t['unknown_layers'])} (user-defined layers "
                     f"are not counted)")
    return lines


def _table(report) -> str:
    lines = []
    for row in report.rows:
        lines.append(f"{row['name']} ({row['type']}): {_shape(row['input_shape'])} -> "
                     f"{_shape(row['output_shape'])}")
        for formula in row["output_size"]:
            lines.append(f"    {formula}")
        lines.append(f"    params: {row['params_formula']}")
        if row["im2col"]:
            lines.append(f"    im2col: {row['im2col']['text']}")
        lines.append(f"    backward: {row['backward']}")
        lines.append(f"    FLOPs: forward {_count(row['flops_forward'])}, backward "
                     f"{_count(row['flops_backward'])}; kept for backward "
                     f"{_bytes(row['bytes_kept'])}")
        lines.append("")
    header, body = _summary_columns(report)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    align = ["<", "<", "<", ">", ">", ">", ">"]
    lines.append("  ".join(f"{h:{a}{w}}" for h, a, w in zip(header, align, widths)))
    lines.append(rule)
    for r in body:
        lines.append("  ".join(f"{v:{a}{w}}" for v, a, w in zip(r, align, widths)))
    lines.append(rule)
    lines.extend(_total_lines(report))
    return "\n".join(lines)


def _markdown(report) -> str:
    header, body = _summary_columns(report)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    for r in body:
        lines.append("| " + " | ".join(v if i >= 3 else f"`{v}`" for i, v in enumerate(r)) + " |")
    lines.append("")
    lines.extend(f"- {line}" for line in _total_lines(report))
    lines.append("")
    for row in report.rows:
        lines.append(f"**{row['name']} ({row['type']})** `{_shape(row['input_shape'])}` -> "
                     f"`{_shape(row['output_shape'])}`")
        lines.append("")
        for formula in row["output_size"]:
            lines.append(f"- `{formula}`")
        lines.append(f"- params: `{row['params_formula']}`")
        if row["im2col"]:
            lines.append(f"- im2col: {row['im2col']['text']}")
        lines.append(f"- backward: {row['backward']}")
        lines.append("")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
