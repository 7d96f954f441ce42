"""The ctypes bindings of numcnn's compiled kernels (``numcnn/backend/_kernels.c``).

The NumPy code of :mod:`numcnn.functional` (for convolutions im2col, one matrix product, col2im)
is the reference and runs everywhere. Where the C extension was built at
install time (a C compiler was there; see ``setup.py``), float32 convolutions are computed by it
instead: directly on the batch-last layout, summing over ``(ci, i, j)`` with the
accumulators in registers, and without a column matrix in memory. The sums are the same (the
tests compare the two paths with each other and with PyTorch); only the order of the additions
differs, as between any two BLAS libraries.

What runs where (stride 1 along the width, rows of at least ``policy.MIN_ROW`` numbers)::

    forward        y = correlate(xp, w) + b                  numcnn_conv_forward_f32
    weight grad    dL/dw = correlate(xp, g)                  numcnn_conv_weight_grad_f32
    input grad     dL/dx = correlate(pad(g), rot180(w).T)    the forward kernel again
                   (stride 1; with a stride, one such gradient per phase of the input,
                   conv_input_grad_strided; strided and dilated: NumPy's col2im)

A stride along the width: the input read directly, vectorised along the batch
(``conv_forward_strided_direct``), or the same kernels on the polyphase split of the input
(``width_phases``; see there; a dilated kernel written out dense, ``dilated_weight``); the
weight gradient likewise (``conv_weight_grad_strided_direct``, or on the phases). Shorter
rows (a single image): the forward pass by ``numcnn_conv_forward_small_f32``, which vectorises
over the output channels, and the backward pass by NumPy.

Groups. In the batch-last layout each group's input channels, weights and output channels are
contiguous blocks, so the kernels take the group count (``groups``): the register blocks of
output channels are cut within each group, each reading its group's input channels. One input
channel per group (depthwise) leaves those blocks empty, and has kernels of its own
(``depthwise=True``): a task per channel, vectorised along the row
(``numcnn_conv_depthwise_f32`` and its weight gradient); with a stride along the width read
directly, vectorised along the batch (``conv_forward_depthwise_strided``), and the input
gradient gathered pixel by pixel for any stride (``conv_input_grad_depthwise``). The input
gradient of a grouped convolution is a grouped convolution again (``mirrored_weight``).

The element-wise layers that sit between the convolutions have kernels too, each one pass over
memory split over the cores (NumPy makes a pass per operation, on one core): ReLU and its
backward; batch norm in training (batch statistics, normalisation, and the compact backward)
and outside training (the running statistics), when each channel is one block of memory (the
batch-last layout); max pooling over non-overlapping blocks in the batch-last layout. The same
formulas as the NumPy code beside them. Small arrays (a single image) stay on NumPy, whose pass
costs less than a call through ctypes; batch norm outside training, a dozen small NumPy
operations, takes its kernel at any size.

When each runs is decided in :mod:`numcnn.backend.policy`; which build of the C file is
loaded (baseline, AVX2, AVX-512) in :mod:`numcnn.backend._lib`; the switch
(``use_kernels``) in :mod:`numcnn.backend.switch`; the BLAS-thread rule in
:mod:`numcnn.backend.blas`. The functions here only call the C code: they take arrays the
policy has accepted, in the layouts they name, and return new arrays.

Threads: the kernels split their work over every core with OpenMP (``OMP_NUM_THREADS`` caps
them). A process forked from one whose kernels have run runs its kernels on one thread: it has
none of its parent's OpenMP threads, and GNU OpenMP would wait for them forever.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ._lib import LIB as _LIB
from ._lib import VECTOR_FLOATS
from .layout import memory_run, zero_border

__all__ = ["conv_forward", "conv_forward_short_rows", "conv_forward_flat", "conv_forward_small",
           "conv_weight_grad", "conv_weight_grad_flat", "conv_input_grad",
           "conv_forward_depthwise_strided", "conv_forward_strided_direct",
           "conv_weight_grad_strided_direct", "conv_weight_grad_depthwise_strided",
           "conv_input_grad_depthwise", "mirrored_weight", "dilated_weight", "width_phases",
           "phase_weight", "phase_weight_grad", "conv_input_grad_strided", "relu",
           "relu_backward", "add",
           "to_chwn", "batch_norm_train", "batch_norm_train_backward", "batch_norm_eval", "max_pool_blocks",
           "max_pool_blocks_backward"]


def _ptr(a: np.ndarray | None):
    """The address of ``a``'s first number (``a`` contiguous), or None.

    Through the buffer protocol (~0.6 us) rather than ``a.ctypes.data`` (~2 us): a kernel call
    on a single image passes half a dozen arrays, and this was a third of its cost. Read-only or
    empty arrays take ``a.ctypes.data``.
    """
    if a is None:
        return None
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _check(status: int, what: str) -> None:
    if status != 0:
        raise MemoryError(f"numcnn kernels: out of memory in the {what}")


def _forward_operands(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None):
    """What a forward kernel is handed: the input, weight and bias as contiguous float32 arrays."""
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    return np.ascontiguousarray(rows_p), np.ascontiguousarray(weight), bias


def _main_forward(rows_p, weight, bias, out, rows: int, length: int, sh: int, dilation,
                  groups: int = 1, depthwise: bool = False) -> None:
    """``numcnn_conv_forward_grouped_f32`` (or, with ``depthwise``,
    ``numcnn_conv_depthwise_f32``) into ``out`` (``(oc, rows, length)`` memory): ``rows`` output
    rows of ``length`` numbers, the input rows ``sh`` apart; output channel ``o`` reads the
    input channels of its group, ``g*cg ... (g+1)*cg - 1`` with ``g = o // (oc/groups)``."""
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight.shape
    dh, dw = dilation
    if depthwise:
        _LIB.numcnn_conv_depthwise_f32(_ptr(rows_p), cg, hp * wp * n, wp * n, _ptr(weight), oc,
                                       oc // groups, kh, kw, _ptr(bias), _ptr(out), rows, length,
                                       sh, dh, dw * n)
        return
    _check(_LIB.numcnn_conv_forward_grouped_f32(_ptr(rows_p), cg, hp * wp * n, wp * n,
                                                _ptr(weight), oc, groups, kh, kw, _ptr(bias),
                                                _ptr(out), rows, length, sh, dh, dw * n, 0),
           "forward")


