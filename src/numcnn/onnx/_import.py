"""ONNX graph -> numcnn model: Sequential chains and residual additions of standard operators.

The nodes are read in their (topological) order. Every value the graph computes from its input
is kept as a *chain*: the list of numcnn layers that turns the graph input into it. A node with
one computed input appends a layer to its input's chain; an ``Add`` of two chains that share
their first layers (``x``) becomes a residual block appended to ``x``'s chain: ``x + f(x)`` is
``Residual(f)``, and ``f(x) + g(x)`` (ResNet's projection shortcut) ``Residual(f, shortcut=g)``,
``f`` the longer branch. So chains and residual blocks nest as they do in numcnn, and any other
shape of graph (a value used by two nodes that never meet again, a second graph input) is
refused with the node that makes it so.

Operators read (https://onnx.ai/onnx/operators/), with what ``torch.onnx.export`` emits for the
same PyTorch layers:

``Conv`` (1-D, 2-D; pads, auto_pad, strides, dilations, group; a ``Pad`` before it in reflect,
edge or wrap mode becomes ``padding_mode``) -> Conv1d / Conv2d; ``ConvTranspose`` ->
ConvTranspose2d; ``BatchNormalization`` (inference form) -> BatchNorm1d / BatchNorm2d;
``MaxPool``, ``AveragePool`` -> MaxPool2d, AvgPool2d (ceil_mode, count_include_pad, extra
end padding read back as ceil_mode); ``LpPool`` (even p) -> LPPool2d; ``GlobalAveragePool``,
``GlobalMaxPool`` (-> GlobalAvgPool2d / GlobalMaxPool2d when a ``Flatten`` follows);
``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``LogSoftmax``, ``Exp(Neg(x*x))``
-> Gaussian; ``Flatten`` (axis 1) and ``Reshape`` to a flattened shape -> Flatten; ``Gemm`` and
``MatMul`` (+ ``Add`` of a bias) with constant weights -> Linear; ``Add`` -> Residual or a bias;
``Dropout`` -> Dropout; ``Identity``; ``Constant``; shape arithmetic on constants (folded).

And what :mod:`numcnn.onnx._export` writes for layers without an operator of their own:
``Pow -> AveragePool -> Mul -> Pow`` (and ``Abs -> MaxPool``) -> LPPool2d; two bin-averaging
``MatMul`` -> AdaptiveAvgPool2d; ``Slice``/``ReduceMax``/``Concat`` bins -> AdaptiveMaxPool2d; a
depthwise ``Conv`` of ones and a ``Div`` -> AvgPool2d; ``x * gain - offset`` at the input -> the
preprocessing in ``model.metadata``. So every numcnn model comes back from its ONNX file.

Nothing in the file is executed: the graph is only read, external data files are refused, and
every tensor's size is checked before it is allocated.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from .. import _random, nn
from .._text import a, count
from ..functional._windows import out_size
from ..functional.pooling import adaptive_pool, avg_pool
from . import OnnxError, _require_onnx

MAX_BYTES = 1 << 30  # a model file larger than this is refused unless max_bytes says otherwise
MAX_ELEMENTS = 1 << 28  # per tensor (1 GiB of float32)
MAX_DIM = 1 << 20  # per axis of the graph input
MAX_FOLDED = 1 << 20  # elements of a constant computed on load (shape arithmetic is small)

_FLOAT_TYPES = None  # ONNX tensor element types read as float32 (set on first use)


class _Chain:
    """A value computed from the graph input: ``layers`` applied in order, and its shape (with
    batch 1). ``pending`` holds an operator that only makes sense with the next one (a Pad
    before a Conv, x*x before Neg and Exp), as ``(node name, kind, data)``."""

    __slots__ = ("layers", "shape", "pending")

    def __init__(self, layers, shape, pending=None):
        self.layers, self.shape, self.pending = list(layers), tuple(shape), pending


def _as_block(layers):
    """One module for a branch: the layer itself, or a Sequential of them."""
    if len(layers) == 1 and isinstance(layers[0], nn.Sequential):
        return layers[0]
    return nn.Sequential(*layers)


def _refuse(node, why: str):
    raise OnnxError(f"node {node.name or '(unnamed)'!r} ({node.op_type}): {why}")


def _attrs(node) -> dict:
    onnx = _require_onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _float(value) -> float:
    """An ONNX float attribute (stored as float32) as the shortest decimal it stands for:
    1e-5 comes back as 1e-05, not 9.999999747378752e-06."""
    return float(str(np.float32(value)))


def _int_list(value, node, name, length=None):
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        _refuse(node, f"attribute {name} must be a list of ints, got {value!r}")
    if length is not None and len(out) != length:
        _refuse(node, f"attribute {name} must have {count(length, 'entry')}, got {out}")
    return out


def _tensor(tensor, where: str) -> np.ndarray:
    """An ONNX TensorProto as a NumPy array, its size checked before anything is allocated."""
    onnx = _require_onnx()
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        raise OnnxError(f"{where}: the tensor {tensor.name!r} is stored in an external data file; "
                        f"numcnn reads self-contained ONNX files only (save the model with "
                        f"onnx.save(model, path, save_as_external_data=False))")
    dims = list(tensor.dims)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise OnnxError(f"{where}: the tensor {tensor.name!r} has shape {dims}, more than "
                        f"{MAX_ELEMENTS:,} elements or a negative size; refused")
    try:
        array = onnx.numpy_helper.to_array(tensor)
    except Exception as error:  # malformed data: onnx raises several kinds
        raise OnnxError(f"{where}: the tensor {tensor.name!r} cannot be read: {error}") from None
    if array.shape != tuple(dims):
        raise OnnxError(f"{where}: the tensor {tensor.name!r} holds "
                        f"{count(array.size, 'value')} for "
                        f"shape {dims}")
    return array


def _weights(array, node, what: str) -> np.ndarray:
    if array.dtype.kind != "f":
        _refuse(node, f"{what} must be floating-point, got {array.dtype}")
    return np.array(array, dtype=np.float32)


# What an operator waiting for the next one ("pending") is read as part of.
_PATTERNS = {
    "Pad": "a Conv (as its padding_mode)",
    "x*x": "exp(-x*x), a Gaussian", "-x*x": "exp(-x*x), a Gaussian",
    "scale": "the preprocessing folded in at the input (x * gain - offset)",
    "pow": "LPPool2d: (AveragePool(x^p) * kh*kw)^(1/p)",
    "lp-mean": "LPPool2d: (AveragePool(x^p) * kh*kw)^(1/p)",
    "lp-sum": "LPPool2d: (AveragePool(x^p) * kh*kw)^(1/p)",
    "abs": "LPPool2d with p = inf: MaxPool(|x|)", "-abs": "LPPool2d with p = -inf",
    "-max": "LPPool2d with p = -inf: -MaxPool(-|x|)",
    "columns": "AdaptiveAvgPool2d: rows @ x @ columns with its bin-averaging matrices",
    "window-sum": "AvgPool2d: window sums (a depthwise Conv of ones) / divisors",
    "slice": "AdaptiveMaxPool2d: Slice, ReduceMax and Concat per bin",
    "bin-max": "AdaptiveMaxPool2d: Slice, ReduceMax and Concat per bin",
    "rows-max": "AdaptiveMaxPool2d: Slice, ReduceMax and Concat per bin",
}


class _Reader:
    def __init__(self, graph, input_name: str, input_shape):
        self.graph = graph
        self.folded = None  # (gain, offset) of preprocessing folded in at the input
        self.folded_elements = 0  # elements of the constants computed so far (bounded)
        self.static_batch = None  # the batch size of a graph exported for one
        self.values: dict[str, object] = {input_name: _Chain([], (1, *input_shape))}
        self.input_name = input_name

    # -- values ---------------------------------------------------------------------------------
    def chain(self, node, name: str) -> _Chain:
        value = self.values.get(name)
        if isinstance(value, _Chain):
            return value
        if value is None:
            _refuse(node, f"its input {name!r} is not produced by any node read so far")
        _refuse(node, f"its input {name!r} is a constant, where the data (a value computed from "
                      f"the graph input) was expected")

    def const(self, node, index: int, what: str, required: bool = True):
        if index >= len(node.input) or not node.input[index]:
            if required:
                _refuse(node, f"needs its {what} input")
            return None
        value = self.values.get(node.input[index])
        if isinstance(value, np.ndarray):
            return value
        _refuse(node, f"its {what} ({node.input[index]!r}) must be a constant (an initializer); "
                      f"numcnn layers hold their weights")

    def append(self, node, chain: _Chain, layer, pending_ok=False) -> _Chain:
        if chain.pending is not None and not pending_ok:
            self.refuse_pending(node, chain)
        try:
            shape = layer.output_shape(chain.shape)
        except Exception as error:  # ShapeError, ValueError: the graph does not fit together
            _refuse(node, f"does not fit the shape {chain.shape} of its input: {error}")
        return _Chain(chain.layers + [layer], shape)

    @staticmethod
    def refuse_pending(node, chain):
        name, kind, _ = chain.pending
        _refuse(node, f"follows the node {name!r} ({kind}), which numcnn reads only as part of "
                      f"{_PATTERNS.get(kind, 'a longer pattern')}")

    # -- the nodes ------------------------------------------------------------------------------
    def read(self, node):
        inputs = [name for name in node.input if name]
        if node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx") and inputs \
                and all(isinstance(self.values.get(name), np.ndarray) for name in inputs):
            # arithmetic on constants only (exporters compute pads and shapes so): fold it
            args = [self.values.get(name) if name else None for name in node.input]
            attrs = _attrs(node)
            size = _folded_size(node, attrs, args)
            self.folded_elements += size
            if size > MAX_FOLDED or self.folded_elements > 4 * MAX_FOLDED:
                _refuse(node, f"computing constants of {self.folded_elements:,} elements is "
                              f"refused (at most {MAX_FOLDED:,} each, {4 * MAX_FOLDED:,} in all)")
            try:
                result = _fold(node, attrs, args)
            except (ValueError, IndexError, TypeError, KeyError) as error:
                _refuse(node, f"cannot be computed on its constant inputs: {error}")
            self.values[node.output[0]] = result
            return
        handler = getattr(self, f"op_{node.op_type}", None)
        if node.domain not in ("", "ai.onnx") or handler is None:
            known = sorted(name[3:] for name in dir(self) if name.startswith("op_"))
            _refuse(node, f"operator {node.domain + '.' if node.domain else ''}{node.op_type} "
                          f"has no numcnn layer; numcnn reads {', '.join(known)}")
        result = handler(node, _attrs(node))
        outputs = [o for o in node.output if o]
        if outputs:
            self.values[outputs[0]] = result

    def op_Constant(self, node, attrs):
        if "value" in attrs:
            return _tensor(attrs["value"], f"node {node.name!r} (Constant)")
        for key in ("value_float", "value_int"):
            if key in attrs:
                return np.array(attrs[key], np.float32 if key == "value_float" else np.int64)
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                values = list(attrs[key])
                if len(values) > MAX_ELEMENTS:
                    _refuse(node, "constant too large")
                return np.array(values, np.float32 if key == "value_floats" else np.int64)
        _refuse(node, f"a constant of kind {sorted(attrs)} is not read")

    def op_Identity(self, node, attrs):
        if node.input[0] not in self.values:
            self.chain(node, node.input[0])  # refuses: produced by no node read so far
        return self.values[node.input[0]]

    # convolutions
    def op_Pad(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if chain.pending is not None:
            self.refuse_pending(node, chain)
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        pads = self.const(node, 1, "pads").astype(np.int64).tolist()
        if len(node.input) > 2 and node.input[2]:
            value = self.const(node, 2, "constant_value")
            if mode == "constant" and np.any(value != 0):
                _refuse(node, "padding with a value other than 0 has no numcnn layer")
        if len(node.input) > 3 and node.input[3]:
            _refuse(node, "the axes input is not read; pad every axis")
        rank = len(chain.shape)
        if len(pads) != 2 * rank or any(p != 0 for p in pads[:2] + pads[rank:rank + 2]) \
                or min(pads) < 0:
            _refuse(node, f"only non-negative padding of the spatial axes is read, got {pads}")
        modes = {"constant": "zeros", "reflect": "reflect", "edge": "replicate",
                 "wrap": "circular"}
        if mode not in modes:
            _refuse(node, f"mode {mode!r} has no numcnn padding mode")
        spatial = list(zip(pads[2:rank], pads[rank + 2:]))
        return _Chain(chain.layers, chain.shape, (node.name, "Pad", (modes[mode], spatial)))

    def op_Conv(self, node, attrs):
        chain = self.chain(node, node.input[0])
        weight = _weights(self.const(node, 1, "weight"), node, "the weight")
        bias = self.const(node, 2, "bias", required=False)
        if weight.ndim not in (3, 4):
            _refuse(node, f"only 1-D and 2-D convolutions are read (weight of rank 3 or 4), got "
                          f"a weight of shape {weight.shape}")
        d = weight.ndim - 2
        group = int(attrs.get("group", 1))
        kernel = tuple(weight.shape[2:])
        if "kernel_shape" in attrs and tuple(_int_list(attrs["kernel_shape"], node,
                                                       "kernel_shape")) != kernel:
            _refuse(node, f"kernel_shape {list(attrs['kernel_shape'])} differs from the "
                          f"weight's {list(kernel)}")
        strides = tuple(_int_list(attrs.get("strides", [1] * d), node, "strides", d))
        dilations = tuple(_int_list(attrs.get("dilations", [1] * d), node, "dilations", d))
        if len(chain.shape) != d + 2:
            _refuse(node, f"{a(f'{d}-D')} convolution of {a(f'{len(chain.shape)}-D')} input")
        pads = self._pads(node, attrs, chain.shape, kernel, strides, dilations, d)
        padding_mode = "zeros"
        if chain.pending is not None:
            _, kind, data = chain.pending
            if kind != "Pad":
                self.refuse_pending(node, chain)
            mode, extra = data
            if mode == "zeros":
                pads = [(lo + a, hi + b) for (lo, hi), (a, b) in zip(pads, extra)]
            elif any(p != (0, 0) for p in pads):
                _refuse(node, "a Conv with its own padding after a Pad node has no numcnn layer")
            else:
                pads, padding_mode = extra, mode
        if d == 2 and chain.pending is None and bias is None and group == chain.shape[1] \
                and weight.shape[:2] == (group, 1) and dilations == (1, 1) \
                and np.all(weight == 1) and any(lo != hi for lo, hi in pads):
            # window sums (numcnn's export of AvgPool2d with divisor_override or hanging
            # windows): an AvgPool2d once the Div by the divisors follows
            return _Chain(chain.layers, chain.shape,
                          (node.name, "window-sum", (kernel, strides, pads)))
        padding = self._padding(node, pads, kernel, strides, dilations)
        in_channels = weight.shape[1] * group
        cls = nn.Conv1d if d == 1 else nn.Conv2d
        try:
            with _random.kept_state():
                layer = cls(in_channels, weight.shape[0], kernel, strides, padding, dilations,
                            groups=group, bias=bias is not None, padding_mode=padding_mode)
        except ValueError as error:
            _refuse(node, str(error))
        layer.weight.data = weight
        layer.weight.grad = np.zeros_like(weight)
        if bias is not None:
            layer.bias.data = self._vector(node, bias, weight.shape[0], "bias")
            layer.bias.grad = np.zeros_like(layer.bias.data)
        return self.append(node, chain, layer, pending_ok=True)

    def _pads(self, node, attrs, shape, kernel, strides, dilations, d):
        """((lo, hi), ...) per spatial axis from pads / auto_pad."""
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("NOTSET", ""):
            pads = _int_list(attrs.get("pads", [0] * (2 * d)), node, "pads", 2 * d)
            if min(pads) < 0:
                _refuse(node, f"negative pads {pads}")
            return list(zip(pads[:d], pads[d:]))
        if auto_pad == "VALID":
            return [(0, 0)] * d
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = []
            for n, k, s, dil in zip(shape[2:], kernel, strides, dilations):
                total = max((math.ceil(n / s) - 1) * s + dil * (k - 1) + 1 - n, 0)
                small, large = total // 2, total - total // 2
                out.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
            return out
        _refuse(node, f"auto_pad {auto_pad!r} is not an ONNX setting")

    @staticmethod
    def _padding(node, pads, kernel, strides, dilations):
        """numcnn's padding argument for per-axis (lo, hi) pads."""
        if all(lo == hi for lo, hi in pads):
            return tuple(lo for lo, _ in pads)
        same = [(dil * (k - 1) // 2, dil * (k - 1) - dil * (k - 1) // 2)
                for k, dil in zip(kernel, dilations)]
        if all(s == 1 for s in strides) and [tuple(p) for p in pads] == same:
            return "same"
        _refuse(node, f"pads {[list(p) for p in pads]} differ before and after an axis; numcnn's "
                      f"convolutions pad both sides alike (or as padding='same')")

    @staticmethod
    def _vector(node, value, size, what):
        value = _weights(np.asarray(value), node, f"the {what}")
        if value.size != size:
            _refuse(node, f"the {what} has {count(value.size, 'value')} for "
                          f"{count(size, 'channel')}")
        return value.reshape(size).copy()

    def op_ConvTranspose(self, node, attrs):
        chain = self.chain(node, node.input[0])
        weight = _weights(self.const(node, 1, "weight"), node, "the weight")
        bias = self.const(node, 2, "bias", required=False)
        if weight.ndim != 4 or len(chain.shape) != 4:
            _refuse(node, "only 2-D transposed convolutions are read")
        if "output_shape" in attrs:
            _refuse(node, "the output_shape attribute is not read; give pads and output_padding")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET",
                                                                                    "VALID", ""):
            _refuse(node, "auto_pad SAME_* is not read; give pads")
        group = int(attrs.get("group", 1))
        kernel = tuple(weight.shape[2:])
        strides = tuple(_int_list(attrs.get("strides", [1, 1]), node, "strides", 2))
        dilations = tuple(_int_list(attrs.get("dilations", [1, 1]), node, "dilations", 2))
        output_padding = tuple(_int_list(attrs.get("output_padding", [0, 0]), node,
                                         "output_padding", 2))
        pads = _int_list(attrs.get("pads", [0] * 4), node, "pads", 4)
        if pads[:2] != pads[2:]:
            _refuse(node, f"pads {pads} differ before and after an axis")
        try:
            with _random.kept_state():
                layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1] * group, kernel,
                                           strides, tuple(pads[:2]), output_padding, group,
                                           bias is not None, dilations)
        except ValueError as error:
            _refuse(node, str(error))
        layer.weight.data = weight
        layer.weight.grad = np.zeros_like(weight)
        if bias is not None:
            layer.bias.data = self._vector(node, bias, weight.shape[1] * group, "bias")
            layer.bias.grad = np.zeros_like(layer.bias.data)
        return self.append(node, chain, layer)

    # normalisation and activations
    def op_BatchNormalization(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if int(attrs.get("training_mode", 0)) or len([o for o in node.output if o]) > 1:
            _refuse(node, "only the inference form (training_mode=0, one output) is read")
        rank = len(chain.shape)
        if rank not in (2, 3, 4):
            _refuse(node, f"a batch norm of {a(f'{rank}-D')} input has no numcnn layer")
        c = chain.shape[1]
        scale, bias, mean, var = (self._vector(node, self.const(node, i, what), c, what)
                                  for i, what in ((1, "scale"), (2, "bias"), (3, "mean"),
                                                  (4, "var")))
        cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
        momentum = round(1.0 - _float(attrs.get("momentum", 0.9)), 6)  # ONNX weighs the old value
        layer = cls(c, eps=_float(attrs.get("epsilon", 1e-5)), momentum=momentum)
        layer.weight.data, layer.bias.data = scale, bias
        layer.running_mean[...], layer.running_var[...] = mean, var
        return self.append(node, chain, layer)

    def _activation(self, node, layer):
        return self.append(node, self.chain(node, node.input[0]), layer)

    def op_Relu(self, node, attrs):
        return self._activation(node, nn.ReLU())

    def op_LeakyRelu(self, node, attrs):
        return self._activation(node, nn.LeakyReLU(_float(attrs.get("alpha", 0.01))))

    def op_Sigmoid(self, node, attrs):
        return self._activation(node, nn.Sigmoid())

    def op_Tanh(self, node, attrs):
        return self._activation(node, nn.Tanh())

    def op_Softmax(self, node, attrs):
        return self._activation(node, nn.Softmax(dim=int(attrs.get("axis", -1))))

    def op_LogSoftmax(self, node, attrs):
        return self._activation(node, nn.LogSoftmax(dim=int(attrs.get("axis", -1))))

    def op_Dropout(self, node, attrs):
        ratio = self.const(node, 1, "ratio", required=False)
        p = _float(ratio) if ratio is not None else _float(attrs.get("ratio", 0.5))
        if len([o for o in node.output if o]) > 1 and node.output[1] in self._used():
            _refuse(node, "its mask output is used; numcnn's Dropout gives one output")
        return self._activation(node, nn.Dropout(p))

    def _chain_and_const(self, node):
        """(chain, constant, constant first?) of a binary node, or Nones."""
        first, second = (self.values.get(name) for name in node.input[:2])
        if isinstance(first, _Chain) and isinstance(second, np.ndarray):
            return first, second, False
        if isinstance(first, np.ndarray) and isinstance(second, _Chain):
            return second, first, True
        return None, None, None

    def op_Mul(self, node, attrs):
        if len(node.input) == 2 and node.input[0] == node.input[1]:  # x*x: exp(-x^2) begins
            chain = self.chain(node, node.input[0])
            if chain.pending is not None:
                self.refuse_pending(node, chain)
            return _Chain(chain.layers, chain.shape, (node.name, "x*x", None))
        chain, value, _ = self._chain_and_const(node)
        if chain is not None and chain.pending is not None and chain.pending[1] == "lp-mean":
            p, kernel, strides, ceil = chain.pending[2]
            if value.size == 1 and float(value.reshape(-1)[0]) == kernel[0] * kernel[1]:
                return _Chain(chain.layers, chain.shape, (node.name, "lp-sum", chain.pending[2]))
        if chain is not None and not chain.layers and chain.pending is None \
                and self.folded is None:
            gain = self._per_channel(node, value, chain.shape)
            return _Chain(chain.layers, chain.shape, (node.name, "scale", gain))
        _refuse(node, "a product is read only as x*x (in exp(-x*x), numcnn's Gaussian), the "
                      "preprocessing folded in at the input, or LPPool2d's window size; a product "
                      "with weights has no numcnn layer")

    @staticmethod
    def _per_channel(node, value, shape):
        """A constant of one value per channel, broadcast over (N, C, ...): (C,) as float32."""
        value = _weights(np.asarray(value), node, "the constant")
        channels, rank = shape[1], len(shape)
        if value.size != channels or value.ndim > rank \
                or (value.ndim >= rank - 1 and value.shape[-(rank - 1)] != channels):
            _refuse(node, f"a constant of shape {value.shape} is not one value per channel of an "
                          f"input {shape}")
        return value.reshape(-1)

    def op_Sub(self, node, attrs):
        chain, value, const_first = self._chain_and_const(node)
        if chain is None or const_first or chain.pending is None or chain.pending[1] != "scale":
            _refuse(node, "a difference is read only as the preprocessing folded in at the input "
                          "(x * gain - offset)")
        self.folded = (chain.pending[2], self._per_channel(node, value, chain.shape))
        return _Chain(chain.layers, chain.shape)

    def op_Pow(self, node, attrs):
        chain, value, const_first = self._chain_and_const(node)
        if chain is None or const_first or value.size != 1:
            _refuse(node, "a power is read only as part of LPPool2d (x^p with a constant p)")
        exponent = float(value.reshape(-1)[0])
        if chain.pending is None:
            return _Chain(chain.layers, chain.shape, (node.name, "pow", exponent))
        if chain.pending[1] == "lp-sum":
            p, kernel, strides, ceil = chain.pending[2]
            if np.isclose(exponent, 1.0 / p, rtol=1e-6, atol=0):
                norm = int(p) if float(p).is_integer() else p
                layer = nn.LPPool2d(norm, _compact(kernel), _compact(strides), ceil)
                return self.append(node, chain, layer, pending_ok=True)
        self.refuse_pending(node, chain)

    def op_Div(self, node, attrs):
        chain, value, const_first = self._chain_and_const(node)
        if chain is None or const_first:
            _refuse(node, "a division is read only as AvgPool2d's: window sums / divisors")
        last = chain.layers[-1] if chain.layers else None
        if chain.pending is not None and chain.pending[1] == "window-sum":
            kernel, strides, pads = chain.pending[2]
            base = chain
        elif isinstance(last, nn.Conv2d) and last.bias is None and last.groups == \
                last.in_channels == last.out_channels and last.dilation == (1, 1) \
                and last.padding_mode == "zeros" and not isinstance(last.padding, str) \
                and np.all(last.weight.data == 1):
            kernel, strides = last.kernel_size, last.stride
            pads = [(p, p) for p in last.padding]
            base = _Chain(chain.layers[:-1], self._shape_before(chain))
        else:
            _refuse(node, "a division is read only as AvgPool2d's: window sums (a depthwise Conv "
                          "of ones) / divisors")
        flat = [lo for lo, _ in pads] + [hi for _, hi in pads]
        value = np.asarray(value, np.float64)
        if value.size == 1:  # divisor_override
            divisor = float(value.reshape(-1)[0])
            if divisor == 0 or not divisor.is_integer():
                _refuse(node, f"divisor {divisor} is not a whole number (divisor_override)")
            def make(padding, ceil):
                return nn.AvgPool2d(_compact(kernel), _compact(strides), _compact(padding),
                                    ceil_mode=ceil, divisor_override=int(divisor))

            layer = self._pool(node, base, make, kernel, strides, (1, 1), flat, False,
                               append=False)
            return self.append(node, base, layer, pending_ok=True)

        for ceil in (False, True):  # per-window divisors: count_include_pad (with ceil_mode)
            layer = nn.AvgPool2d(_compact(kernel), _compact(strides),
                                 _compact([lo for lo, _ in pads]), ceil_mode=ceil)
            try:
                out = layer.output_shape(base.shape)
            except Exception:
                continue
            rows, cols = (avg_pool._avg_divisor(n, k, s, lo, o, True) for n, k, s, (lo, _), o in
                          zip(base.shape[2:], kernel, strides, pads, out[2:]))
            if value.shape[-2:] == tuple(out[2:]) and np.array_equal(
                    value.reshape(out[2:]), np.outer(rows, cols)):
                return self.append(node, base, layer, pending_ok=True)
        _refuse(node, "the divisors are not those of an average pooling window")

    def _shape_before(self, chain):
        """The shape of a chain without its last layer (recomputed from the input)."""
        shape = self.values[self.input_name].shape
        for layer in chain.layers[:-1]:
            shape = layer.output_shape(shape)
        return shape

    def op_Slice(self, node, attrs):  # a bin of adaptive max pooling
        chain = self.chain(node, node.input[0])
        if chain.pending is not None and chain.pending[1] != "rows-max":
            self.refuse_pending(node, chain)
        values = [self.const(node, i, what, required=i < 3)
                  for i, what in enumerate(("data", "starts", "ends", "axes", "steps"))
                  if i > 0]
        starts, ends, axes, steps = (None if v is None else np.asarray(v).reshape(-1)
                                     for v in values)
        if len(chain.shape) != 4 or starts.size != 1 or axes is None or axes.size != 1 \
                or (steps is not None and int(steps[0]) != 1) \
                or int(axes[0]) % 4 not in (2, 3):
            _refuse(node, "a slice is read only as a bin of adaptive max pooling (one spatial "
                          "axis, step 1)")
        axis = int(axes[0]) % 4
        size = chain.shape[axis]
        start, end = (int(np.clip(v if v >= 0 else v + size, 0, size)) for v in
                      (int(starts[0]), int(ends[0])))
        return _Chain(chain.layers, chain.shape, (node.name, "slice", (axis, start, end, chain)))

    def _global_reduce(self, node, attrs, chain, kind):
        """ReduceMean / ReduceMax over (H, W): global pooling (the dynamo exporter's form of
        AdaptiveAvgPool2d(1))."""
        axes = attrs.get("axes")
        if axes is None:
            axes = self.const(node, 1, "axes", required=False)
            axes = None if axes is None else axes.reshape(-1).tolist()
        if len(chain.shape) != 4 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            _refuse(node, "a reduction is read only over the two spatial axes of (N, C, H, W) "
                          "(global pooling)")
        if int(attrs.get("keepdims", 1)):
            layer = nn.AdaptiveAvgPool2d(1) if kind == "avg" else nn.AdaptiveMaxPool2d(1)
        else:
            layer = nn.GlobalAvgPool2d() if kind == "avg" else nn.GlobalMaxPool2d()
        return self.append(node, chain, layer)

    def op_ReduceMean(self, node, attrs):
        return self._global_reduce(node, attrs, self.chain(node, node.input[0]), "avg")

    def op_ReduceMax(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if chain.pending is None:
            return self._global_reduce(node, attrs, chain, "max")
        if chain.pending[1] != "slice":
            self.refuse_pending(node, chain)
        axes = attrs.get("axes")
        if axes is None:
            axes = self.const(node, 1, "axes").reshape(-1).tolist()
        axis = chain.pending[2][0]
        if [int(a) % 4 for a in axes] != [axis] or not int(attrs.get("keepdims", 1)):
            _refuse(node, f"expected the maximum over axis {axis}, keeping it")
        return _Chain(chain.layers, chain.shape, (node.name, "bin-max", chain.pending[2]))

    def op_Concat(self, node, attrs):
        parts = [self.chain(node, name) for name in node.input]
        axis = int(attrs.get("axis", 0)) % 4
        if not all(p.pending is not None and p.pending[1] == "bin-max" for p in parts):
            _refuse(node, "a concatenation is read only as the bins of adaptive max pooling")
        source = parts[0].pending[2][3]
        bins = [(p.pending[2][1], p.pending[2][2]) for p in parts]

        size, out = source.shape[axis], len(parts)
        starts, ends = adaptive_pool._bins(size, out)
        if any(p.pending[2][3] is not source or p.pending[2][0] != axis for p in parts) \
                or bins != list(zip(starts.tolist(), ends.tolist())):
            _refuse(node, "the slices are not the bins of adaptive max pooling of one input")
        if axis == 2 and source.pending is None:
            return _Chain(source.layers, source.shape, (node.name, "rows-max", out))
        if axis == 3 and source.pending is not None and source.pending[1] == "rows-max":
            layer = nn.AdaptiveMaxPool2d((source.pending[2], out))
            return self.append(node, source, layer, pending_ok=True)
        _refuse(node, "expected the bins of the rows, then of the columns")

    def op_Abs(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if chain.pending is not None:
            self.refuse_pending(node, chain)
        return _Chain(chain.layers, chain.shape, (node.name, "abs", None))

    def op_Neg(self, node, attrs):
        chain = self.chain(node, node.input[0])
        kind = chain.pending[1] if chain.pending is not None else None
        if kind == "x*x":
            return _Chain(chain.layers, chain.shape, (node.name, "-x*x", None))
        if kind == "abs":
            return _Chain(chain.layers, chain.shape, (node.name, "-abs", None))
        if kind == "-max":  # -MaxPool(-|x|): LPPool2d with p = -inf
            return self.append(node, chain, chain.pending[2], pending_ok=True)
        _refuse(node, "a negation is read only in exp(-x*x) (numcnn's Gaussian) and LPPool2d "
                      "with p = -inf")

    def op_Exp(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if chain.pending is None or chain.pending[1] != "-x*x":
            _refuse(node, "only exp(-x*x), numcnn's Gaussian, is read")
        return self.append(node, chain, nn.Gaussian(), pending_ok=True)

    # pooling
    def _pool_geometry(self, node, attrs, chain, dilations=True):
        if len(chain.shape) != 4:
            _refuse(node, f"only 2-D pooling of (N, C, H, W) inputs is read, got "
                          f"{len(chain.shape)}-D")
        if len([o for o in node.output if o]) > 1:
            _refuse(node, "the indices output has no numcnn equivalent")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET",
                                                                                    "VALID", ""):
            _refuse(node, "auto_pad SAME_* is not read; give pads")
        kernel = tuple(_int_list(attrs.get("kernel_shape", []), node, "kernel_shape", 2))
        strides = tuple(_int_list(attrs.get("strides", [1, 1]), node, "strides", 2))
        dil = tuple(_int_list(attrs.get("dilations", [1, 1]), node, "dilations", 2))
        if not dilations and dil != (1, 1):
            _refuse(node, "dilations are not read for this pooling")
        pads = _int_list(attrs.get("pads", [0] * 4), node, "pads", 4)
        return kernel, strides, dil, pads, bool(attrs.get("ceil_mode", 0))

    def _pool(self, node, chain, make, kernel, strides, dil, pads, ceil_mode,
              end_padding_counts=False, append=True):
        """A numcnn pooling layer for ONNX pads; extra bottom/right padding (numcnn's export of
        ceil_mode) is read back as ceil_mode when that gives the same output size."""
        begin, end = pads[:2], pads[2:]
        if begin == end:
            candidates = [ceil_mode]
        elif min(pads) >= 0 and all(e >= b for b, e in zip(begin, end)) \
                and not ceil_mode and not end_padding_counts:
            candidates = [False, True]
        else:
            _refuse(node, f"pads {pads}: numcnn's pooling pads both sides alike (more at the end "
                          f"only where it stands for ceil_mode)")
        target = [out_size(n, k, s, b, e, d)
                  for n, b, e, k, s, d in zip(chain.shape[2:], begin, end, kernel, strides, dil)]
        for ceil in candidates:
            try:
                layer = make(tuple(begin), ceil)
                shape = layer.output_shape(chain.shape)
            except Exception as error:
                _refuse(node, f"has no numcnn equivalent: {error}")
            if begin == end or list(shape[2:]) == target:
                return self.append(node, chain, layer, pending_ok=not append) if append \
                    else layer
        _refuse(node, f"pads {pads}: the extra padding at the end is not ceil_mode's")

    def op_MaxPool(self, node, attrs):
        chain = self.chain(node, node.input[0])
        kernel, strides, dil, pads, ceil = self._pool_geometry(node, attrs, chain)
        kind = chain.pending[1] if chain.pending is not None else None
        if kind in ("abs", "-abs") and dil == (1, 1) and pads[:2] == [0, 0]:
            p = float("inf") if kind == "abs" else float("-inf")
            layer = self._pool(node, chain, lambda _, c: nn.LPPool2d(
                p, _compact(kernel), _compact(strides), c), kernel, strides, dil, pads, ceil,
                append=False)
            if kind == "abs":
                return self.append(node, chain, layer, pending_ok=True)
            return _Chain(chain.layers, chain.shape, (node.name, "-max", layer))
        return self._pool(node, chain, lambda p, c: nn.MaxPool2d(
            _compact(kernel), _compact(strides), _compact(p), _compact(dil), ceil_mode=c),
            kernel, strides, dil, pads, ceil)

    def op_AveragePool(self, node, attrs):
        chain = self.chain(node, node.input[0])
        kernel, strides, dil, pads, ceil = self._pool_geometry(node, attrs, chain,
                                                               dilations=False)
        include = bool(attrs.get("count_include_pad", 0))
        if chain.pending is not None and chain.pending[1] == "pow" and not include \
                and pads[:2] == [0, 0]:  # the mean of x^p over each window: LPPool2d
            p = chain.pending[2]
            layer = self._pool(node, chain, lambda _, c: nn.LPPool2d(
                p, _compact(kernel), _compact(strides), c), kernel, strides, dil, pads, ceil,
                append=False)
            data = (p, layer.kernel_size if isinstance(layer.kernel_size, tuple)
                    else (layer.kernel_size,) * 2, strides, layer.ceil_mode)
            return _Chain(chain.layers, chain.shape, (node.name, "lp-mean", data))
        return self._pool(node, chain, lambda p, c: nn.AvgPool2d(
            _compact(kernel), _compact(strides), _compact(p), ceil_mode=c,
            count_include_pad=include), kernel, strides, dil, pads, ceil,
            end_padding_counts=include)

    def op_LpPool(self, node, attrs):
        chain = self.chain(node, node.input[0])
        kernel, strides, dil, pads, ceil = self._pool_geometry(node, attrs, chain,
                                                               dilations=False)
        p = int(attrs.get("p", 2))
        if p <= 0 or p % 2 or any(pads):
            _refuse(node, "only an even p without padding is read (ONNX's LpPool takes |x|^p, "
                          "numcnn's and PyTorch's x^p: the same for even p)")
        return self._pool(node, chain, lambda _, c: nn.LPPool2d(p, _compact(kernel),
                                                                _compact(strides), c),
                          kernel, strides, dil, pads, ceil)

    def op_GlobalAveragePool(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if len(chain.shape) != 4:
            _refuse(node, "only 2-D global pooling is read")
        return self.append(node, chain, nn.AdaptiveAvgPool2d(1))

    def op_GlobalMaxPool(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if len(chain.shape) != 4:
            _refuse(node, "only 2-D global pooling is read")
        return self.append(node, chain, nn.AdaptiveMaxPool2d(1))

    # shapes and linear layers
    def op_Flatten(self, node, attrs):
        chain = self.chain(node, node.input[0])
        axis = int(attrs.get("axis", 1)) % max(len(chain.shape), 1)
        if axis != 1:
            _refuse(node, f"Flatten with axis {axis} merges the batch axis; only axis 1 is read")
        return self._flatten(node, chain)

    def _flatten(self, node, chain, start=1, end=-1):
        last = chain.layers[-1] if chain.layers else None
        if (start, end) == (1, -1) and len(chain.shape) == 4 and chain.pending is None \
                and type(last) in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d) \
                and last.output_size == 1:  # global pooling then Flatten: numcnn's layer
            glob = nn.GlobalAvgPool2d() if type(last) is nn.AdaptiveAvgPool2d \
                else nn.GlobalMaxPool2d()
            return _Chain(chain.layers[:-1] + [glob], chain.shape[:2])
        return self.append(node, chain, nn.Flatten(start, end))

    def op_Reshape(self, node, attrs):
        chain = self.chain(node, node.input[0])
        target = self.const(node, 1, "shape")
        if target.ndim != 1 or target.dtype.kind not in "iu" or target.size > 16:
            _refuse(node, f"the shape must be a short 1-D list of ints, got {target!r}")
        # a graph exported for one batch size names it: that is its batch axis, kept
        static = self.static_batch is not None and target.size and \
            int(target[0]) == self.static_batch
        for batch in (1, 2):  # the result must keep the batch axis: a flatten
            shape = (batch, *chain.shape[1:])
            wanted = [shape[i] if v == 0 and not attrs.get("allowzero") else int(v)
                      for i, v in enumerate(target.tolist())]
            if static:
                wanted[0] = batch
            if wanted.count(-1) == 1:
                known = math.prod(v for v in wanted if v != -1)
                wanted[wanted.index(-1)] = math.prod(shape) // max(known, 1)
            if math.prod(wanted) != math.prod(shape) or wanted[0] != batch:
                _refuse(node, f"reshaping {chain.shape[1:]} to {target.tolist()} is not a "
                              f"flatten that keeps the batch axis")
        rest = list(chain.shape[1:])
        for start in range(1, len(rest) + 1):
            for end in range(start, len(rest) + 1):
                merged = rest[:start - 1] + [math.prod(rest[start - 1:end])] + rest[end:]
                if merged == wanted[1:]:
                    return self._flatten(node, chain, start, end if end < len(rest) else -1)
        _refuse(node, f"reshaping {chain.shape[1:]} to {target.tolist()} is not a flatten")

    def op_Gemm(self, node, attrs):
        chain = self.chain(node, node.input[0])
        if len(chain.shape) != 2 or int(attrs.get("transA", 0)):
            _refuse(node, "only x @ B (+ C) of a 2-D x without transA is read")
        b = _weights(self.const(node, 1, "B (the weight)"), node, "B")
        c = self.const(node, 2, "C (the bias)", required=False)
        if b.ndim != 2:
            _refuse(node, f"B must be a matrix, got shape {b.shape}")
        weight = (b if int(attrs.get("transB", 0)) else b.T) * float(attrs.get("alpha", 1.0))
        bias = None
        if c is not None:
            c = _weights(np.asarray(c), node, "C")
            if c.size not in (1, weight.shape[0]) or c.ndim > 2 or (c.ndim == 2
                                                                      and c.shape[0] != 1):
                _refuse(node, f"C of shape {c.shape} is not one bias per output")
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)) * float(
                attrs.get("beta", 1.0))
        return self.append(node, chain, _linear(weight, bias))

    def op_MatMul(self, node, attrs):
        chain, value, const_first = self._chain_and_const(node)
        if chain is not None and len(chain.shape) == 4 and value.ndim == 2:
            (h, w), matrix = chain.shape[2:], np.asarray(value, np.float64)
            if not const_first and chain.pending is None and matrix.shape[0] == w \
                    and _averages(matrix.T, w):  # plane @ columns: adaptive average pooling
                return _Chain(chain.layers, chain.shape, (node.name, "columns", matrix.shape[1]))
            if const_first and chain.pending is not None and chain.pending[1] == "columns" \
                    and matrix.shape[1] == h and _averages(matrix, h):  # rows @ (plane @ ...)
                layer = nn.AdaptiveAvgPool2d((matrix.shape[0], chain.pending[2]))
                return self.append(node, chain, layer, pending_ok=True)
        chain = self.chain(node, node.input[0])
        b = _weights(self.const(node, 1, "B (the weight)"), node, "B")
        if b.ndim != 2:
            _refuse(node, f"only x @ W with a constant matrix W is read, got shape {b.shape}")
        return self.append(node, chain, _linear(b.T, None))

    def op_Add(self, node, attrs):
        if len(node.input) != 2:
            _refuse(node, "expected two inputs")
        first, second = (self.values.get(name) for name in node.input)
        if isinstance(first, np.ndarray) and isinstance(second, _Chain):
            first, second = second, first
        if isinstance(first, _Chain) and isinstance(second, np.ndarray):
            return self._add_bias(node, first, second)
        a, b = self.chain(node, node.input[0]), self.chain(node, node.input[1])
        for chain in (a, b):
            if chain.pending is not None:
                self.refuse_pending(node, chain)
        common = 0  # the layers both branches share: x
        while common < min(len(a.layers), len(b.layers)) \
                and a.layers[common] is b.layers[common]:
            common += 1
        fa, fb = a.layers[common:], b.layers[common:]
        if not fa and not fb:
            _refuse(node, "adds a value to itself; numcnn reads x + f(x) and f(x) + g(x) blocks")
        branch, other = (fa, fb) if len(fa) >= len(fb) else (fb, fa)
        block = nn.Residual(_as_block(branch), shortcut=_as_block(other) if other else None)
        shape = self.values[self.input_name].shape
        for layer in a.layers[:common]:
            shape = layer.output_shape(shape)
        return self.append(node, _Chain(a.layers[:common], shape), block)

    def _add_bias(self, node, chain, value):
        last = chain.layers[-1] if chain.layers else None
        value = _weights(np.asarray(value), node, "the added constant")
        if isinstance(last, nn.Linear) and last.bias is None \
                and value.size == last.out_features and value.shape[-1] == value.size:
            layer = _linear(last.weight.data, value.reshape(-1))
        elif isinstance(last, (nn.Conv1d, nn.Conv2d)) and last.bias is None \
                and value.size == last.out_channels \
                and value.shape[:1] in ((last.out_channels,), (1,)) \
                and sum(n > 1 for n in value.shape) <= 1:
            spec = {"in_channels": last.in_channels, "out_channels": last.out_channels,
                    "kernel_size": last.kernel_size, "stride": last.stride,
                    "padding": last.padding, "dilation": last.dilation, "groups": last.groups,
                    "padding_mode": last.padding_mode}
            with _random.kept_state():
                layer = type(last)(**spec, bias=True)
            layer.weight.data = last.weight.data
            layer.weight.grad = np.zeros_like(layer.weight.data)
            layer.bias.data = value.reshape(-1).copy()
            layer.bias.grad = np.zeros_like(layer.bias.data)
        else:
            _refuse(node, "adding a constant is read only as the bias of a Linear (MatMul) or a "
                          "convolution without one")
        return _Chain(chain.layers[:-1] + [layer], chain.shape)

    def _used(self):
        return {name for node in self.graph.node for name in node.input}


def _folded_size(node, attrs, args) -> int:
    """How many elements :func:`_fold` would make, known before it makes them."""
    x = args[0]
    if node.op_type == "ConstantOfShape":
        shape = [int(v) for v in np.asarray(x).reshape(-1)]
        return math.prod(shape) if min(shape, default=1) >= 0 else MAX_ELEMENTS + 1
    if node.op_type == "Concat":
        return sum(int(a.size) for a in args if a is not None)
    if node.op_type == "Gather":
        axis = int(attrs.get("axis", 0))
        if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
            return 0
        return int(np.asarray(args[1]).size) * (x.size // max(x.shape[axis], 1))
    return int(np.asarray(x).size)


def _fold(node, attrs, args):
    """One operator of the shape arithmetic exporters emit, on constants, in NumPy; sizes are
    checked before anything is allocated."""
    x = args[0]
    op = node.op_type
    if op == "ConstantOfShape":
        shape = [int(v) for v in x.reshape(-1)]
        if min(shape, default=1) < 0 or math.prod(shape) > MAX_FOLDED:
            _refuse(node, f"a constant of shape {shape} is refused")
        value = attrs.get("value")
        fill = _tensor(value, f"node {node.name!r}") if value is not None \
            else np.zeros(1, np.float32)
        return np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)
    if op == "Concat":
        return np.concatenate([a for a in args if a is not None], axis=int(attrs["axis"]))
    if op == "Reshape":
        target = [int(v) for v in args[1].reshape(-1)]
        target = [x.shape[i] if v == 0 and not attrs.get("allowzero") else v
                  for i, v in enumerate(target)]
        try:
            return x.reshape(target)
        except ValueError as error:
            _refuse(node, str(error))
    if op == "Slice":
        starts, ends = args[1].reshape(-1), args[2].reshape(-1)
        axes = args[3].reshape(-1) if len(args) > 3 and args[3] is not None \
            else np.arange(len(starts))
        steps = args[4].reshape(-1) if len(args) > 4 and args[4] is not None \
            else np.ones(len(starts), np.int64)
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))  # Python clips the ends
        return x[tuple(index)]
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if op == "Cast":
        onnx = _require_onnx()
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    if op == "Unsqueeze":
        axes = attrs.get("axes", args[1].reshape(-1).tolist() if len(args) > 1 else [])
        out = x
        for axis in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, axis)
        return out
    if op == "Squeeze":
        axes = attrs.get("axes", args[1].reshape(-1).tolist() if len(args) > 1 else None)
        return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
    if op == "Gather":
        return np.take(x, args[1], axis=int(attrs.get("axis", 0)))
    if op == "Shape":
        return np.array(x.shape, np.int64)
    raise OnnxError(f"no constant folding for the operator {op}")


