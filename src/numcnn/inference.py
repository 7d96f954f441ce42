"""Inference plans: a trained model compiled once for serving, then run with one call per batch.

``plan = numcnn.inference.compile(model, input_shape)`` turns a model in eval mode into a plan;
``plan(x)`` returns what ``model(x)`` returns under ``numcnn.no_grad()``, to float32 rounding,
for any batch size. What compiling does to the model (the layer-by-layer path stays the
readable reference; docs/inference.md shows both, timed):

- **Batch norm folded** into the convolution or linear layer before it (TensorRT's and ONNX
  Runtime's rewrite), in float64 then cast to float32::

      s = gamma / sqrt(running_var + eps)
      w' = w * s  (per output channel),   b' = (b - running_mean) * s + beta

- **Fused**: convolution (or linear) + bias + activation (ReLU, tanh, sigmoid, leaky ReLU, ELU)
  + max pooling is one operation
  whose output loop adds the bias, applies the activation and takes each window's maximum while
  the sums are still in registers (the convolution's map is never stored); a residual sum
  followed by an activation is added in the same output loop of the block's last convolution
  (``y = relu(conv(x) + b + shortcut)``); an activation after a pooling is applied in the
  pooling loop; Dropout and Identity vanish.
- **Layout**: every activation stays batch-last (CHWN, numcnn's kernel layout) from the first
  layer to the last; each map's buffer carries a zero frame as wide as the padding of the
  convolutions that read it, so a convolution reads its padded input in place and the layer
  before writes straight into the frame's interior (no padded copy). ``Flatten`` is free: a
  CHWN map ``(c, h, w, n)`` already is the ``(c*h*w, n)`` matrix the linear layer reads, as a
  1x1 convolution.
- **Buffers** are allocated once per batch size (kept in the plan, reused by every call of that
  size); maps whose lives do not overlap share a buffer.
- **One call**: the chain of fused operations is a table of records (``numcnn/backend/
  _plan.c``) that one C call runs from the input's copy to the output's; a single image
  crosses from Python to C once. Convolutions choose, per batch size, between the kernel that
  vectorises along the rows (many images), the one that vectorises along the output channels
  (one image; any stride), and Winograd's F(4x4, 3x3) or F(2x2, 3x3) for 3x3 stride-1 layers
  of many channels and images (Lavin and Gray, CVPR 2016: 4 or 2.25 times fewer products),
  with weights packed for each once. Maps hold ``lanes(n)`` numbers per position (the batch
  rounded up to whole cache lines) in aligned buffers.

Winograd and non-finite numbers: a NaN or an infinity in a tile's input patch would make every
output of the tile NaN, so the input copy of a plan with Winograd operations checks the input,
and an input holding one runs on a twin plan without Winograd (the layer path's results). Its
error on finite inputs is 4e-6 of the outputs' scale for F(4x4, 3x3) (about 9 times the direct
sum's, see docs/inference.md). ``compile(..., winograd=False)`` (or ``NUMCNN_WINOGRAD=0``, read
when compiling) keeps every convolution on the direct sum; ``NUMCNN_WINOGRAD=2`` keeps to
F(2x2, 3x3).

Layers the plan cannot take run as they do today -- their eval forward under ``no_grad`` --
between C segments of the same plan (float64 models, or with the kernels not built, run wholly
so). Taken: ``Conv2d`` (zero padding; groups as one operation per group), ``Linear``,
``BatchNorm2d``/``BatchNorm1d`` right after one of them (with running statistics), ``ReLU``,
``Tanh``, ``Sigmoid``, ``LeakyReLU`` and ``ELU`` (slope / alpha >= 0), ``MaxPool2d`` (no
padding or dilation, floor mode), ``AvgPool2d`` (no padding, floor mode, no divisor override),
``Flatten``, ``GlobalAvgPool2d``, ``Dropout``/``Dropout2d``/``Identity`` (nothing, in eval),
and ``Sequential`` and ``Residual`` (identity or projection shortcut) made of these.

Guards. A plan refuses (:class:`NumcnnError`) a model in training mode, at compile time and at
every call, and an input whose shape is not ``(N, *input_shape)`` (:class:`ShapeError`). It
notices weights changed after compiling -- a parameter or buffer replaced (``load_state_dict``,
``to``) or changed in place (an optimiser step) -- and then compiles itself again before
running (a snapshot of every weight it folded is compared with the model's at each call, in C:
``memcmp``, about 1 us per 100 KB; batch norm's ``eps`` and activations' slopes likewise, in
Python); ``check_weights=False`` leaves that out. It keeps the buffers of its 8 most recent
batch sizes. One plan may be
called from several threads (its buffers are guarded by a lock: calls run one at a time).

Source: the folding and fusions are those of ONNX Runtime's graph optimisations
(https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html).
"""

from __future__ import annotations

import ctypes
import operator
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from . import nn
from ._grad import no_grad
from .backend import plan_kernels as K
from .backend.switch import enabled as _kernels_enabled
from .errors import NumcnnError, ShapeError
from .functional import core
from .nn.conv import _checked_parameters

__all__ = ["compile", "Plan"]

_SKIPPED = (nn.Dropout, nn.Identity)  # nothing in eval mode (Dropout2d is a Dropout)


class _Unsupported(Exception):
    """The layer at this point cannot go into a C segment."""


class _Value:
    """An activation map ``(c, h, w)`` per image (a vector of ``c`` features: ``h = w = 1``,
    ``ndim = 2``), batch-last in a buffer with a zero ``frame`` (top, bottom, left, right)."""

    __slots__ = ("c", "h", "w", "ndim", "frame", "alias", "buffer")

    def __init__(self, c, h=1, w=1, ndim=4, alias=None):
        self.c, self.h, self.w, self.ndim = int(c), int(h), int(w), ndim
        self.frame = [0, 0, 0, 0]
        self.alias = alias  # the value whose buffer this one is (Flatten)
        self.buffer = None

    @property
    def root(self) -> "_Value":
        return self if self.alias is None else self.alias.root

    @property
    def shape(self) -> tuple:
        return (self.c, self.h, self.w) if self.ndim == 4 else (self.c,)

    def geometry(self, n: int) -> tuple:
        top, bottom, left, right = self.frame
        return (self.c, self.h + top + bottom, self.w + left + right, n)


