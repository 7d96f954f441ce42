"""Which implementation runs for which shapes: every choice between the NumPy reference and the
compiled kernels is made here, once, in the forward pass.

Each functional op asks the function of its name below, records the answer in its cache under
the one key ``"impl"``, and its backward pass branches on that key alone. The answers:

    NUMPY               the reference code of numcnn.functional (im2col + BLAS + col2im, ...)
    KERNELS             the compiled kernels, forward and backward
    KERNELS_STRIDED     convolution with a stride along the width (any dilation): the kernels
                        reading the input directly, vectorised along the batch
                        (strided_direct), or on the polyphase split of the input
                        (backend.kernels.width_phases; a dilated kernel written out dense,
                        or phase 0 alone when the stride divides the dilation); the weight
                        gradient read directly too (strided_direct_weight_grad) or on the
                        phases; forward and backward
    KERNELS_GROUPED     convolution with groups (several input channels per group): the
                        register-blocked kernels with the group count (each group's
                        channels one block of CHWN memory), a stride along the width as
                        KERNELS_STRIDED; forward and backward
    KERNELS_DEPTHWISE   convolution with one input channel per group (depthwise, any channel
                        multiplier): the kernels for few channels per group, a task per
                        channel, vectorised along the row; a stride along the width read
                        directly, vectorised along the batch, when the batch fills a vector
                        (depthwise_direct_stride), else the width phases; forward and
                        backward
    KERNELS_SHORT_ROWS  convolution: the forward by a kernel for short rows (a single image),
                        the backward by NumPy
    KERNELS_EVAL        batch norm outside training: the forward by the kernel, the backward
                        (a per-channel scale) by NumPy
    NUMPY_BLOCKS        max pooling over non-overlapping blocks, in NumPy
    NUMPY_WINDOWS       max pooling over any windows, in NumPy

What the kernels take (float32 everywhere; the thresholds were measured, see docs/benchmark.md):
a convolution with one group whose output rows hold at least ``MIN_ROW`` numbers (``ow * n``),
forward and backward, any stride, padding and dilation; shorter rows (a single image), the
forward kernel for short rows; with groups, every shape, forward and backward, single images
included (the kernels on the group's rows measured faster than im2col: batch 1, 4 groups of 16
channels, 3x3 on 16x16, 0.05 against 0.12 ms forward, one core), KERNELS_DEPTHWISE for one input
channel per group (the depthwise kernel measured 2x the register-blocked one there, whose blocks
of output channels it leaves empty) and KERNELS_GROUPED for more (groups of 4 channels: the two
within 30% of each other either way; a per-group loop of single-group calls measured no faster,
and slower for many groups); element-wise passes over at least ``MIN_ELEMENTWISE`` numbers laid
out NCHW or CHWN (below that NumPy's single pass costs less than a call through ctypes); batch
norm on CHWN maps (each channel one block); max pooling over non-overlapping blocks of at most
255 positions, CHWN, at least ``MIN_POOL_BATCH`` samples.
"""

from __future__ import annotations

import numpy as np

from ._lib import VECTOR_FLOATS
from .layout import is_chwn, memory_run
from .switch import enabled

NUMPY = "numpy"
KERNELS = "kernels"
KERNELS_STRIDED = "kernels-strided"
KERNELS_SHORT_ROWS = "kernels-short-rows"
KERNELS_GROUPED = "kernels-grouped"
KERNELS_DEPTHWISE = "kernels-depthwise"
KERNELS_EVAL = "kernels-eval"
NUMPY_BLOCKS = "numpy-blocks"
NUMPY_WINDOWS = "numpy-windows"

# Output rows shorter than this many numbers (ow * n) go to the forward kernel for short rows:
# the main kernels vectorise along the row, and a batch-1 image row (28 numbers) would leave
# most of a vector empty.
MIN_ROW = 64
# Below this many numbers NumPy's single pass costs less than a call into the kernels (~5 us).
MIN_ELEMENTWISE = 1 << 15
# Max pooling vectorises along the batch: smaller batches (a single image) stay on NumPy.
MIN_POOL_BATCH = 16


def conv2d(rows_p: np.ndarray, weight: np.ndarray, groups: int, stride, out_hw,
           dilation=(1, 1)) -> str:
    """The convolution of the padded CHWN input ``rows_p (c, hp, wp, n)`` with ``weight``:
    KERNELS, KERNELS_STRIDED, KERNELS_SHORT_ROWS, KERNELS_GROUPED, KERNELS_DEPTHWISE or NUMPY.
    Groups: KERNELS_DEPTHWISE for one input channel per group, else KERNELS_GROUPED. One
    group, rows of at least ``MIN_ROW`` numbers with stride 1 along the width: KERNELS; with a
    stride along the width (any dilation): KERNELS_STRIDED."""
    if not (enabled() and rows_p.dtype == np.float32 and weight.dtype == np.float32):
        return NUMPY
    if groups > 1:
        return KERNELS_DEPTHWISE if weight.shape[1] == 1 else KERNELS_GROUPED
    if out_hw[1] * rows_p.shape[3] >= MIN_ROW:
        return KERNELS if stride[1] == 1 else KERNELS_STRIDED
    return KERNELS_SHORT_ROWS