_FOLDABLE = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
             "Squeeze", "Gather", "Shape"}


def _averages(matrix, size: int) -> bool:
    """Whether ``matrix`` (out, size) is numcnn's (and PyTorch's) adaptive bin-averaging matrix."""

    out = matrix.shape[0]  # more bins than pixels is allowed (bins then overlap)
    if not 1 <= out <= MAX_DIM:
        return False
    expected = adaptive_pool._average_matrix(size, out, np.float32)
    return bool(np.allclose(matrix, expected, rtol=1e-6, atol=1e-7))


def _compact(pair):
    """(k, k) -> k, as numcnn's layers are usually written."""
    pair = tuple(int(v) for v in pair)
    return pair[0] if len(set(pair)) == 1 else pair


def _linear(weight, bias):
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    with _random.kept_state():
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = weight
    layer.weight.grad = np.zeros_like(weight)
    if bias is not None:
        layer.bias.data = np.array(bias, dtype=np.float32)
        layer.bias.grad = np.zeros_like(layer.bias.data)
    return layer


def _metadata(proto) -> dict:
    """numcnn's metadata (preprocessing, classes, input_shape) from ``metadata_props``."""
    from ..data import Preprocessing
    from ..errors import DataError

    props = {p.key: p.value for p in proto.metadata_props}
    metadata = {}
    for key in ("preprocessing", "classes", "input_shape"):
        if key in props and len(props[key]) < 1_000_000:
            try:
                metadata[key] = json.loads(props[key])
            except (json.JSONDecodeError, RecursionError):
                continue
    if "preprocessing" in metadata:
        try:
            metadata["preprocessing"] = Preprocessing.from_dict(metadata["preprocessing"]).to_dict()
        except DataError:
            del metadata["preprocessing"]
    if not isinstance(metadata.get("classes", []), list):
        del metadata["classes"]
    return metadata


