"""numcnn model -> ONNX graph, one layer at a time, built with ``onnx.helper``.

Each layer class has a converter ``(exporter, layer, x, shape, where) -> (y, out_shape)`` that
emits the layer's ONNX nodes from the value named ``x`` (whose shape, batch axis included, is
``shape``) and returns the name and shape of its output. The shapes are those numcnn's own
``output_shape`` gives, so spatial sizes are fixed and the batch axis stays free.

Layer -> ONNX operators (https://onnx.ai/onnx/operators/):

=========================  ===============================================================
Conv1d, Conv2d             ``Conv`` (pads, strides, dilations, group); a padding mode other
                           than zeros is a ``Pad`` (reflect, edge, wrap) before it
ConvTranspose2d            ``ConvTranspose`` (pads, output_padding, strides, dilations, group)
SeparableConv2d            two ``Conv`` (depthwise with group = C, pointwise 1x1)
MaxPool2d                  ``MaxPool`` (pads, dilations); ceil_mode as extra padding at the
                           bottom/right (PyTorch's rule, whatever the runtime reads into
                           ceil_mode)
AvgPool2d                  ``AveragePool`` (pads, count_include_pad); with
                           ``divisor_override``, or windows that ceil_mode lets hang over
                           the edge counted with the padding, a depthwise ``Conv`` of ones
                           (the window sums) and a ``Div`` by the divisors
LPPool2d                   ``Pow`` -> ``AveragePool`` -> ``Mul`` (kh*kw) -> ``Pow`` (1/p), as
                           PyTorch computes it; p = inf: ``Abs`` -> ``MaxPool``
AdaptiveAvgPool2d          ``AveragePool`` when the bins are equal blocks, else two ``MatMul``
                           with numcnn's bin-averaging matrices
AdaptiveMaxPool2d          ``MaxPool`` when the bins are equal blocks, else ``Slice`` +
                           ``ReduceMax`` per bin row and column, ``Concat``
GlobalAvgPool2d / Max      ``GlobalAveragePool`` / ``GlobalMaxPool`` + ``Flatten``
BatchNorm1d, BatchNorm2d   ``BatchNormalization`` with the running statistics (inference form)
ReLU, LeakyReLU, Sigmoid,  ``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``, ``Softmax``,
Tanh, Softmax, LogSoftmax  ``LogSoftmax``
Gaussian                   ``Mul`` (x*x) -> ``Neg`` -> ``Exp``
Flatten                    ``Flatten`` (start_dim 1 to the end), else ``Reshape``
Linear                     ``Gemm`` (transB=1) on 2-D inputs, else ``MatMul`` + ``Add``
Dropout, Dropout2d,        ``Identity`` (an exported model is for inference)
Identity
Sequential                 its layers in order
Residual                   the block, then ``Add`` of its input and its output
=========================  ===============================================================
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from .. import nn
from ..functional import core
from ..functional._windows import window_pads
from ..functional.pooling import adaptive_pool, avg_pool
from . import DEFAULT_OPSET, OnnxError, _require_onnx

# ONNX's Pad modes for numcnn's padding modes (wrap needs opset 19).
_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class _Exporter:
    """Collects nodes and initializers; hands out unique value names."""

    def __init__(self, opset: int):
        self.onnx = _require_onnx()
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self._names = set()

    def name(self, hint: str) -> str:
        """A unique name from ``hint``: a layer's place, e.g. ``model.3.fn.0.weight``, is written
        without ``model.``, so initializers are named like the state_dict (``3.fn.0.weight``)."""
        base = hint.replace(" ", "_")
        if base.startswith("model."):
            base = base[len("model."):]
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def const(self, array, hint: str) -> str:
        """An initializer holding ``array`` (float arrays as float32)."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array),
                                                                   name))
        return name

    def node(self, op: str, inputs, hint: str, **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out],
                                                     name=self.name(f"{hint}/{op}"), **attrs))
        return out

    def reduce(self, op: str, x: str, axes, hint: str, keepdims: int = 1) -> str:
        """ReduceMax/ReduceMean: axes as an attribute before opset 18, as an input since."""
        if self.opset >= 18:
            return self.node(op, [x, self.const(np.array(axes, np.int64), f"{hint}/axes")], hint,
                             keepdims=keepdims)
        return self.node(op, [x], hint, axes=list(axes), keepdims=keepdims)