def conv_forward(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride,
                 dilation, out_hw, groups: int = 1, depthwise: bool = False) -> np.ndarray:
    """``out[o,p,q,s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * xp[g*cg + ci, p*sh + i*dh, q + j*dw, s]``
    with ``g = o // (oc/groups)`` (stride 1 along the width).

    ``rows_p (c, hp, wp, n)`` padded input, C-contiguous; ``weight (oc, cg, kh, kw)``; returns
    ``(oc, oh, ow, n)``. ``depthwise``: the kernel for few channels per group
    (``numcnn_conv_depthwise_f32``), else the register-blocked one.
    """
    rows_p, weight, bias = _forward_operands(rows_p, weight, bias)
    (oh, ow), n = out_hw, rows_p.shape[3]
    out = np.empty((weight.shape[0], oh, ow, n), np.float32)
    _main_forward(rows_p, weight, bias, out, oh, ow * n, stride[0], dilation, groups, depthwise)
    return out


def conv_forward_flat(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      dilation, out_hw, groups: int = 1, depthwise: bool = False) -> np.ndarray:
    """:func:`conv_forward` for a stride-1 convolution whose rows are short (a single image),
    computed as one long row: ``(oc, oh, ow, n)``.

    On the padded grid every output ``(p, q, s)`` with ``q < wp`` sits at ``l = (p*wp + q)*n + s``
    and reads ``xp`` at ``l + (i*dh*wp + j*dw)*n``: the image's rows laid end to end are one row
    of the main kernel, whose outputs at ``q >= ow`` (``(kw-1)*dw`` a row) are computed and
    dropped. The last valid output ends the row, so that no read passes the input's end.
    """
    rows_p, weight, bias = _forward_operands(rows_p, weight, bias)
    _, _, wp, n = rows_p.shape
    oc, (oh, ow) = weight.shape[0], out_hw
    length = ((oh - 1) * wp + ow) * n
    flat = np.empty((oc, length), np.float32)
    _main_forward(rows_p, weight, bias, flat, 1, length, 1, dilation, groups, depthwise)
    size = flat.itemsize
    grid = np.ndarray((oc, oh, ow, n), np.float32, buffer=flat,  # the valid outputs
                      strides=(length * size, wp * n * size, n * size, size))
    return np.ascontiguousarray(grid)