def _folded_preprocessing(path, folded, input_shape, recorded):
    """The preprocessing ``x * gain - offset`` a graph starts with, as numcnn's metadata: the
    recorded one if it is that, else ``scale=1, std=1/gain, mean=offset/gain``. The numcnn model
    takes preprocessed images, as every numcnn model does."""
    from ..data import Preprocessing

    gain, offset = (np.asarray(v, np.float64) for v in folded)
    if recorded is not None:
        std = np.asarray(recorded["std"])
        if np.allclose(recorded["scale"] / std, gain, rtol=1e-6) \
                and np.allclose(np.asarray(recorded["mean"]) / std, offset, rtol=1e-6,
                                atol=1e-7):
            return recorded
        raise OnnxError(f"{path}: the graph starts with a preprocessing (x * {gain.tolist()} - "
                        f"{offset.tolist()}) that is not the one its metadata records")
    if np.any(gain <= 0) or len(input_shape) != 3:
        raise OnnxError(f"{path}: the graph starts with x * {gain.tolist()} - {offset.tolist()}, "
                        f"which is not a preprocessing numcnn records (gains must be > 0, "
                        f"inputs (C, H, W))")
    return Preprocessing(scale=1.0, mean=offset / gain, std=1.0 / gain,
                         input_shape=input_shape).to_dict()