def _refuse(where: str, layer, why: str):
    raise OnnxError(f"{where} ({type(layer).__name__}): cannot be exported to ONNX: {why}")


# -- convolutions --------------------------------------------------------------------------------
def _pad_node(ex, x, pads, mode, rank, hint):
    """A Pad node padding the spatial axes by ``pads`` ((lo, hi) per spatial axis)."""
    begins = [0, 0] + [lo for lo, _ in pads]
    ends = [0, 0] + [hi for _, hi in pads]
    assert len(begins) == rank
    return ex.node("Pad", [x, ex.const(np.array(begins + ends, np.int64), f"{hint}/pads")],
                   hint, mode=_PAD_MODES[mode])


def _conv(ex, layer, x, shape, where):
    d = layer._dims
    pads = layer._pads[2 - d:]  # ((lo, hi), ...) per spatial axis
    out_shape = layer.output_shape(shape)
    if layer.padding_mode != "zeros":
        if layer.padding_mode == "circular" and ex.opset < 19:
            _refuse(where, layer, "padding_mode='circular' needs Pad mode 'wrap', which ONNX has "
                                  "from opset 19 on; export with opset=19")
        x = _pad_node(ex, x, pads, layer.padding_mode, d + 2, f"{where}/pad")
        pads = ((0, 0),) * d
    inputs = [x, ex.const(layer.weight.data, f"{where}.weight")]
    if layer.bias is not None:
        inputs.append(ex.const(layer.bias.data, f"{where}.bias"))
    y = ex.node("Conv", inputs, where, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups,
                pads=[lo for lo, _ in pads] + [hi for _, hi in pads])
    return y, out_shape


def _conv_transpose(ex, layer, x, shape, where):
    inputs = [x, ex.const(layer.weight.data, f"{where}.weight")]
    if layer.bias is not None:
        inputs.append(ex.const(layer.bias.data, f"{where}.bias"))
    y = ex.node("ConvTranspose", inputs, where, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups,
                pads=list(layer.padding) * 2, output_padding=list(layer.output_padding))
    return y, layer.output_shape(shape)


def _separable(ex, layer, x, shape, where):
    for child_name, child in layer._children():
        x, shape = _emit(ex, child, x, shape, f"{where}.{child_name}")
    return x, shape


# -- pooling -------------------------------------------------------------------------------------
def _end_pads(shape, out_shape, kernel, stride, padding, dilation=(1, 1)):
    """Bottom/right padding that makes the floor formula give ``out_shape``: PyTorch's
    ``ceil_mode`` (a last window hanging over the edge, but never starting in the right padding)
    written as plain padding, so no runtime's reading of ceil_mode matters."""
    return [window_pads(n, k, s, p, d, o)[1] for n, o, k, s, p, d in
            zip(shape[2:], out_shape[2:], kernel, stride, padding, dilation)]


def _max_pool(ex, layer, x, shape, where):
    if layer.return_indices:
        _refuse(where, layer, "return_indices=True gives two outputs; export the layer without it")
    kernel, stride, padding, dilation = core.pool_args(where, layer.kernel_size, layer.stride,
                                                     layer.padding, layer.dilation)
    out_shape = layer.output_shape(shape)
    ends = _end_pads(shape, out_shape, kernel, stride, padding, dilation)
    y = ex.node("MaxPool", [x], where, kernel_shape=list(kernel), strides=list(stride),
                pads=list(padding) + ends, dilations=list(dilation))
    return y, out_shape