def conv_forward_small(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                       stride, dilation, out_hw) -> np.ndarray:
    """:func:`conv_forward` for rows too short to vectorise along (a single image), and any
    stride: vectorised over the output channels instead. ``(oc, oh, ow, n)``."""
    rows_p, weight, bias = _forward_operands(rows_p, weight, bias)
    c, hp, wp, n = rows_p.shape
    oc, _, kh, kw = weight.shape
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    out = np.empty((oc, oh, ow, n), np.float32)
    _check(_LIB.numcnn_conv_forward_small_f32(_ptr(rows_p), c, hp, wp, n, _ptr(weight), oc, kh,
                                              kw, _ptr(bias), _ptr(out), oh, ow, sh, sw, dh, dw),
           "forward")
    return out


def conv_forward_short_rows(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                            stride, dilation, out_hw) -> np.ndarray:
    """The forward pass of a convolution whose rows are short (a single image), by the kernel
    that suits it: vectorised over the output channels (:func:`conv_forward_small`) when they
    fill its register block (``2 * VECTOR_FLOATS``, 32 with AVX-512) or the stride is not 1
    along either axis; else the image's rows laid end to end (:func:`conv_forward_flat`)."""
    if tuple(stride) == (1, 1) and weight.shape[0] < 2 * VECTOR_FLOATS:
        return conv_forward_flat(rows_p, weight, bias, dilation, out_hw)
    return conv_forward_small(rows_p, weight, bias, stride, dilation, out_hw)


def conv_forward_depthwise_strided(rows_p: np.ndarray, weight: np.ndarray,
                                   bias: np.ndarray | None, stride, dilation, out_hw,
                                   groups: int) -> np.ndarray:
    """:func:`conv_forward` of a depthwise convolution (few channels per group) with a stride
    along the width, read directly, vectorised along the batch (``n >= VECTOR_FLOATS``)::

        out[o, p, q, s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * xp[g*cg + ci, p*sh + i*dh,
                                                               q*sw + j*dw, s]
    """
    rows_p, weight, bias = _forward_operands(rows_p, weight, bias)
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight.shape
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    out = np.empty((oc, oh, ow, n), np.float32)
    _LIB.numcnn_conv_depthwise_strided_f32(_ptr(rows_p), cg, hp * wp * n, wp * n, _ptr(weight),
                                           oc, oc // groups, kh, kw, _ptr(bias), _ptr(out), oh,
                                           ow, n, sh, dh, sw * n, dw * n)
    return out


def conv_forward_strided_direct(rows_p: np.ndarray, weight: np.ndarray,
                                bias: np.ndarray | None, stride, dilation, out_hw,
                                groups: int = 1) -> np.ndarray:
    """:func:`conv_forward` with a stride along the width read directly by the register-blocked
    kernel, vectorised along the batch (``n >= VECTOR_FLOATS``), no width phases::

        out[o, p, q, s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * xp[g*cg + ci, p*sh + i*dh,
                                                               q*sw + j*dw, s]
    """
    rows_p, weight, bias = _forward_operands(rows_p, weight, bias)
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight.shape
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    out = np.empty((oc, oh, ow, n), np.float32)
    _check(_LIB.numcnn_conv_forward_grouped_strided_f32(_ptr(rows_p), cg, hp * wp * n, wp * n,
                                                        _ptr(weight), oc, groups, kh, kw,
                                                        _ptr(bias), _ptr(out), oh, ow, n, sh,
                                                        dh, sw * n, dw * n), "forward")
    return out


def conv_weight_grad_strided_direct(grad_rows: np.ndarray, rows_p: np.ndarray, weight_shape,
                                    stride, dilation, groups: int = 1) -> np.ndarray:
    """The weight gradient of :func:`conv_forward_strided_direct`, read directly as well:
    ``(oc, cg, kh, kw)``."""
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight_shape
    _, oh, ow, _ = grad_rows.shape
    (sh, sw), (dh, dw) = stride, dilation
    grad_rows = np.ascontiguousarray(grad_rows, np.float32)
    rows_p = np.ascontiguousarray(rows_p)
    grad_w = np.empty(weight_shape, np.float32)
    _check(_LIB.numcnn_conv_weight_grad_grouped_strided_f32(
        _ptr(grad_rows), _ptr(rows_p), cg, hp * wp * n, wp * n, oc, groups, kh, kw,
        _ptr(grad_w), oh, ow, n, sh, dh, sw * n, dw * n), "weight gradient")
    return grad_w