def load(path, *, max_bytes: int | None = None):
    """Read an ONNX file as a numcnn model, with its weights, in eval mode.

    Args:
        path: an ``.onnx`` file (self-contained: external data files are refused).
        max_bytes: refuse larger files. Default: 1 GiB.

    Returns:
        a :class:`numcnn.nn.Sequential`; ``model.metadata`` holds ``input_shape`` (one input,
        without the batch axis) and, for a file exported by numcnn, the ``preprocessing`` and
        ``classes`` of its ``metadata_props``.

    Raises:
        OnnxError: a file that is not an ONNX model, too large, or a graph with an operator or a
            structure numcnn has no layer for; the message names the node.
    """
    onnx = _require_onnx()
    path = os.fspath(path)
    limit = MAX_BYTES if max_bytes is None else int(max_bytes)
    from .._files import file_size, open_regular

    with open_regular(path, OnnxError, "an ONNX model file (.onnx)") as file:  # a FIFO: refused
        size = file_size(file)
        if size > limit:
            raise OnnxError(f"{path}: {size:,} bytes, more than the {limit:,} bytes numcnn reads "
                            f"(max_bytes=)")
        raw = file.read(limit + 1)
    try:
        proto = onnx.load_model_from_string(raw)  # parses only; external data not loaded
    except Exception as error:  # protobuf's DecodeError and others
        raise OnnxError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") from None
    if not proto.HasField("graph"):
        raise OnnxError(f"{path}: not an ONNX model (no graph)")
    try:
        onnx.checker.check_model(proto)
    except Exception as error:
        raise OnnxError(f"{path}: the ONNX model is invalid: {str(error).splitlines()[0]}") \
            from None
    return _from_proto(proto, path)