def _avg_pool(ex, layer, x, shape, where):
    kernel, stride, padding, _ = core.pool_args(where, layer.kernel_size, layer.stride,
                                              layer.padding)
    out_shape = layer.output_shape(shape)
    ends = _end_pads(shape, out_shape, kernel, stride, padding)
    hangs_over = ends != list(padding)
    if layer.divisor_override is None and not (layer.count_include_pad and hangs_over):
        # (extra end padding is never counted without count_include_pad)
        y = ex.node("AveragePool", [x], where, kernel_shape=list(kernel), strides=list(stride),
                    pads=list(padding) + ends, count_include_pad=int(layer.count_include_pad))
        return y, out_shape
    # sum / divisor: the window sums by a depthwise convolution with every tap 1 (zeros where a
    # window hangs over), divided by the divisor override or PyTorch's per-window count.
    channels = shape[1]
    weight = np.ones((channels, 1, *kernel), np.float32)
    total = ex.node("Conv", [x, ex.const(weight, f"{where}.ones")], f"{where}/sum",
                    kernel_shape=list(kernel), strides=list(stride), group=channels,
                    pads=list(padding) + ends)
    if layer.divisor_override is not None:
        divisor = np.array(layer.divisor_override, np.float32)
    else:
        rows, cols = (avg_pool._avg_divisor(n, k, s, p, o, True) for n, k, s, p, o in
                      zip(shape[2:], kernel, stride, padding, out_shape[2:]))
        divisor = np.outer(rows, cols).astype(np.float32)  # (oh, ow), broadcast over N, C
    return ex.node("Div", [total, ex.const(divisor, f"{where}.divisor")], where), out_shape


def _lp_pool(ex, layer, x, shape, where):
    kernel, stride, _, _ = core.pool_args(where, layer.kernel_size, layer.stride, 0)
    p = core.lp_norm_type(where, layer.norm_type)
    out_shape = layer.output_shape(shape)
    ends = _end_pads(shape, out_shape, kernel, stride, (0, 0))
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=[0, 0] + ends)
    if math.isinf(p):  # max pooling of |x| (p = -inf: minus the max pooling of -|x|)
        x = ex.node("Abs", [x], f"{where}/abs")
        if p < 0:
            x = ex.node("Neg", [x], f"{where}/neg")
        y = ex.node("MaxPool", [x], where, **attrs)
        if p < 0:
            y = ex.node("Neg", [y], f"{where}/neg_out")
        return y, out_shape
    # as PyTorch: (avg_pool(x^p) * kh*kw)^(1/p), the average over the window's part inside
    # (the end padding for ceil_mode is not counted)
    x = ex.node("Pow", [x, ex.const(np.array(p, np.float32), f"{where}/p")], f"{where}/pow")
    mean = ex.node("AveragePool", [x], f"{where}/mean", count_include_pad=0, **attrs)
    total = ex.node("Mul", [mean, ex.const(np.array(kernel[0] * kernel[1], np.float32),
                                           f"{where}/window")], f"{where}/sum")
    y = ex.node("Pow", [total, ex.const(np.array(1.0 / p, np.float32), f"{where}/inv_p")], where)
    return y, out_shape