def depthwise_direct_stride(n: int) -> bool:
    """Whether a depthwise convolution (KERNELS_DEPTHWISE) with a stride along the width reads
    its input directly, vectorised along the batch (``kernels.conv_forward_depthwise_strided``:
    a batch of at least a vector, ``VECTOR_FLOATS`` numbers), rather than through the width
    phases (a copy of the input that costs more than the convolution: 3x3 stride 2, 64
    channels, 32x32, batch 64, one AMD EPYC core: phases 1.35 ms + 0.90 ms, direct ~1 ms)."""
    return n >= VECTOR_FLOATS > 0


def strided_direct(n: int, kw: int, sw: int, dw: int) -> bool:
    """Whether a convolution on the register-blocked kernels (KERNELS_STRIDED,
    KERNELS_GROUPED) with a stride ``sw`` along the width reads its input directly, vectorised
    along the batch (``kernels.conv_forward_strided_direct``), rather than through the width
    phases: with a batch of at least a vector, when the taps fall on more than one phase (the
    copy of the phases then costs more than the direct read's broken runs: 3x3 stride 2, one
    AMD EPYC core, 1.4-1.8x faster at batch 16-128 with AVX-512 and AVX2). A 1x1 kernel, or a
    stride that divides the dilation, reads phase 0 alone, which stays faster (0.48 against
    0.64 ms, 1x1 stride 2 64->128 at 16x16, batch 64)."""
    return n >= VECTOR_FLOATS > 0 and kw > 1 and dw % sw != 0


def strided_direct_weight_grad(n: int) -> bool:
    """Whether the weight gradient of a convolution whose forward pass read a strided width
    directly (:func:`strided_direct`) reads it directly too
    (``kernels.conv_weight_grad_strided_direct``), rather than on the width phases made for
    it: with a batch of at least 64, a whole number of vectors (each output column's batch is
    a run; 3x3 stride 2, one AMD EPYC core, 1.2-1.5x faster at batch 64-128, slower at 16-20,
    whose runs are one or two vectors, with AVX-512 and AVX2 alike)."""
    return n >= 64 and VECTOR_FLOATS > 0 and n % VECTOR_FLOATS == 0


def to_chwn(x: np.ndarray, dtype=None) -> str:
    """Bringing an NCHW batch into the CHWN layout (a transposing copy, with padding): KERNELS
    for a C-contiguous float32 batch of several channels and at least ``MIN_ELEMENTWISE``
    numbers kept in float32 (colour images at a model's input: 4x faster for 3x32x32 at batch
    128), else NUMPY (``layout.to_chwn``, which also takes inputs
    already CHWN without a copy)."""
    if (x.size >= MIN_ELEMENTWISE and x.ndim == 4 and x.shape[0] > 1 and x.shape[1] > 1
            and x.dtype == np.float32 and (dtype is None or dtype == np.float32)
            and x.flags.c_contiguous and enabled()):  # one channel: NumPy's copy is as fast
        return KERNELS
    return NUMPY


def elementwise(*arrays: np.ndarray) -> str:
    """An element-wise pass (ReLU) over ``arrays``: KERNELS if all are float32, dense, laid out
    alike (NCHW or CHWN) and large enough, else NUMPY."""
    first = arrays[0]
    if (enabled() and first.size >= MIN_ELEMENTWISE
            and all(a.dtype == np.float32 and a.strides == first.strides for a in arrays)
            and (first.flags.c_contiguous or is_chwn(first))
            and memory_run(first) is not None):
        return KERNELS
    return NUMPY


def batch_norm(x3: np.ndarray, training: bool) -> str:
    """Batch norm of the ``(outer, c, ...)`` channel view ``x3``: the kernels take a float32
    ``(1, c, ...)`` view (each channel one block of memory: CHWN), of at least
    ``MIN_ELEMENTWISE`` numbers in training (outside training any size: one call costs less than
    NumPy's dozen small operations on a single image). KERNELS, KERNELS_EVAL or NUMPY."""
    if not (enabled() and x3.dtype == np.float32 and x3.shape[0] == 1
            and x3.flags.c_contiguous):
        return NUMPY
    if not training:
        return KERNELS_EVAL
    return KERNELS if x3.size >= MIN_ELEMENTWISE else NUMPY


def max_pool(x: np.ndarray, kernel, blocks: bool, split_ties: bool,
             return_indices: bool) -> str:
    """Max pooling of ``x (n, c, h, w)``: KERNELS, NUMPY_BLOCKS (non-overlapping blocks) or
    NUMPY_WINDOWS (any windows). The kernel keeps winners in a form of its own, so it serves
    neither ``return_indices`` nor ``split_ties``."""
    if not blocks:
        return NUMPY_WINDOWS
    if (enabled() and not split_ties and not return_indices and x.dtype == np.float32
            and x.ndim == 4 and kernel[0] * kernel[1] <= 255 and x.shape[0] >= MIN_POOL_BATCH
            and x.size >= MIN_ELEMENTWISE and x.transpose(1, 2, 3, 0).flags.c_contiguous):
        return KERNELS
    return NUMPY_BLOCKS