def conv_weight_grad_depthwise_strided(grad_rows: np.ndarray, rows_p: np.ndarray, weight_shape,
                                       stride, dilation, groups: int) -> np.ndarray:
    """The weight gradient of :func:`conv_forward_depthwise_strided`: ``(oc, cg, kh, kw)``."""
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight_shape
    _, oh, ow, _ = grad_rows.shape
    (sh, sw), (dh, dw) = stride, dilation
    grad_rows = np.ascontiguousarray(grad_rows, np.float32)
    rows_p = np.ascontiguousarray(rows_p)
    grad_w = np.empty(weight_shape, np.float32)
    _LIB.numcnn_conv_depthwise_strided_weight_grad_f32(
        _ptr(grad_rows), _ptr(rows_p), cg, hp * wp * n, wp * n, oc, oc // groups, kh, kw,
        _ptr(grad_w), oh, ow, n, sh, dh, sw * n, dw * n)
    return grad_w


def conv_input_grad_depthwise(grad_rows: np.ndarray, weight: np.ndarray, stride, dilation,
                              pads, in_hw, groups: int) -> np.ndarray:
    """The input gradient of a depthwise convolution (few channels per group), any stride and
    dilation, gathered pixel by pixel and vectorised along the batch (``n >= VECTOR_FLOATS``):
    ``(oc, oh, ow, n) -> (c, h, w, n)``, cropped to the unpadded input::

        dL/dx[g*cg + ci, h, w] = sum_{o' < oc/groups, i, j} w[g*oc/groups + o', ci, i, j]
                                     * g[g*oc/groups + o', p, q]
            over the taps with p*sh + i*dh = h + top, q*sw + j*dw = w + left
    """
    oc, cg, kh, kw = weight.shape
    _, oh, ow, n = grad_rows.shape
    (sh, sw), (dh, dw), ((top, _), (left, _)), (h, w) = stride, dilation, pads, in_hw
    grad_rows = np.ascontiguousarray(grad_rows, np.float32)
    weight = np.ascontiguousarray(weight, np.float32)
    c = groups * cg
    grad_x = np.empty((c, h, w, n), np.float32)
    _check(_LIB.numcnn_conv_depthwise_input_grad_f32(_ptr(grad_rows), _ptr(weight), oc,
                                                     oc // groups, cg, kh, kw, _ptr(grad_x), c,
                                                     h, w, n, oh, ow, sh, sw, dh, dw, top, left),
           "input gradient")
    return grad_x


def conv_weight_grad(grad_rows: np.ndarray, rows_p: np.ndarray, weight_shape, stride,
                     dilation, groups: int = 1, depthwise: bool = False) -> np.ndarray:
    """``dL/dw[o,ci,i,j] = sum_{p,q,s} g[o,p,q,s] * xp[g*cg + ci, p*sh + i*dh, q + j*dw, s]``
    with ``g = o // (oc/groups)`` (stride 1 along the width).

    ``grad_rows (oc, oh, ow, n)`` and ``rows_p (c, hp, wp, n)``; returns ``(oc, cg, kh, kw)``.
    ``depthwise``: the kernel for few channels per group.
    """
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight_shape
    _, oh, ow, _ = grad_rows.shape
    (sh, _), (dh, dw) = stride, dilation
    grad_rows = np.ascontiguousarray(grad_rows, np.float32)
    rows_p = np.ascontiguousarray(rows_p)
    grad_w = np.empty(weight_shape, np.float32)
    if depthwise:
        _LIB.numcnn_conv_depthwise_weight_grad_f32(_ptr(grad_rows), _ptr(rows_p), cg,
                                                   hp * wp * n, wp * n, oc, oc // groups, kh, kw,
                                                   _ptr(grad_w), oh, ow * n, sh, dh, dw * n)
        return grad_w
    _check(_LIB.numcnn_conv_weight_grad_grouped_f32(_ptr(grad_rows), _ptr(rows_p), cg,
                                                    hp * wp * n, wp * n, oc, groups, kh, kw,
                                                    _ptr(grad_w), oh, ow * n, sh, dh, dw * n, 0),
           "weight gradient")
    return grad_w