def _adaptive(ex, layer, x, shape, where, kind):
    out_shape = layer.output_shape(shape)
    if getattr(layer, "return_indices", False):
        _refuse(where, layer, "return_indices=True gives two outputs; export the layer without it")
    (h, w), (oh, ow) = shape[2:], out_shape[2:]
    uniform = adaptive_pool._uniform_bins(shape, (oh, ow))
    if uniform is not None:  # equal blocks: ordinary pooling
        op = "MaxPool" if kind == "max" else "AveragePool"
        return ex.node(op, [x], where, kernel_shape=list(uniform), strides=list(uniform)), \
            out_shape
    if kind == "avg":  # numcnn's own computation: left @ plane @ right^T
        right_t = adaptive_pool._average_matrix(w, ow, np.float32).T  # (w, ow)
        left = adaptive_pool._average_matrix(h, oh, np.float32)  # (oh, h)
        y = ex.node("MatMul", [x, ex.const(right_t, f"{where}.columns")], f"{where}/columns")
        return ex.node("MatMul", [ex.const(left, f"{where}.rows"), y], where), out_shape
    # max over each bin of rows, then each bin of columns (a maximum is separable)
    for axis, size, out in ((2, h, oh), (3, w, ow)):
        starts, ends = adaptive_pool._bins(size, out)
        parts = []
        for i, (start, end) in enumerate(zip(starts, ends)):
            sliced = ex.node("Slice", [x, ex.const(np.array([start], np.int64), f"{where}/s"),
                                       ex.const(np.array([end], np.int64), f"{where}/e"),
                                       ex.const(np.array([axis], np.int64), f"{where}/a")],
                             f"{where}/bin{axis}_{i}")
            parts.append(ex.reduce("ReduceMax", sliced, [axis], f"{where}/max{axis}_{i}"))
        x = ex.node("Concat", parts, f"{where}/axis{axis}", axis=axis)
    return x, out_shape


def _global(ex, layer, x, shape, where, op):
    y = ex.node(op, [x], f"{where}/pool")
    return ex.node("Flatten", [y], where, axis=1), layer.output_shape(shape)


# -- the rest ------------------------------------------------------------------------------------
def _batch_norm(ex, layer, x, shape, where):
    out_shape = layer.output_shape(shape)
    if layer.running_mean is None:
        _refuse(where, layer, "track_running_stats=False normalises with each batch's own "
                              "statistics, also at inference; ONNX's BatchNormalization takes "
                              "fixed statistics")
    c = layer.num_features
    weight = layer.weight.data if layer.weight is not None else np.ones(c, np.float32)
    bias = layer.bias.data if layer.bias is not None else np.zeros(c, np.float32)
    inputs = [x, ex.const(weight, f"{where}.weight"), ex.const(bias, f"{where}.bias"),
              ex.const(layer.running_mean, f"{where}.running_mean"),
              ex.const(layer.running_var, f"{where}.running_var")]
    # ONNX's momentum weighs the running value (PyTorch's weighs the new batch); inference only
    momentum = 0.9 if layer.momentum is None else 1.0 - float(layer.momentum)
    return ex.node("BatchNormalization", inputs, where, epsilon=float(layer.eps),
                   momentum=momentum), out_shape


def _linear(ex, layer, x, shape, where):
    out_shape = layer.output_shape(shape)
    if len(shape) == 2:
        inputs = [x, ex.const(layer.weight.data, f"{where}.weight")]
        if layer.bias is not None:
            inputs.append(ex.const(layer.bias.data, f"{where}.bias"))
        return ex.node("Gemm", inputs, where, transB=1), out_shape
    y = ex.node("MatMul", [x, ex.const(layer.weight.data.T, f"{where}.weight_t")],
                f"{where}/matmul" if layer.bias is not None else where)
    if layer.bias is not None:
        y = ex.node("Add", [y, ex.const(layer.bias.data, f"{where}.bias")], where)
    return y, out_shape


def _flatten(ex, layer, x, shape, where):
    out_shape = layer.output_shape(shape)
    start = layer.start_dim % len(shape)
    end = layer.end_dim % len(shape)
    if start == 1 and end == len(shape) - 1:
        return ex.node("Flatten", [x], where, axis=1), out_shape
    target = [0 if start > 0 else -1] + list(out_shape[1:])  # 0: the batch axis as it comes
    return ex.node("Reshape", [x, ex.const(np.array(target, np.int64), f"{where}/shape")],
                   where), out_shape