def lanes(n: int) -> int:
    """The numbers per map position in a plan's buffers for a batch of ``n``: ``n`` rounded up
    to whole 16-float vectors (64-byte cache lines) where that wastes at most an eighth, so
    that every vector the kernels load or store is aligned (a 64-byte AVX-512 load across two
    cache lines costs two), and to an odd number of lines; else ``n``. The extra lanes hold numbers no sample reads (every
    operation of a plan works lane by lane), and the copies in and out skip them."""
    padded = -(-n // 16) * 16
    if (padded // 16) % 2 == 0:  # an odd number of lines: with 512 lanes the rows and channels
        padded += 16              # of a map lay 4 KiB apart and fell into the same sets of the
    return padded if 8 * (padded - n) <= n else n  # L1 cache (ResNet, batch 500: 30% slower)


def _aligned_zeros(shape: tuple) -> np.ndarray:
    """Zeros of ``shape``, float32, starting on a 64-byte boundary."""
    size = int(np.prod(shape))
    raw = np.zeros(size + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start:start + size].reshape(shape)


def _view(value: _Value, n: int, pads=((0, 0), (0, 0))) -> dict:
    """Address and strides (in floats) of ``value``'s map, widened by ``pads`` into its frame."""
    root = value.root
    buffer = root.buffer
    _, height, width, _ = root.geometry(n)
    top, _, left, _ = root.frame
    (pt, _), (pl, _) = pads
    if value is not root:  # Flatten: the (c*h*w, n) matrix of the root's dense map
        return {"addr": buffer.ctypes.data, "cs": n, "rs": n, "col": n, "s": 1}
    offset = ((top - pt) * width + (left - pl)) * n
    return {"addr": buffer.ctypes.data + 4 * offset, "cs": height * width * n,
            "rs": width * n, "col": n, "s": 1}


class _Segment:
    """Layers run by one C call: the nodes of fused operations, and per batch size the table."""

    def __init__(self, nodes, first: _Value, last: _Value, final: bool):
        self.nodes, self.first, self.last, self.final = nodes, first, last, final
        self.tables: dict[int, tuple] = {}
        self.labels: dict[int, list] = {}  # per batch size: what each record of the table does

    def prepare(self, n: int, checks: list) -> tuple:
        """The operation table for batch size ``n``: ``(table, count, out_view, buffers)``;
        the table holds raw addresses, so ``buffers`` must be kept as long as it is. Maps
        hold ``lanes(n)`` numbers per position."""
        m = lanes(n)
        # Buffers: a map takes the smallest released buffer that holds it (best fit), else a
        # new one; a buffer is released after the last operation that reads its map.
        free: list[np.ndarray] = []    # released raw buffers (1-D, aligned)
        raws: list[np.ndarray] = []    # every raw buffer of this table
        raw_of: dict[int, np.ndarray] = {}  # id(value) -> its raw buffer
        layouts: dict[int, set] = {}   # id(raw) -> the (geometry, frame) of its maps
        last_read = {}
        for index, node in enumerate(self.nodes):
            for value in node["reads"]:
                last_read[id(value.root)] = index
        for index, node in enumerate(self.nodes):
            out = node.get("y")
            if out is not None and out.alias is None:
                geometry = out.geometry(m)
                size = int(np.prod(geometry))
                fits = [k for k, raw in enumerate(free) if raw.size >= size]
                if fits:
                    raw = free.pop(min(fits, key=lambda k: free[k].size))
                else:
                    raw = _aligned_zeros((size,))
                    raws.append(raw)
                out.buffer = raw[:size].reshape(geometry)
                raw_of[id(out)] = raw
                layouts.setdefault(id(raw), set()).add((geometry, tuple(out.frame)))
            for value in node["reads"]:
                root = value.root
                if last_read.get(id(root)) == index and root is not self.last.root:
                    free.append(raw_of[id(root)])
                    last_read.pop(id(root))
        records, labels = list(checks), []
        for node in self.nodes:
            out = node.get("y")
            # a map with a zero frame, in a buffer other maps lay out otherwise: its frame is
            # zeroed before its producer writes the interior, at every call
            if (out is not None and out.alias is None and any(out.frame)
                    and len(layouts[id(raw_of[id(out)])]) > 1):
                records.append(self._zero_frame_record(out, m))
                labels.append("zero frame")
            if node["op"] == "conv":  # one record, or one per group
                group_records = self._conv_records(node, m)
                records += group_records
                label = _describe(node, m)
                labels += ([label] if len(group_records) == 1 else
                           [f"{label} (group {g + 1} of {len(group_records)})"
                            for g in range(len(group_records))])
            elif node["op"] != "flatten":  # a Flatten is a view: no operation
                records.append(self._record(node, n, m))
                labels.append(_describe(node, m))
        if any(r.get("kind") == K.CONV and r.get("mode") in (K.WINOGRAD, K.WINOGRAD4)
               for r in records):
            for record in records:  # the input copy checks for NaN and infinities
                if record.get("kind") == K.COPY and record.get("ends") == K.FROM_INPUT:
                    record["mode"] = 1
        self.labels[n] = labels
        table = K.table(records)
        out_view = None
        if not self.final:
            out_view = self._nchw(self.last, n, m)
        return table, len(records), out_view, raws

    @staticmethod
    def _zero_frame_record(value: _Value, m: int) -> dict:
        """The C record that zeroes the frame of ``value``'s buffer."""
        c, height, width, _ = value.geometry(m)
        top, bottom, left, right = value.frame
        return {"kind": K.ZERO_FRAME, "y": value.buffer.ctypes.data, "c": c, "h": height,
                "w": width, "n": m, "ycs": height * width * m, "yrs": width * m,
                "kh": top, "kw": bottom, "sh": left, "sw": right}

    @staticmethod
    def _nchw(value: _Value, n: int, m: int) -> np.ndarray:
        """The NCHW (or ``(n, features)``) view of a value's map, for a Python layer after it."""
        root = value.root
        if value is not root or value.ndim == 2:
            return root.buffer.reshape(-1, m)[:, :n].T
        top, _, left, _ = root.frame
        return root.buffer[:, top:top + value.h, left:left + value.w, :n].transpose(3, 0, 1, 2)

    def _record(self, node: dict, n: int, m: int) -> dict:
        """The C record of ``node`` for ``n`` samples in maps of ``m`` lanes (the copies in
        and out move ``n``; every other operation works on all ``m``)."""
        kind = node["op"]
        if kind == "input":
            y, v = node["y"], _view(node["y"], m)
            return {"kind": K.COPY, "ends": K.FROM_INPUT, "c": y.c, "h": y.h, "w": y.w, "n": n,
                    "y": v["addr"], "ycs": v["cs"], "yrs": v["rs"], "ycol": v["col"],
                    "ys": v["s"]}
        if kind == "output":
            x, v = node["x"], _view(node["x"], m)
            return {"kind": K.COPY, "ends": K.TO_OUTPUT, "c": x.c, "h": x.h, "w": x.w, "n": n,
                    "x": v["addr"], "xcs": v["cs"], "xrs": v["rs"], "xcol": v["col"],
                    "xs": v["s"], "ycs": x.h * x.w, "yrs": x.w, "ycol": 1,
                    "ys": x.c * x.h * x.w}
        x, y = node["x"], node["y"]
        vx, vy = _view(x, m), _view(y, m)
        record = {"c": x.c, "h": x.h, "w": x.w, "n": m, "oh": y.h, "ow": y.w,
                  "x": vx["addr"], "xcs": vx["cs"], "xrs": vx["rs"], "xcol": vx["col"],
                  "xs": vx["s"], "y": vy["addr"], "ycs": vy["cs"], "yrs": vy["rs"],
                  "ycol": vy["col"], "ys": vy["s"], "act": node.get("act", K.NO_ACT)}
        if kind in ("maxpool", "avgpool"):
            (kh, kw), (sh, sw) = node["kernel"], node["stride"]
            record.update(kind=K.MAXPOOL if kind == "maxpool" else K.AVGPOOL, kh=kh, kw=kw,
                          sh=sh, sw=sw)
        elif kind == "ewise":
            record["kind"] = K.EWISE
            if node.get("r") is not None:
                vr = _view(node["r"], m)
                record.update(r=vr["addr"], rcs=vr["cs"], rrs=vr["rs"])
        elif kind == "mean":
            record["kind"] = K.MEAN
        elif kind == "copy":
            record.update(kind=K.COPY, c=x.c, h=x.h, w=x.w)
        return record

    @staticmethod
    def _conv_records(node: dict, n: int) -> list[dict]:
        """The C records of a convolution on ``n`` lanes: one, or one per group (each group's
        input and output channels are a contiguous slice of the CHWN maps)."""
        x, y, groups = node["x"], node["y"], node["groups"]
        (sh, sw), (dh, dw) = node["stride"], node["dilation"]
        oc, c, kh, kw = node["weight"].shape
        oc_g = oc // groups
        (oh, ow), (ph, pw) = node["conv_hw"], node["pool"]
        rows = sw == 1 and (ow // pw) * pw * n >= (ROWS_MIN_NUMBERS if (ph, pw) == (1, 1)
                                                    else 64)
        # a strided convolution of a batch: the rows kernel along each position's samples
        columns = not rows and (ph, pw) == (1, 1) and n >= 64
        mode = K.ROWS if rows else K.COLUMNS if columns else K.CHANNELS
        if rows:
            mode = _winograd_mode(node, n) or mode
        node.setdefault("modes", {})[n] = mode
        packing = K.ROWS if mode == K.COLUMNS else mode
        pack = {K.ROWS: K.pack_rows, K.CHANNELS: K.pack_channels,
                K.WINOGRAD: K.pack_winograd,
                K.WINOGRAD4: lambda w: K.pack_winograd(w, 4)}[packing]
        vx, vy = _view(x, n, node["pads"]), _view(y, n)
        vr = _view(node["r"], n) if node.get("r") is not None else None
        records = []
        for g in range(groups):
            packed = node["packed"].get((packing, g))
            if packed is None:
                packed = node["packed"][(packing, g)] = pack(
                    node["weight"][g * oc_g:(g + 1) * oc_g])
            record = {"kind": K.CONV, "mode": mode, "act": node["act"], "c": c, "oc": oc_g,
                      "h": x.h, "w": x.w, "n": n, "oh": oh, "ow": ow, "ph": ph, "pw": pw,
                      "kh": kh, "kw": kw,
                      "sh": sh, "sw": sw, "dh": dh, "dw": dw,
                      "x": vx["addr"] + 4 * g * c * vx["cs"], "xcs": vx["cs"],
                      "xrs": vx["rs"], "xcol": vx["col"], "xs": vx["s"],
                      "y": vy["addr"] + 4 * g * oc_g * vy["cs"], "ycs": vy["cs"],
                      "yrs": vy["rs"], "ycol": vy["col"], "ys": vy["s"],
                      "wgt": packed.ctypes.data, "bias": node["bias"][g].ctypes.data}
            if vr is not None:
                record.update(r=vr["addr"] + 4 * g * oc_g * vr["cs"], rcs=vr["cs"],
                              rrs=vr["rs"])
            records.append(record)
        return records


# The rows kernel from output rows of this many numbers (ow * n) on (64 with max pooling
# fused); shorter rows, the channels kernel. 32 (two AVX-512 vectors): the ResNet's 32x32 and 16x16 maps of a single image on the
# rows kernel took 199 us for the whole model against 243 us on the channels kernel (whose
# blocks of 32 output channels are half padding for 16-channel layers).
ROWS_MIN_NUMBERS = 32
# Winograd from this many input channels and samples (lanes) on, or from 16 channels on input
# maps of at most WINOGRAD_SMALL_MAP bytes: below them the transforms (and, for large maps, the
# input patches read 4 times over) cost more than the fewer products save (measured:
# docs/inference.md).
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_LANES = 16
WINOGRAD_SMALL_MAP = 16 << 20


def _winograd_mode(node: dict, n: int) -> int | None:
    """The Winograd mode for the convolution of ``node`` on ``n`` lanes, or None: a 3x3
    kernel, stride 1, no dilation, no pooling fused, at least ``WINOGRAD_MIN_CHANNELS`` input
    channels (16 on input maps of at most ``WINOGRAD_SMALL_MAP`` bytes) and
    ``WINOGRAD_MIN_LANES`` lanes; F(4x4, 3x3) on output maps whose height and width
    are multiples of 4, else F(2x2, 3x3) on even ones. The node's ``"winograd"``: the plan's
    choice (:func:`_winograd_choice`)."""
    oc, c, kh, kw = node["weight"].shape
    oh, ow = node["conv_hw"]
    choice = node.get("winograd", "")
    small_map = 4 * c * (oh + 2) * (ow + 2) * n <= WINOGRAD_SMALL_MAP
    if (choice == "0" or (kh, kw) != (3, 3) or node["stride"] != (1, 1)
            or node["dilation"] != (1, 1) or node["pool"] != (1, 1) or n < WINOGRAD_MIN_LANES
            or c < (16 if small_map else WINOGRAD_MIN_CHANNELS)):
        return None
    if oh % 4 == 0 and ow % 4 == 0 and choice != "2":
        return K.WINOGRAD4
    if oh % 2 == 0 and ow % 2 == 0:
        return K.WINOGRAD
    return None


def _activation(layer) -> int | None:
    """The act field for an activation layer the plan fuses, or None: ReLU, Tanh, Sigmoid,
    LeakyReLU and ELU with a slope / alpha >= 0 (non-decreasing, so that they commute with max
    pooling). Its parameter is read when the plan is compiled."""
    kind = type(layer)
    if kind is nn.ReLU:
        return K.RELU
    if kind is nn.Tanh:
        return K.TANH
    if kind is nn.Sigmoid:
        return K.SIGMOID
    if kind is nn.LeakyReLU and 0 <= layer.negative_slope <= 1e30:
        return K.activation(K.LEAKY_RELU, layer.negative_slope)
    if kind is nn.ELU and 0 <= layer.alpha <= 1e30:
        return K.activation(K.ELU, layer.alpha)
    return None


def _act_name(act: int) -> str:
    """`` + ReLU``, `` + leaky ReLU (0.01)``, ... for an act field (empty for none)."""
    code = act & 0xFF
    alpha = float(np.array(act >> 32, np.uint32).view(np.float32))
    return {K.NO_ACT: "", K.RELU: " + ReLU", K.TANH: " + tanh", K.SIGMOID: " + sigmoid",
            K.LEAKY_RELU: f" + leaky ReLU ({alpha:g})", K.ELU: f" + ELU ({alpha:g})"}[code]


_MODE_NAMES = {K.ROWS: "direct, rows", K.CHANNELS: "direct, channels",
               K.COLUMNS: "direct, columns", K.WINOGRAD: "Winograd F(2x2, 3x3)",
               K.WINOGRAD4: "Winograd F(4x4, 3x3)"}


def _describe(node: dict, lanes: int | None = None) -> str:
    """The operation of ``node`` in words; with ``lanes``, a convolution's kernel for maps of
    that many lanes in brackets."""
    kind = node["op"]
    if kind == "conv":
        oc, c, kh, kw = node["weight"].shape
        groups = node.get("groups", 1)
        text = f"conv {c * groups}->{oc} {kh}x{kw}" + (f" groups {groups}" if groups > 1 else "")
        if tuple(node["stride"]) != (1, 1):
            text += f" stride {tuple(node['stride'])}"
        text += " + bias" + (" (batch norm folded)" if node.get("folded") else "")
        if node.get("r") is not None:
            text += " + residual"
        text += _act_name(node["act"])
        if node["pool"] != (1, 1):
            text += f" + max pool {node['pool'][0]}x{node['pool'][1]}"
        mode = node.get("modes", {}).get(lanes)
        if mode is not None:
            text += f" [{_MODE_NAMES[mode]}]"
        return text
    if kind in ("maxpool", "avgpool"):
        stride = tuple(node["stride"])
        return (f"{kind[:3]} pool {node['kernel'][0]}x{node['kernel'][1]}"
                + (f" stride {stride}" if stride != tuple(node["kernel"]) else "")
                + _act_name(node.get("act", K.NO_ACT)))
    if kind == "ewise":
        text = ("add" if node.get("r") is not None else "") + _act_name(node["act"])
        return text.lstrip(" +")
    return {"input": "input copy (NCHW -> CHWN)", "output": "output copy (CHWN -> NCHW)",
            "mean": "global average pool", "copy": "copy"}.get(kind, kind)


# -- compiling a chain of layers into nodes --------------------------------------------------

def _layers(module) -> list:
    """A Sequential's leaves in order (nested Sequentials opened); anything else as one."""
    if type(module) is nn.Sequential:
        out = []
        for child in module:
            out.extend(_layers(child))
        return out
    return [module]


def _batch_norm_affine(bn, channels: int):
    """``(scale, shift)`` in float64 of a batch norm outside training, or None if it normalises
    with batch statistics (no running statistics)."""
    if bn.running_mean is None or bn.running_var is None or bn.num_features != channels:
        return None
    gamma = np.ones(channels) if bn.weight is None else bn.weight.data.astype(np.float64)
    beta = np.zeros(channels) if bn.bias is None else bn.bias.data.astype(np.float64)
    scale = gamma / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    return scale, beta - bn.running_mean.astype(np.float64) * scale


class _Builder:
    """Turns a chain of layers into nodes; raises _Unsupported at the first it cannot take."""

    def __init__(self, watched: list):
        self.nodes: list[dict] = []
        self.watched = watched  # (module, kind, name, array) the plan folded from

    def watch(self, module, *names):
        for name in names:
            if name in module._parameters and module._parameters[name] is not None:
                self.watched.append((module, "p", name, module._parameters[name].data))
            elif module._buffers.get(name) is not None:
                self.watched.append((module, "b", name, module._buffers[name]))

    def chain(self, layers: list, value: _Value, stop_at_unsupported: bool = False):
        """Nodes for ``layers`` from ``value``: ``(value after, layers taken)``."""
        index = 0
        while index < len(layers):
            mark = len(self.nodes), len(self.watched)
            try:
                value, taken = self.step(layers, index, value)
            except _Unsupported:
                del self.nodes[mark[0]:], self.watched[mark[1]:]
                if stop_at_unsupported:
                    return value, index
                raise
            index += taken
        return value, index

    def emit(self, node: dict) -> _Value:
        node.setdefault("reads", [v for v in (node.get("x"), node.get("r")) if v is not None])
        self.nodes.append(node)
        return node.get("y")

    def step(self, layers, index, value):
        layer = layers[index]
        following = layers[index + 1:]
        if isinstance(layer, _SKIPPED):
            return value, 1
        if type(layer) is nn.Conv2d and value.ndim == 4:
            return self.conv(layer, following, value)
        if type(layer) is nn.Linear and value.ndim == 2:
            return self.linear(layer, following, value)
        if _activation(layer) is not None:
            out = _Value(value.c, value.h, value.w, value.ndim)
            return self.emit({"op": "ewise", "x": value, "y": out, "act": _activation(layer)}), 1
        if type(layer) is nn.MaxPool2d and value.ndim == 4:
            return self.max_pool(layer, following, value)
        if type(layer) is nn.AvgPool2d and value.ndim == 4:
            return self.avg_pool(layer, following, value)
        if type(layer) is nn.Flatten and _flattens_all(layer, value):
            if value.ndim == 2:
                return value, 1
            out = _Value(value.c * value.h * value.w, ndim=2, alias=value)
            return self.emit({"op": "flatten", "x": value, "y": out}), 1
        if type(layer) is nn.GlobalAvgPool2d and value.ndim == 4:
            return self.emit({"op": "mean", "x": value, "y": _Value(value.c, ndim=2)}), 1
        if isinstance(layer, nn.Residual):  # fn(x) + shortcut(x), the shortcut x if None
            return self.residual(layer, following, value)
        if type(layer) is nn.Sequential:
            return self.chain(_layers(layer), value)[0], 1
        raise _Unsupported(type(layer).__name__)

    @staticmethod
    def _fusable_act(following) -> int:
        """The act field of the activation layer that comes next (_activation), or NO_ACT."""
        act = _activation(following[0]) if following else None
        return K.NO_ACT if act is None else act

    def conv(self, layer, following, value):
        if layer.padding_mode != "zeros" or layer.weight.dtype != np.float32:
            raise _Unsupported("Conv2d")
        layer.output_shape((1, value.c, value.h, value.w))  # a ShapeError if it does not fit
        weight, bias = _checked_parameters(layer, (layer.out_channels,
                                                   layer.in_channels // layer.groups,
                                                   *layer.kernel_size))
        weight = weight.astype(np.float64)
        bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        self.watch(layer, "weight", "bias")
        (sh, sw), (dh, dw), pads = layer._stride2d, layer._dilation2d, layer._pads
        _, _, oh, ow = layer.output_shape((1, value.c, value.h, value.w))
        return self._affine("conv", layer, weight, bias, following, value,
                            _Value(weight.shape[0], oh, ow),
                            {"stride": (sh, sw), "dilation": (dh, dw), "pads": pads,
                             "groups": layer.groups},
                            nn.BatchNorm2d)

    def linear(self, layer, following, value):
        if layer.weight.dtype != np.float32:
            raise _Unsupported("Linear")
        layer.output_shape((1, value.c))
        if layer.weight.data.shape != (layer.out_features, layer.in_features) or (
                layer.bias is not None and layer.bias.data.shape != (layer.out_features,)):
            raise ShapeError(f"Linear: its weight has shape {layer.weight.data.shape}, but the "
                             f"layer was built for ({layer.out_features}, "
                             f"{layer.in_features}); build a new layer for another shape")
        weight = layer.weight.data.astype(np.float64)[:, :, None, None]
        bias = (np.zeros(weight.shape[0]) if layer.bias is None
                else layer.bias.data.astype(np.float64))
        self.watch(layer, "weight", "bias")
        return self._affine("linear", layer, weight, bias, following, value,
                            _Value(weight.shape[0], ndim=2),
                            {"stride": (1, 1), "dilation": (1, 1), "pads": ((0, 0), (0, 0))},
                            nn.BatchNorm1d)

    def _affine(self, what, layer, weight, bias, following, value, out, geometry, norm_type):
        taken, folded = 1, False
        if following and type(following[0]) is norm_type:
            affine = _batch_norm_affine(following[0], weight.shape[0])
            if affine is not None:
                scale, shift = affine
                weight = weight * scale[:, None, None, None]
                bias = bias * scale + shift
                self.watch(following[0], "weight", "bias", "running_mean", "running_var")
                taken, folded = 2, True
        act = self._fusable_act(following[taken - 1:])
        taken += act != K.NO_ACT
        groups = geometry.get("groups", 1)
        oc_g = weight.shape[0] // groups
        node = {"op": "conv", "x": value, "y": out, "act": act, "folded": folded,
                "weight": np.ascontiguousarray(weight, np.float32),
                "bias": [K.padded_bias(bias[g * oc_g:(g + 1) * oc_g].astype(np.float32), oc_g)
                         for g in range(groups)],
                "packed": {}, "what": what, "conv_hw": (out.h, out.w), "pool": (1, 1),
                "groups": 1, **geometry}
        pool = _fusable_pool(following[taken - 1:], out)
        if what == "conv" and pool is not None:
            # max pooling in the convolution's output loop: the conv map is never stored
            (ph, pw), (pooled_h, pooled_w) = pool
            node["pool"], taken = (ph, pw), taken + 1
            node["y"] = out = _Value(out.c, pooled_h, pooled_w)
            if act == K.NO_ACT and self._fusable_act(following[taken - 1:]) != K.NO_ACT:
                # an activation after the maximum is the same before it (non-decreasing)
                node["act"] = self._fusable_act(following[taken - 1:])
                taken += 1
        return self.emit(node), taken

    def max_pool(self, layer, following, value):

        kernel, stride, padding, dilation = core.pool_args(
            "MaxPool2d", layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        if (padding != (0, 0) or dilation != (1, 1) or layer.ceil_mode
                or layer.return_indices):
            raise _Unsupported("MaxPool2d")
        _, _, oh, ow = layer.output_shape((1, value.c, value.h, value.w))
        act = self._fusable_act(following)
        out = _Value(value.c, oh, ow)
        return self.emit({"op": "maxpool", "x": value, "y": out, "kernel": kernel,
                          "stride": stride, "act": act}), 1 + (act != K.NO_ACT)

    def avg_pool(self, layer, following, value):

        kernel, stride, padding, _ = core.pool_args(
            "AvgPool2d", layer.kernel_size, layer.stride, layer.padding)
        if padding != (0, 0) or layer.ceil_mode or layer.divisor_override is not None:
            raise _Unsupported("AvgPool2d")
        _, _, oh, ow = layer.output_shape((1, value.c, value.h, value.w))
        act = self._fusable_act(following)
        out = _Value(value.c, oh, ow)
        return self.emit({"op": "avgpool", "x": value, "y": out, "kernel": kernel,
                          "stride": stride, "act": act}), 1 + (act != K.NO_ACT)

    def residual(self, layer, following, value):
        shortcut_module = getattr(layer, "shortcut", None)
        if value.ndim != 4:
            raise _Unsupported("Residual")
        shortcut = value
        if shortcut_module is not None:
            shortcut, _ = self.chain(_layers(shortcut_module), value)
        first = len(self.nodes)
        out, _ = self.chain(_layers(layer.fn), value)
        if out.shape != shortcut.shape or out.ndim != 4:
            raise ShapeError(f"Residual: the block gives {out.shape} but the shortcut "
                             f"{shortcut.shape}; they must agree to be added")
        act = self._fusable_act(following)
        taken = 1 + (act != K.NO_ACT)
        last = self.nodes[-1] if len(self.nodes) > first else None
        if (last is not None and last["op"] == "conv" and last["y"] is out
                and last["act"] == K.NO_ACT and last.get("r") is None
                and last["pool"] == (1, 1)):
            last["r"], last["act"] = shortcut, act  # y = act(conv(x) + b + shortcut)
            last["reads"].append(shortcut)
            return out, taken
        summed = _Value(out.c, out.h, out.w)
        return self.emit({"op": "ewise", "x": out, "r": shortcut, "y": summed, "act": act}), taken


def _fusable_pool(following, value: _Value):
    """``((ph, pw), (pooled h, pooled w))`` if the next layer is a max pooling over
    non-overlapping windows of at most 6 positions (no padding, dilation or ceil mode), which
    the convolution can do in its output loop; else None."""

    if not following or type(following[0]) is not nn.MaxPool2d:
        return None
    layer = following[0]
    kernel, stride, padding, dilation = core.pool_args(
        "MaxPool2d", layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    if (kernel != stride or padding != (0, 0) or dilation != (1, 1) or layer.ceil_mode
            or layer.return_indices or kernel[0] * kernel[1] > 6
            or value.h < kernel[0] or value.w < kernel[1]):
        return None
    return kernel, (value.h // kernel[0], value.w // kernel[1])


def _flattens_all(layer, value: _Value) -> bool:
    """Whether Flatten turns ``(n, ...)`` into ``(n, features)`` (its default axes)."""
    ndim = 1 + (3 if value.ndim == 4 else 1)
    start = layer.start_dim % ndim
    end = layer.end_dim % ndim
    return start == 1 and end == ndim - 1


def _finish_frames(nodes: list) -> None:
    """Each map's frame: the widest padding of the convolutions that read it; a Flatten of a
    framed map becomes a copy into a dense one."""
    for node in nodes:
        if node["op"] == "conv":
            (top, bottom), (left, right) = node["pads"]
            frame = node["x"].root.frame
            for k, pad in enumerate((top, bottom, left, right)):
                frame[k] = max(frame[k], pad)
    for node in nodes:
        if node["op"] == "flatten":
            source, out = node["x"], node["y"]
            if any(source.frame):
                dense = _Value(source.c, source.h, source.w)
                node.update(op="copy", y=dense)
                out.alias = dense
                node["reads"] = [source]


# -- the plan --------------------------------------------------------------------------------

# Layers' attributes a plan folds or fuses (BatchNorm's eps, LeakyReLU's slope, ELU's alpha)
_WATCHED_VALUES = ("eps", "negative_slope", "alpha")

# A plan keeps the buffers of this many batch sizes, the most recently used (a server seeing
# every batch size from 1 to 300 kept 1.4 GiB before this bound).
KEPT_BATCH_SIZES = 8


class Plan:
    """A model compiled for inference (see the module docstring). Call it like the model.

    Args (of :func:`compile`):
        model: a :class:`numcnn.nn.Module` in eval mode.
        input_shape: the shape of one input, e.g. ``(1, 28, 28)`` (without the batch axis).
        check_weights: compare the model's weights with the plan's at each call, and compile
            again if they changed. Default: True.
        winograd: let 3x3 stride-1 convolutions run as Winograd's F(4x4, 3x3) or F(2x2, 3x3)
            where that pays (faster; an input holding a NaN or infinity runs without it).
            False: the direct sum everywhere. Default: True.

    Shape:
        - Input: ``(N, *input_shape)``, any N >= 1 (float32; other dtypes are cast).
        - Output: what the model returns, e.g. ``(N, classes)``, a new float32 array.

    Raises:
        NumcnnError: the model is in training mode (at compile time or at a call), or
            ``NUMCNN_WINOGRAD`` is not 0, 1 or 2.
        ShapeError: an ``input_shape`` not of whole numbers or that the model does not take;
            an input not of shape ``(N, *input_shape)``; a weight replaced by another shape.
    """

    def __init__(self, model, input_shape, check_weights: bool = True, winograd: bool = True):
        if not isinstance(model, nn.Module):
            raise NumcnnError(f"compile takes a numcnn.nn.Module, got {type(model).__name__}")
        try:
            input_shape = tuple(operator.index(s) for s in input_shape)
        except TypeError:
            raise ShapeError(f"compile: input_shape is the shape of one input in whole numbers, "
                             f"e.g. (1, 28, 28); got {tuple(input_shape)}") from None
        if not input_shape or min(input_shape) < 1:
            raise ShapeError(f"compile: input_shape is the shape of one input, e.g. (1, 28, 28); "
                             f"got {input_shape}")
        # the layers' own check of the shape (the message the layer path would give)
        model.output_shape((1, *input_shape))
        self.model, self.input_shape, self.check_weights = model, input_shape, check_weights
        self.winograd = bool(winograd)
        self._winograd_choice = _winograd_choice(self.winograd)
        self._direct = None  # the plan without Winograd, for non-finite inputs
        self._lock = threading.Lock()
        self._build()

    # -- compiling -----------------------------------------------------------------------------
    def _build(self) -> None:
        model = self.model
        self._refuse_training()
        started = time.perf_counter()
        self.output_shape = tuple(model.output_shape((1, *self.input_shape)))[1:]
        self._watched: list = []
        self._segments: list = []  # a _Segment, or a layer run by Python
        layers = _layers(model)
        float32 = all(p.dtype == np.float32 for p in model.parameters())
        native = K.available() and _kernels_enabled() and float32
        shape = (1, *self.input_shape)
        index = 0
        while index < len(layers):
            taken = 0
            if native and len(shape) in (2, 4):
                builder = _Builder(self._watched)
                first = _Value(*shape[1:], ndim=len(shape))
                builder.emit({"op": "input", "y": first, "reads": []})
                last, taken = builder.chain(layers[index:], first, stop_at_unsupported=True)
            if taken:
                final = index + taken == len(layers)
                if final:
                    builder.emit({"op": "output", "x": last})
                _finish_frames(builder.nodes)
                for node in builder.nodes:
                    node["winograd"] = self._winograd_choice
                self._segments.append(_Segment(builder.nodes, first, last, final))
                shape = (1, *last.shape)
            else:
                layer = layers[index]
                self._segments.append(layer)
                shape = tuple(layer.output_shape(shape))
                taken = 1
            index += taken
        # snapshots in the arrays' own memory order, so that a contiguous array (C or Fortran
        # order) is compared byte for byte in C; any other array in Python
        self._snapshots = [np.array(array, copy=True, order="K") for *_, array in self._watched]
        self._checks, self._python_checks = [], []
        for (*_, array), snap in zip(self._watched, self._snapshots):
            if (array.flags.c_contiguous or array.flags.f_contiguous) and (
                    snap.strides == array.strides):
                self._checks.append({"kind": K.CHECK, "x": array.ctypes.data,
                                     "y": snap.ctypes.data, "n": array.nbytes})
            else:
                self._python_checks.append((array, snap))
        # the numbers a plan reads from layers' attributes (batch norm's eps, an activation's
        # slope or alpha): compared at each call like the weights
        self._values = [(module, name, getattr(module, name)) for module in model.modules()
                        for name in _WATCHED_VALUES
                        if type(getattr(module, name, None)) in (int, float)]
        self._training_flags = [m for m in model.modules()]
        self._runs: OrderedDict[int, list] = OrderedDict()
        # one C segment from input to output: the calls take a shorter road (_fast)
        self._single = len(self._segments) == 1 and isinstance(self._segments[0], _Segment)
        self._fast: dict[int, tuple] = {}
        self.compile_seconds = time.perf_counter() - started

    def _refuse_training(self) -> None:
        if any(m.training for m in self.model.modules()):
            raise NumcnnError("an inference plan needs the model in eval mode (model.eval()); "
                              "it is in training mode")

    def _replaced(self) -> bool:
        """Whether a watched weight was replaced, or (an array the C check cannot read byte for
        byte) changed in place."""
        for module, name, value in self._values:
            if getattr(module, name) != value:
                return True
        for array, snap in self._python_checks:
            if not np.array_equal(array, snap, equal_nan=True):
                return True
        for module, kind, name, array in self._watched:
            if kind == "p":
                param = module._parameters.get(name)
                if param is None or param.data is not array:
                    return True
            elif module._buffers.get(name) is not array:
                return True
        return False

    # -- per batch size ------------------------------------------------------------------------
    def _steps(self, n: int) -> list:
        """The steps for batch size ``n``, prepared now unless kept (the most recent
        ``KEPT_BATCH_SIZES`` sizes are)."""
        steps = self._runs.get(n)
        if steps is None:
            return self._prepare(n)
        self._runs.move_to_end(n)
        return steps

    def _prepare(self, n: int) -> list:
        steps = []
        first_c = True
        for segment in self._segments:
            if isinstance(segment, _Segment):
                checks = self._checks if (first_c and self.check_weights) else []
                table, count, out_view, buffers = segment.prepare(n, checks)
                steps.append((table, count, out_view, segment.final, buffers))
                first_c = False
            else:
                steps.append(segment)
        self._runs[n] = steps
        while len(self._runs) > KEPT_BATCH_SIZES:  # the least recently used size goes
            old, _ = self._runs.popitem(last=False)
            self._fast.pop(old, None)
        return steps

    # -- running -------------------------------------------------------------------------------
    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise ShapeError(f"this plan was compiled for inputs of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")
        with self._lock:
            for module in self._training_flags:
                if module.training:
                    self._refuse_training()
            if self.check_weights and self._replaced():
                self._build()
            if self._single and x.shape[0]:
                out = self._run_fast(x)
            else:
                out = self._run(x, None)
            if out is None:  # the weights changed in place: fold them again
                self._build()
                out = self._run(x, None)
        if out is _NONFINITE:  # Winograd would spread a NaN or infinity over whole tiles
            out = self._direct_plan()(x)
        return out

    def _direct_plan(self) -> "Plan":
        """This model's plan without Winograd (made when first needed): what inputs holding NaN
        or infinities run, so that they give the layer path's results."""
        with self._lock:
            if self._direct is None:
                self._direct = Plan(self.model, self.input_shape, self.check_weights,
                                    winograd=False)
            return self._direct

    def _run_fast(self, x: np.ndarray):
        """One C call, its arguments made once per batch size: the input's address is the only
        one looked up per call (``x`` is made float32 and C-contiguous first)."""
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, np.float32)
        n = x.shape[0]
        fast = self._fast.get(n)
        if fast is None:
            table, count, _, _, _ = self._steps(n)[0]
            strides = _strides(x)
            fast = (K.runner(), ctypes.addressof(table), count, strides.ctypes.data,
                    (n, *self.output_shape), strides)
            self._fast[n] = fast
        run, table, count, strides, shape, _ = fast
        out = np.empty(shape, np.float32)
        status = run(table, count, _address(x), strides, _address(out), None)
        if status != 0:
            if status == 1:
                return None
            if status == 3:
                return _NONFINITE
            raise _run_error(status)
        return out

    run = __call__

    def _run(self, x: np.ndarray, times: list | None):
        n = x.shape[0]
        if n == 0:
            with no_grad():
                return self.model(x)
        steps = self._steps(n)
        out = x
        for step in steps:
            if type(step) is tuple:
                run = K.runner()
                table, count, out_view, final, _ = step
                if out.dtype != np.float32:  # any strides do; the dtype must be float32
                    out = out.astype(np.float32)
                strides = _strides(out)
                result = np.empty((n, *self.output_shape), np.float32) if final else None
                clock = (ctypes.c_double * count)() if times is not None else None
                status = run(table, count, out.ctypes.data, strides.ctypes.data,
                             None if result is None else result.ctypes.data, clock)
                if status == 1:
                    return None
                if status == 3:
                    return _NONFINITE
                if status != 0:
                    raise _run_error(status)
                if times is not None:
                    times.append(list(clock))
                out = result if final else out_view
            else:
                start = time.perf_counter()
                with no_grad():
                    out = step(out)
                if times is not None:
                    times.append([time.perf_counter() - start])
                out = np.asarray(out)
        if type(steps[-1]) is not tuple:
            out = np.array(out, dtype=out.dtype, copy=True)
        return out

    # -- looking inside ------------------------------------------------------------------------
    def describe(self) -> list[str]:
        """One line per operation: the fused C operations and the layers Python runs."""
        lines = []
        for segment in self._segments:
            if isinstance(segment, _Segment):
                lines += [_describe(node) for node in segment.nodes if node["op"] != "flatten"]
            else:
                lines.append(f"{type(segment).__name__} (layer forward, Python)")
        return lines

    def profile(self, x, repeats: int = 20) -> list[tuple[str, float]]:
        """``(operation, median seconds)`` per operation for the input ``x`` (each C operation
        timed inside the C call; the weight checks left out). A convolution's name ends with
        the kernel that ran it, e.g. ``[Winograd F(2x2, 3x3)]`` or ``[direct, rows]``."""
        x = np.ascontiguousarray(x, np.float32)
        self(x)
        samples, nonfinite = [], False
        with self._lock:
            for _ in range(repeats):
                times: list = []
                if self._run(x, times) is _NONFINITE:
                    nonfinite = True
                    break
                samples.append([t for segment in times for t in segment])
        if nonfinite:  # the plan without Winograd runs this input (outside the lock it takes)
            return self._direct_plan().profile(x, repeats)
        checks = len(self._checks) if self.check_weights else 0
        medians = np.median(np.array(samples), axis=0)[checks:]
        labels = []
        for segment in self._segments:
            if isinstance(segment, _Segment):
                labels += segment.labels[x.shape[0]]
            else:
                labels.append(f"{type(segment).__name__} (Python)")
        return list(zip(labels, medians.tolist()))

    def __repr__(self) -> str:
        body = "\n".join(f"  {line}" for line in self.describe())
        return f"Plan(input (N, {', '.join(map(str, self.input_shape))})\n{body}\n)"


def _winograd_choice(allowed: bool) -> str:
    """``"0"`` (no Winograd), ``"2"`` (F(2x2, 3x3) only) or ``""`` (the default), from
    ``allowed`` and ``NUMCNN_WINOGRAD``, read when a plan is compiled; another value of the
    variable is refused."""
    choice = os.environ.get("NUMCNN_WINOGRAD", "")
    if choice not in ("", "0", "1", "2"):
        raise NumcnnError(f"NUMCNN_WINOGRAD must be 0 (off), 1 (F(4x4, 3x3) where it fits, the "
                          f"default) or 2 (F(2x2, 3x3) only), got {choice!r}")
    return "0" if not allowed else "" if choice == "1" else choice


_NONFINITE = object()  # a plan run stopped at a non-finite input to a Winograd table


def _run_error(status: int) -> NumcnnError:
    """The error of a plan run that returned ``status`` (neither 0 nor 1)."""
    if status == 2:
        return NumcnnError("inference plan: out of memory for a kernel's scratch buffers")
    return NumcnnError(f"inference plan: operation table refused ({status})")


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first number: through the buffer protocol (faster than
    ``a.ctypes.data``), or ``ctypes.data`` for a read-only array."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _strides(x: np.ndarray) -> np.ndarray:
    """``(n, c, h, w)`` strides of ``x`` in floats (a vector ``(n, f)`` as ``(n, f, 1, 1)``)."""
    size = x.itemsize
    if x.ndim == 2:
        return np.array([x.strides[0] // size, x.strides[1] // size, 0, 0], np.int64)
    return np.array([s // size for s in x.strides], np.int64)


def compile(model, input_shape, *, check_weights: bool = True,  # noqa: A001
            winograd: bool = True) -> Plan:
    """Compile ``model`` (in eval mode) for inputs of shape ``(N, *input_shape)``: a
    :class:`Plan`, called like the model. See :class:`Plan` for the arguments and the module
    docstring for what it does."""
    return Plan(model, input_shape, check_weights, winograd)