def _from_proto(proto, path: str = "model"):
    onnx = _require_onnx()
    graph = proto.graph
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx", 0)) < 7:
        raise OnnxError(f"{path}: opset {opsets} is older than numcnn reads (7 or later)")
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxError(f"{path}: numcnn reads graphs with one input and one output, this one "
                        f"has inputs {[i.name for i in inputs]} and outputs "
                        f"{[o.name for o in graph.output]}")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                     onnx.TensorProto.FLOAT16):
        raise OnnxError(f"{path}: the input {inputs[0].name!r} is not floating-point")
    dims = list(tensor_type.shape.dim)
    if len(dims) < 2 or any(not d.HasField("dim_value") for d in dims[1:]):
        raise OnnxError(f"{path}: the input {inputs[0].name!r} needs a known shape after the "
                        f"batch axis, got {[d.dim_param or d.dim_value for d in dims]}")
    input_shape = tuple(int(d.dim_value) for d in dims[1:])
    if min(input_shape) < 1 or max(input_shape) > MAX_DIM \
            or math.prod(input_shape) > MAX_ELEMENTS:
        raise OnnxError(f"{path}: the input shape {input_shape} is refused (sizes 1 to "
                        f"{MAX_DIM:,})")
    reader = _Reader(graph, inputs[0].name, input_shape)
    if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        reader.static_batch = int(dims[0].dim_value)
    for tensor in graph.initializer:
        reader.values[tensor.name] = _tensor(tensor, f"{path}: initializer")
    for node in graph.node:
        reader.read(node)
    result = reader.values.get(graph.output[0].name)
    if not isinstance(result, _Chain):
        raise OnnxError(f"{path}: the output {graph.output[0].name!r} is not computed from the "
                        f"input")
    if result.pending is not None:
        name, kind, _ = result.pending
        raise OnnxError(f"{path}: the graph ends with node {name!r} ({kind}), which numcnn reads "
                        f"only as part of a longer pattern")
    model = nn.Sequential(*result.layers)
    metadata = _metadata(proto)
    metadata["input_shape"] = list(input_shape)
    if reader.folded is not None:
        metadata["preprocessing"] = _folded_preprocessing(path, reader.folded, input_shape,
                                                          metadata.get("preprocessing"))
    object.__setattr__(model, "metadata", metadata)
    return model.eval()