def _softmax(ex, layer, x, shape, where, op):
    rank = len(shape)
    dim = (0 if rank in (0, 1, 3) else 1) if layer.dim is None else layer.dim % max(rank, 1)
    return ex.node(op, [x], where, axis=dim), tuple(shape)


def _gaussian(ex, layer, x, shape, where):
    square = ex.node("Mul", [x, x], f"{where}/square")
    return ex.node("Exp", [ex.node("Neg", [square], f"{where}/neg")], where), tuple(shape)


def _sequential(ex, layer, x, shape, where):
    for name, child in layer._modules.items():
        x, shape = _emit(ex, child, x, shape, f"{where}.{name}" if where else name)
    return x, shape


def _residual(ex, layer, x, shape, where):
    out_shape = layer.output_shape(shape)
    fx, _ = _emit(ex, layer.fn, x, shape, f"{where}.fn" if where else "fn")
    shortcut = getattr(layer, "shortcut", None)
    if shortcut is not None:  # a projection shortcut: fn(x) + shortcut(x)
        x, _ = _emit(ex, shortcut, x, shape, f"{where}.shortcut" if where else "shortcut")
    return ex.node("Add", [x, fx], f"{where}/add" if where else "add"), out_shape


def _simple(op, **attrs):
    def convert(ex, layer, x, shape, where):
        values = {k: (v(layer) if callable(v) else v) for k, v in attrs.items()}
        return ex.node(op, [x], where, **values), tuple(shape)
    return convert


_CONVERTERS = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv_transpose,
    nn.SeparableConv2d: _separable,
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.LPPool2d: _lp_pool,
    nn.AdaptiveAvgPool2d: lambda ex, layer, x, s, w: _adaptive(ex, layer, x, s, w, "avg"),
    nn.AdaptiveMaxPool2d: lambda ex, layer, x, s, w: _adaptive(ex, layer, x, s, w, "max"),
    nn.GlobalAvgPool2d: lambda ex, layer, x, s, w: _global(ex, layer, x, s, w,
                                                           "GlobalAveragePool"),
    nn.GlobalMaxPool2d: lambda ex, layer, x, s, w: _global(ex, layer, x, s, w, "GlobalMaxPool"),
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.ReLU: _simple("Relu"),
    nn.LeakyReLU: _simple("LeakyRelu", alpha=lambda layer: float(layer.negative_slope)),
    nn.Sigmoid: _simple("Sigmoid"),
    nn.Tanh: _simple("Tanh"),
    nn.Gaussian: _gaussian,
    nn.Softmax: lambda ex, layer, x, s, w: _softmax(ex, layer, x, s, w, "Softmax"),
    nn.LogSoftmax: lambda ex, layer, x, s, w: _softmax(ex, layer, x, s, w, "LogSoftmax"),
    nn.Flatten: _flatten,
    nn.Linear: _linear,
    nn.Dropout: _simple("Identity"),
    nn.Dropout2d: _simple("Identity"),
    nn.Identity: _simple("Identity"),
    nn.Sequential: _sequential,
    nn.Residual: _residual,
}


def _emit(ex, layer, x, shape, where):
    convert = _CONVERTERS.get(type(layer))
    label = where or "model"
    if convert is None:
        known = ", ".join(sorted(cls.__name__ for cls in _CONVERTERS))
        raise OnnxError(f"{label} ({type(layer).__module__}.{type(layer).__qualname__}): no ONNX "
                        f"export for this layer type; numcnn exports {known}")
    return convert(ex, layer, x, tuple(shape), label)


# -- the model -----------------------------------------------------------------------------------
def _preprocessing_dict(model, preprocessing):
    from ..data import Preprocessing

    if preprocessing is None:
        preprocessing = (getattr(model, "metadata", None) or {}).get("preprocessing")
    if preprocessing is None:
        return None
    if isinstance(preprocessing, Preprocessing):
        return preprocessing.to_dict()
    return Preprocessing.from_dict(preprocessing).to_dict()  # checked