def conv_weight_grad_flat(grad_rows: np.ndarray, rows_p: np.ndarray, weight_shape, dilation,
                          groups: int = 1, depthwise: bool = False) -> np.ndarray:
    """:func:`conv_weight_grad` of a stride-1 convolution whose rows are short (a single
    image), as one long row on the padded grid (see :func:`conv_forward_flat`): the gradient
    placed at ``l = (p*wp + q)*n + s`` with zeros at the columns ``q >= ow``, so that
    ``dL/dw[o,ci,i,j] = sum_l gflat[o, l] * xp[g*cg + ci, l + (i*dh*wp + j*dw)*n]``."""
    _, hp, wp, n = rows_p.shape
    oc, cg, kh, kw = weight_shape
    _, oh, ow, _ = grad_rows.shape
    dh, dw = dilation
    length = ((oh - 1) * wp + ow) * n
    flat = np.zeros((oc, length), np.float32)
    size = flat.itemsize
    grid = np.ndarray((oc, oh, ow, n), np.float32, buffer=flat,
                      strides=(length * size, wp * n * size, n * size, size))
    grid[...] = grad_rows
    rows_p = np.ascontiguousarray(rows_p)
    grad_w = np.empty(weight_shape, np.float32)
    if depthwise:
        _LIB.numcnn_conv_depthwise_weight_grad_f32(_ptr(flat), _ptr(rows_p), cg, hp * wp * n,
                                                   wp * n, oc, oc // groups, kh, kw,
                                                   _ptr(grad_w), 1, length, 1, dh, dw * n)
        return grad_w
    _check(_LIB.numcnn_conv_weight_grad_grouped_f32(_ptr(flat), _ptr(rows_p), cg, hp * wp * n,
                                                    wp * n, oc, groups, kh, kw, _ptr(grad_w), 1,
                                                    length, 1, dh, dw * n, 0), "weight gradient")
    return grad_w


def conv_input_grad(grad_rows: np.ndarray, weight: np.ndarray, dilation, pads,
                    in_hw, groups: int = 1, depthwise: bool = False,
                    flat: bool = False) -> np.ndarray:
    """The input gradient of a stride-1 convolution, cropped to the unpadded input:
    ``(oc, oh, ow, n) -> (c, h, w, n)``.

    It is the full correlation of the gradient with the mirrored kernel, channels swapped::

        dL/dx[c, h, w] = sum_{o,i,j} w[o, c, kh-1-i, kw-1-j] * gp[o, h + i*dh, w + j*dw]

    where ``gp`` is ``g`` shifted by ``(kh-1)*dh - top`` rows and ``(kw-1)*dw - left`` columns
    in a zero frame ``(h + (kh-1)*dh, w + (kw-1)*dw)`` (the rows and columns it leaves out only
    ever met padding). With groups the sum runs over the output channels ``o`` of the input
    channel's group: a grouped convolution again, ``oc/groups`` input channels per group and
    ``cg`` output channels (:func:`mirrored_weight`). ``flat``: the forward kernel on the
    frame's rows end to end (:func:`conv_forward_flat`, for short rows).
    """
    oc, _, kh, kw = weight.shape
    _, oh, ow, n = grad_rows.shape
    (dh, dw), ((top, _), (left, _)), (h, w) = dilation, pads, in_hw
    frame_h, frame_w = h + (kh - 1) * dh, w + (kw - 1) * dw
    shift_h, shift_w = (kh - 1) * dh - top, (kw - 1) * dw - left
    # rows r of grad land at r + shift_h; keep those inside the frame
    r0, r1 = max(0, -shift_h), min(oh, frame_h - shift_h)
    q0, q1 = max(0, -shift_w), min(ow, frame_w - shift_w)
    if r1 > r0 and q1 > q0:
        grad_p = np.empty((oc, frame_h, frame_w, n), np.float32)
        grad_p[:, r0 + shift_h:r1 + shift_h, q0 + shift_w:q1 + shift_w] = \
            grad_rows[:, r0:r1, q0:q1]
        zero_border(grad_p, ((r0 + shift_h, frame_h - r1 - shift_h),
                             (q0 + shift_w, frame_w - q1 - shift_w)))
    else:
        grad_p = np.zeros((oc, frame_h, frame_w, n), np.float32)
    if flat:
        return conv_forward_flat(grad_p, mirrored_weight(weight, groups), None, dilation,
                                 (h, w), groups, depthwise)
    return conv_forward(grad_p, mirrored_weight(weight, groups), None, (1, 1), dilation, (h, w),
                        groups, depthwise)


