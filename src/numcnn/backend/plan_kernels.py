"""The ctypes side of numcnn's inference plans (``numcnn/backend/_plan.c``).

:mod:`numcnn.inference` turns a model into a table of fused operations, one ``PlanOp`` record
each (the C ``plan_op``: 34 int64 fields, addresses included), and runs the whole table with
one call of ``numcnn_plan_run``. This module holds the record, the operation codes, the weight
packings the two convolution modes read, and the call.

The weight packings (made once, when a plan is compiled):

    rows mode       (blocks, c, kh, kw, FOB): output channels in blocks of ``FOB`` (8 with
                    AVX-512, 4 otherwise), the block innermost, zero-padded
    channels mode   (c, kh, kw, ocp): the output channels innermost, zero-padded to a whole
                    number of vectors (``ocp``)
    Winograd modes  (points, blocks, c, FOB): the 3x3 kernels transformed, U = G g G^T (4x4
                    per pair of channels for F(2x2, 3x3), 6x6 for F(4x4, 3x3)), point by point,
                    output channels in blocks of FOB
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from ..errors import ArgumentError
from ._lib import LIB as _LIB
from ._lib import VECTOR_FLOATS, KernelLoadError

CONV, MAXPOOL, EWISE, COPY, MEAN, CHECK, AVGPOOL, ZERO_FRAME = 1, 2, 3, 4, 5, 6, 7, 8
FROM_INPUT, TO_OUTPUT = 1, 2
ROWS, CHANNELS, COLUMNS, WINOGRAD, WINOGRAD4 = 0, 1, 2, 3, 4
# The activations fused into an operation's output loop: the code in the low 8 bits of the
# record's act field, a float parameter's bits in the high 32 (activation())
NO_ACT, RELU, TANH, LEAKY_RELU, SIGMOID, ELU = 0, 1, 2, 3, 4, 5


def activation(code: int, alpha: float = 0.0) -> int:
    """The act field of an operation: ``code`` and the float32 bits of ``alpha`` above it."""
    bits = int(np.array(alpha, np.float32).view(np.uint32))
    return code | (bits << 32)

_FIELDS = ("kind act mode ends c oc h w n oh ow kh kw sh sw dh dw x xcs xrs xcol xs "
           "y ycs yrs ycol ys r rcs rrs wgt bias ph pw").split()


class PlanOp(ctypes.Structure):
    """One operation of a plan, as ``_plan.c``'s ``plan_op`` (every field an int64)."""

    _fields_ = [(name, ctypes.c_int64) for name in _FIELDS]


def _matches() -> bool:
    """The loaded build lays a plan operation out as :class:`PlanOp` does (a build of another
    version of ``_plan.c`` is not used: plans then run their layers one by one)."""
    return (_LIB is not None and hasattr(_LIB, "numcnn_plan_run")
            and _LIB.numcnn_plan_op_size() == ctypes.sizeof(PlanOp))


def available() -> bool:
    """Whether the compiled plan runner is here (the kernels were built and loaded, from this
    version of ``_plan.c``)."""
    return _MATCHES


def block_channels() -> int:
    """Output channels per register block of the rows mode (``FOB``)."""
    return int(_LIB.numcnn_plan_block_channels())


_MATCHES = _matches()


def set_parallel_mflop(mflop: float) -> None:
    """A plan's operation runs on more than one thread only from this much work (MFLOP; 0:
    always). Default 100: on a machine whose cores are busy, a second thread waits a scheduler
    time slice (~12 ms) for a core, which only larger operations hide (``_plan.c``). The
    environment variable ``NUMCNN_PLAN_PARALLEL_MFLOP`` sets it at import."""
    mflop = float(mflop)
    if not 0 <= mflop < 1e12:
        raise ArgumentError(f"the parallel threshold must be a number of MFLOP >= 0, got "
                            f"{mflop}")
    if available():
        _LIB.numcnn_plan_set_parallel_flops(int(mflop * 1e6))


if available() and os.environ.get("NUMCNN_PLAN_PARALLEL_MFLOP"):
    try:
        set_parallel_mflop(float(os.environ["NUMCNN_PLAN_PARALLEL_MFLOP"]))
    except (ValueError, ArgumentError):
        raise KernelLoadError(f"NUMCNN_PLAN_PARALLEL_MFLOP must be a number of MFLOP >= 0, got "
                              f"{os.environ['NUMCNN_PLAN_PARALLEL_MFLOP']!r}") from None


def pack_rows(weight: np.ndarray) -> np.ndarray:
    """``(oc, c, kh, kw)`` -> ``(blocks, c*kh*kw, FOB)`` float32, zero-padded channels."""
    fob = block_channels()
    oc, taps = weight.shape[0], int(np.prod(weight.shape[1:]))
    blocks = -(-oc // fob)
    padded = np.zeros((blocks * fob, taps), np.float32)
    padded[:oc] = weight.reshape(oc, taps)
    return np.ascontiguousarray(padded.reshape(blocks, fob, taps).transpose(0, 2, 1))


def pack_channels(weight: np.ndarray) -> np.ndarray:
    """``(oc, c, kh, kw)`` -> ``(c*kh*kw, ocp)`` float32, ``ocp`` whole vectors."""
    oc, taps = weight.shape[0], int(np.prod(weight.shape[1:]))
    ocp = -(-oc // VECTOR_FLOATS) * VECTOR_FLOATS
    packed = np.zeros((taps, ocp), np.float32)
    packed[:, :oc] = weight.reshape(oc, taps).T
    return packed


# The kernel transforms G of Winograd's F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, "Fast
# Algorithms for Convolutional Neural Networks", CVPR 2016, sections 4.1 and 4.2)
WINOGRAD_G = {
    2: np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]),
    4: np.array([[1 / 4, 0.0, 0.0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0.0, 0.0, 1.0]]),
}


def pack_winograd(weight: np.ndarray, tile: int = 2) -> np.ndarray:
    """``(oc, c, 3, 3)`` -> ``(points, blocks, c, FOB)`` float32 for F(tile x tile, 3x3):
    ``U = G g G^T`` for every pair of channels (computed in float64), the ``(tile + 2)**2``
    points outermost, zero-padded output channels."""
    fob = block_channels()
    g = WINOGRAD_G[tile]
    points = g.shape[0] ** 2
    oc, c = weight.shape[:2]
    blocks = -(-oc // fob)
    u = np.einsum("ai,ocij,bj->aboc", g, weight.astype(np.float64), g)
    padded = np.zeros((points, blocks * fob, c))
    padded[:, :oc] = u.reshape(points, oc, c)
    return np.ascontiguousarray(
        padded.reshape(points, blocks, fob, c).transpose(0, 1, 3, 2), dtype=np.float32)


def padded_bias(bias: np.ndarray | None, oc: int) -> np.ndarray:
    """The bias (or zeros), padded with zeros to a whole number of blocks and vectors."""
    size = -(-oc // 64) * 64
    out = np.zeros(size, np.float32)
    if bias is not None:
        out[:oc] = bias
    return out


def table(ops: list[dict]) -> ctypes.Array:
    """The ``PlanOp`` array of ``ops`` (each a dict of field values; the rest 0)."""
    array = (PlanOp * len(ops))()
    for record, fields in zip(array, ops):
        for name, value in fields.items():
            setattr(record, name, int(value))
    return array


def runner():
    """``numcnn_plan_run(ops, count, input, input_strides, output, times) -> int``: 0, 1
    when the weights changed since the plan was made (a CHECK operation failed), 2 when a
    kernel's scratch memory could not be had."""
    return _LIB.numcnn_plan_run