def _input_shape(model, input_shape, preprocessing):
    if input_shape is None:
        metadata = getattr(model, "metadata", None) or {}
        input_shape = (metadata.get("input_shape")
                       or (preprocessing or {}).get("input_shape"))
    if input_shape is None:
        raise OnnxError("export: give input_shape, the shape of one input without the batch "
                        "axis (e.g. (1, 28, 28)); the model records none")
    try:
        input_shape = tuple(int(n) for n in input_shape)
    except (TypeError, ValueError):
        raise OnnxError(f"export: input_shape must be a tuple of positive ints, got "
                        f"{input_shape!r}") from None
    if not input_shape or min(input_shape) < 1:
        raise OnnxError(f"export: input_shape must be positive sizes without the batch axis, "
                        f"got {input_shape}")
    return input_shape


def build(model, input_shape=None, *, opset: int = DEFAULT_OPSET, fold_preprocessing=False,
          preprocessing=None, classes=None, input_name="input", output_name="logits"):
    """The ONNX ``ModelProto`` of ``model`` (what :func:`export` writes). Same arguments."""
    from ..errors import ShapeError

    onnx = _require_onnx()
    helper = onnx.helper
    if not isinstance(model, nn.Module):
        raise OnnxError(f"export: expected a numcnn.nn.Module, got {type(model).__name__}")
    newest = _require_onnx().defs.onnx_opset_version()  # what the installed onnx knows
    if not isinstance(opset, int) or not 17 <= opset <= newest:
        raise OnnxError(f"export: opset must be an int from 17 to {newest} (the newest the "
                        f"installed onnx package knows), got {opset!r}")
    prep = _preprocessing_dict(model, preprocessing)
    input_shape = _input_shape(model, input_shape, prep)
    if classes is None:
        classes = (getattr(model, "metadata", None) or {}).get("classes")
    if fold_preprocessing and prep is None:
        raise OnnxError("export: fold_preprocessing=True, but the model records no "
                        "preprocessing (scale, mean, std); pass preprocessing=")
    if prep is not None and tuple(prep["input_shape"]) != input_shape:
        raise OnnxError(f"export: the preprocessing is for inputs {tuple(prep['input_shape'])}, "
                        f"but input_shape is {input_shape}")
    try:
        out1 = model.output_shape((1, *input_shape))
        out2 = model.output_shape((2, *input_shape))
    except ShapeError as error:
        raise OnnxError(f"export: the model does not take inputs of shape "
                        f"(N, {', '.join(map(str, input_shape))}): {error}") from None

    ex = _Exporter(opset)
    ex._names.update({input_name, output_name})
    x = input_name
    if fold_preprocessing:  # x' = x * (scale/std) - mean/std, per channel
        std = np.asarray(prep["std"], np.float64)
        per_channel = (-1,) + (1,) * (len(input_shape) - 1)
        gain = (prep["scale"] / std).astype(np.float32).reshape(per_channel)
        offset = (np.asarray(prep["mean"]) / std).astype(np.float32).reshape(per_channel)
        x = ex.node("Mul", [x, ex.const(gain, "preprocessing.gain")], "preprocessing/scaled")
        x = ex.node("Sub", [x, ex.const(offset, "preprocessing.offset")], "preprocessing")
    was_training = model.training
    model.eval()
    try:
        y, _ = _emit(ex, model, x, (1, *input_shape), "")
    finally:
        model.train(was_training)
    # name the graph's output
    if y == input_name or not ex.nodes or y not in ex.nodes[-1].output:
        ex.nodes.append(helper.make_node("Identity", [y], [output_name], name="output"))
    else:
        ex.nodes[-1].output[0] = output_name

    def dims(a, b):  # from the output shapes at batch 1 and 2: "batch", a size, or unknown
        return ["batch" if (p, q) == (1, 2) else int(p) if p == q else None
                for p, q in zip(a, b)]

    graph = helper.make_graph(
        ex.nodes, "numcnn",
        [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT,
                                       ["batch", *input_shape])],
        [helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, dims(out1, out2))],
        initializer=ex.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="numcnn", producer_version=_version())
    onnx_model.doc_string = ("Exported by numcnn. Input: float32 (N, "
                             + ", ".join(map(str, input_shape)) + ") "
                             + ("raw pixels (preprocessing folded in)" if fold_preprocessing
                                else "preprocessed images (see metadata 'preprocessing')")
                             + "; output: one logit per class.")
    from ..models import SpecError, to_spec

    props = {"input_name": input_name, "input_shape": json.dumps(list(input_shape)),
             "preprocessing_folded": json.dumps(bool(fold_preprocessing))}
    if prep is not None:
        props["preprocessing"] = json.dumps(prep)
    if classes is not None:
        props["classes"] = json.dumps([c if isinstance(c, (int, float, str)) else str(c)
                                       for c in classes])
    try:
        props["numcnn_architecture"] = json.dumps(to_spec(model))
    except SpecError:
        pass
    helper.set_model_props(onnx_model, props)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxError(f"export: the ONNX graph built does not pass onnx.checker: {error}") \
            from None
    return onnx_model