def mirrored_weight(weight: np.ndarray, groups: int = 1) -> np.ndarray:
    """The kernel of the input gradient: each group's weight rotated by 180 degrees with its
    input and output channels swapped, ``(oc, cg, kh, kw) -> (c, oc/groups, kh, kw)``::

        m[g*cg + ci, o', i, j] = w[g*(oc/groups) + o', ci, kh-1-i, kw-1-j]
    """
    oc, cg, kh, kw = weight.shape
    per_group = weight.reshape(groups, oc // groups, cg, kh, kw)[..., ::-1, ::-1]
    return np.ascontiguousarray(per_group.transpose(0, 2, 1, 3, 4)).reshape(
        groups * cg, oc // groups, kh, kw)


def dilated_weight(weight: np.ndarray, dilation) -> np.ndarray:
    """The dilated kernel written out dense, zeros between the taps: ``(oc, cg, kh, kw) ->
    (oc, cg, (kh-1)*dh + 1, (kw-1)*dw + 1)``. A convolution with it (dilation 1) is the dilated
    convolution; the stride decompositions below take it where they need dilation 1."""
    dh, dw = dilation
    if dh == dw == 1:
        return weight
    oc, cg, kh, kw = weight.shape
    dense = np.zeros((oc, cg, (kh - 1) * dh + 1, (kw - 1) * dw + 1), np.float32)
    dense[:, :, ::dh, ::dw] = weight
    return dense


# -- strides along the width: the polyphase decomposition -----------------------------------------
# The main kernels read, for each kernel tap, one contiguous run of a row, which a stride along
# the width breaks. Split the padded input's columns by their remainder modulo the stride (the
# polyphase decomposition): column b*sw + r of phase r is column b of a map of its own, and
#
#     y[o, p, q] = sum_{ci, i, j} w[o, ci, i, j] * xp[ci, p*sh + i, q*sw + j]
#                = sum_{ci, r, i, j'} w[o, ci, i, j'*sw + r] * xph[(ci, r), p*sh + i, q + j']
#
# with xph[(ci, r), a, b] = xp[ci, a, b*sw + r]: a convolution with stride 1 along the width, of
# c * min(sw, kw) input channels and a kernel ceil(kw/sw) wide (taps j'*sw + r >= kw are zeros),
# which the main kernels compute. Only the phases some tap falls on are kept (a 1x1 kernel with
# stride 2 reads one phase in two). The stride along the height the kernels take as it is.

def width_phases(rows_p: np.ndarray, sw: int, kw: int) -> np.ndarray:
    """``(c, hp, wp, n) -> (c * P, hp, ceil(wp / sw), n)``, ``P = min(sw, kw)``:
    ``xph[(ci, r), a, b] = xp[ci, a, b*sw + r]``, zeros past the right edge."""
    c, hp, wp, n = rows_p.shape
    phases, wq = min(sw, kw), -(-wp // sw)
    xph = np.empty((c, phases, hp, wq, n), np.float32)
    for r in range(phases):
        width = len(range(r, wp, sw))
        xph[:, r, :, :width] = rows_p[:, :, r::sw]
        xph[:, r, :, width:] = 0.0
    return xph.reshape(c * phases, hp, wq, n)


def phase_weight(weight: np.ndarray, sw: int) -> np.ndarray:
    """``(oc, c, kh, kw) -> (oc, c * P, kh, ceil(kw / sw))``, the kernel of :func:`width_phases`'
    input: ``wph[o, (ci, r), i, j'] = w[o, ci, i, j'*sw + r]``, zero where ``j'*sw + r >= kw``."""
    oc, c, kh, kw = weight.shape
    phases, kq = min(sw, kw), -(-kw // sw)
    padded = np.zeros((oc, c, kh, kq * sw), np.float32)
    padded[..., :kw] = weight
    wph = padded.reshape(oc, c, kh, kq, sw)[..., :phases].transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(wph).reshape(oc, c * phases, kh, kq)


def phase_weight_grad(grad_wph: np.ndarray, weight_shape, sw: int) -> np.ndarray:
    """The weight gradient of the phase convolution back on the original taps (the adjoint of
    :func:`phase_weight`): ``(oc, c * P, kh, kq) -> (oc, c, kh, kw)``."""
    oc, c, kh, kw = weight_shape
    phases, kq = min(sw, kw), -(-kw // sw)
    full = np.zeros((oc, c, kh, kq, sw), np.float32)
    full[..., :phases] = grad_wph.reshape(oc, c, phases, kh, kq).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(full.reshape(oc, c, kh, kq * sw)[..., :kw])


def conv_input_grad_strided(grad_rows: np.ndarray, weight: np.ndarray, stride,
                            padded_shape, groups: int = 1, depthwise: bool = False) -> np.ndarray:
    """The input gradient of a strided convolution (dilation 1) on its padded input:
    ``(oc, oh, ow, n) -> padded_shape (c, hp, wp, n)`` (the caller crops the padding off).

    Pixel ``(sh*a + ph, sw*b + pw)`` of the padded input only meets the taps
    ``(ph + sh*i', pw + sw*j')``, so each phase ``(ph, pw)`` of the gradient is the input gradient
    of a stride-1 convolution with the sub-kernel ``w[:, :, ph::sh, pw::sw]``::

        dL/dxp[c, sh*a + ph, sw*b + pw] = sum_{o,i',j'} w[o, c, ph + sh*i', pw + sw*j']
                                                         * g[o, a - i', b - j']

    computed by :func:`conv_input_grad` (the forward kernel on the mirrored sub-kernel); phases
    no tap falls on (a stride larger than the kernel) get no gradient. A dilated kernel comes
    in written out dense (:func:`dilated_weight`).
    """
    sh, sw = stride
    c, hp, wp, n = padded_shape
    kh, kw = weight.shape[2:]
    grad_p = np.zeros((c, hp, wp, n), np.float32)
    for ph in range(min(sh, kh)):
        for pw in range(min(sw, kw)):
            sub = weight[:, :, ph::sh, pw::sw]
            if not sub.any():  # only zeros of a dilated kernel written out dense: no gradient
                continue
            phase_hw = (len(range(ph, hp, sh)), len(range(pw, wp, sw)))
            grad_p[:, ph::sh, pw::sw] = conv_input_grad(grad_rows, sub, (1, 1),
                                                        ((0, 0), (0, 0)), phase_hw, groups,
                                                        depthwise)
    return grad_p


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``max(x, 0)`` into ``out`` (a new array laid out as ``x`` by default; may be ``x``)."""
    out = np.empty_like(x) if out is None else out
    _LIB.numcnn_relu_f32(_ptr(memory_run(x)), _ptr(memory_run(out)), x.size)
    return out


def to_chwn(x: np.ndarray, pads=((0, 0), (0, 0))) -> np.ndarray:
    """:func:`numcnn.backend.layout.to_chwn` for a C-contiguous float32 NCHW batch: the
    zero-padded CHWN copy ``(c, hp, wp, n)``, the transposition blocked for the cache."""
    n, c, h, w = x.shape
    (top, bottom), (left, right) = pads
    hp, wp = h + top + bottom, w + left + right
    rows_p = np.empty((c, hp, wp, n), np.float32)
    _LIB.numcnn_to_chwn_f32(_ptr(x), n, c, h, w, _ptr(rows_p), top, left, hp, wp)
    zero_border(rows_p, pads)
    return rows_p


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` in one pass split over the cores; ``a`` and ``b`` laid out alike, the result
    too."""
    out = np.empty_like(a)
    _LIB.numcnn_add_f32(_ptr(memory_run(a)), _ptr(memory_run(b)), _ptr(memory_run(out)), a.size)
    return out


def relu_backward(y: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """``grad_out * [y > 0]`` in one pass; ``y`` and ``grad_out`` laid out alike."""
    grad = np.empty_like(y)
    _LIB.numcnn_relu_backward_f32(_ptr(memory_run(y)), _ptr(memory_run(grad_out)),
                                  _ptr(memory_run(grad)), y.size)
    return grad


def batch_norm_train(x3: np.ndarray, weight, bias, eps: float):
    """Batch statistics and normalisation of the ``(1, c, ...)`` view ``x3``:
    ``(y3, mean, var)``, ``mean`` and the biased ``var`` in float64, ``(c,)`` each."""
    c = x3.shape[1]
    y3 = np.empty_like(x3)
    mean, var = np.empty(c), np.empty(c)
    weight = None if weight is None else np.ascontiguousarray(weight, np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    _LIB.numcnn_batch_norm_f32(_ptr(x3), c, x3.size // c, _ptr(weight), _ptr(bias), eps,
                               _ptr(y3), _ptr(mean), _ptr(var))
    return y3, mean, var


def batch_norm_eval(x3: np.ndarray, running_mean, running_var, weight, bias,
                    eps: float) -> np.ndarray:
    """Batch norm with the running statistics, of the ``(1, c, ...)`` view ``x3``:
    ``(x - mean) * weight / sqrt(var + eps) + bias`` per channel, in one pass."""
    c = x3.shape[1]
    y3 = np.empty_like(x3)
    vectors = [None if v is None else np.ascontiguousarray(v, np.float32)
               for v in (running_mean, running_var, weight, bias)]
    _LIB.numcnn_batch_norm_eval_f32(_ptr(x3), c, x3.size // c, *map(_ptr, vectors), eps,
                                    _ptr(y3))
    return y3


def batch_norm_train_backward(dy3: np.ndarray, x3: np.ndarray, mean, invstd, weight):
    """The compact backward of batch norm in training: ``(dx3, dweight, dbias)``, the last two
    ``(c,)`` in float64 (``dweight`` = sum(dy * xhat), ``dbias`` = sum(dy))."""
    c = x3.shape[1]
    dy3 = np.ascontiguousarray(dy3, np.float32)
    dx3 = np.empty_like(x3)
    dweight, dbias = np.empty(c), np.empty(c)
    mean = np.ascontiguousarray(mean, np.float64)
    invstd = np.ascontiguousarray(invstd, np.float64)
    weight = None if weight is None else np.ascontiguousarray(weight, np.float32)
    _LIB.numcnn_batch_norm_backward_f32(_ptr(x3), _ptr(dy3), c, x3.size // c, _ptr(mean),
                                        _ptr(invstd), _ptr(weight), _ptr(dx3), _ptr(dweight),
                                        _ptr(dbias))
    return dx3, dweight, dbias


def max_pool_blocks(x: np.ndarray, kernel, out_hw, need_arg: bool = True):
    """Maximum of each non-overlapping ``kh x kw`` block of the batch-last map ``x``:
    ``(y, arg)``, ``y`` the NCHW view of ``(c, oh, ow, n)`` memory and ``arg`` the winner codes
    ``i*kw + j`` (uint8, ``(c, oh, ow, n)``), or None without ``need_arg``."""
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    rows = x.transpose(1, 2, 3, 0)  # (c, h, w, n), C-contiguous
    y = np.empty((c, oh, ow, n), np.float32)
    arg = np.empty((c, oh, ow, n), np.uint8) if need_arg else None
    _LIB.numcnn_max_pool_f32(_ptr(rows), c, h, w, n, kh, kw, _ptr(y), _ptr(arg), oh, ow)
    return y.transpose(3, 0, 1, 2), arg


def max_pool_blocks_backward(grad_out: np.ndarray, arg: np.ndarray, x_shape, kernel):
    """Each block's gradient to its winner; the input gradient, batch last like the input."""
    n, c, h, w = x_shape
    (kh, kw), (_, oh, ow, _) = kernel, arg.shape
    grad_rows = np.ascontiguousarray(grad_out.transpose(1, 2, 3, 0), np.float32)
    grad_x = np.empty((c, h, w, n), np.float32)
    _LIB.numcnn_max_pool_backward_f32(_ptr(grad_rows), _ptr(arg), c, h, w, n, kh, kw,
                                      _ptr(grad_x), oh, ow)
    return grad_x.transpose(3, 0, 1, 2)