def export(model, path, input_shape=None, *, opset: int = DEFAULT_OPSET,
           fold_preprocessing: bool = False, preprocessing=None, classes=None,
           input_name: str = "input", output_name: str = "logits"):
    """Write ``model`` to ``path`` as an ONNX model that standard runtimes (onnxruntime ...) run.

    The graph computes ``model(x)`` in eval mode (batch norm with its running statistics,
    dropout as the identity), in float32, for inputs ``(N, *input_shape)`` with any batch size
    N. It passes ``onnx.checker`` (full check, shape inference included).

    Args:
        model: a numcnn model of the layers listed in :mod:`numcnn.onnx._export`.
        path: the ``.onnx`` file; written atomically.
        input_shape: one input's shape without the batch axis, e.g. ``(1, 28, 28)``. Default:
            the ``input_shape`` the model file records (``numcnn train`` records it).
        opset: the ONNX opset, 17 or later (``padding_mode='circular'`` needs 19).
            Default: 17.
        fold_preprocessing: put the recorded preprocessing ``x' = (scale*x - mean) / std`` into
            the graph as its first nodes (``Mul``, ``Sub``), so the model takes raw pixels
            (0..255 as float32). Default: False (the model takes preprocessed images, and the
            preprocessing is in the metadata).
        preprocessing: a :class:`numcnn.data.Preprocessing` or its dict. Default: the model's
            ``metadata["preprocessing"]``.
        classes: class names. Default: the model's ``metadata["classes"]``.
        input_name, output_name: the graph's input and output names.

    The model's ``metadata_props`` hold ``input_name``, ``input_shape`` (JSON),
    ``preprocessing`` (JSON: scale, mean, std, input_shape), ``preprocessing_folded``,
    ``classes`` (JSON list) and ``numcnn_architecture`` (numcnn's JSON spec).

    Returns:
        the ``onnx.ModelProto`` written.

    Raises:
        OnnxError: a layer that has no ONNX form (the message names it and its place in the
            model), an input shape the model does not take, or the ``onnx`` package missing
            (``pip install "numcnn[onnx]"``).

    ONNX: https://onnx.ai/onnx/intro/concepts.html
    """
    onnx_model = build(model, input_shape, opset=opset, fold_preprocessing=fold_preprocessing,
                       preprocessing=preprocessing, classes=classes, input_name=input_name,
                       output_name=output_name)
    from ..io import atomic_write

    atomic_write(os.fspath(path), onnx_model.SerializeToString())
    return onnx_model


def _version() -> str:
    from .. import __version__

    return __version__
