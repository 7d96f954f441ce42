"""The optional compiled convolution kernels (``numcnn/_kernels.c``) and when they are used.

The NumPy code of :mod:`numcnn.functional.conv` (im2col, one matrix product, col2im) is the
reference and runs everywhere. Where the C extension ``numcnn._kernels`` was built at install
time (a C compiler was there; see ``setup.py``), float32 convolutions with stride 1 along the
width and one group are computed by it instead: directly on the batch-last layout, summing over
``(ci, i, j)`` with the accumulators in registers, and without a column matrix in memory. The
sums are the same (the tests compare the two paths with each other and with PyTorch); only the
order of the additions differs, as between any two BLAS libraries.

What runs where::

    forward        y = correlate(xp, w) + b          numcnn_conv_forward_f32
    weight grad    dL/dw = correlate(xp, g)          numcnn_conv_weight_grad_f32
    input grad     dL/dx = correlate(pad(g), rot180(w).T)   the forward kernel again

``NUMCNN_KERNELS=0`` in the environment (read on import) or :func:`use_kernels` (``False``)
keeps numcnn on NumPy alone; :func:`available` tells whether the extension is there.

Threads. The kernels split their work over every core with OpenMP (``OMP_NUM_THREADS`` caps
them). NumPy's BLAS (OpenBLAS) keeps its own threads, which after each call spin on the cores for
a while waiting for the next one; numcnn's kernels starting then find every core busy, and a
``convnet-bn`` training step measured 36 ms instead of 16. So the first time a kernel runs, numcnn
limits the BLAS to one thread (with ``threadpoolctl``): the convolutions, numcnn's heavy work, are
then threaded by numcnn itself. This holds for the whole process, NumPy code outside numcnn
included; ``NUMCNN_BLAS_THREADS=keep`` in the environment leaves the BLAS alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os

import numpy as np

__all__ = ["available", "enabled", "use_kernels", "conv_forward", "conv_weight_grad",
           "conv_input_grad", "applies"]

# Rows shorter than this many numbers (ow * n) stay on NumPy: the kernels vectorise along the
# row, and a batch-1 image row (28 numbers) leaves most of a vector empty.
MIN_ROW = 64


def _load():
    if os.environ.get("NUMCNN_KERNELS", "1") == "0":
        return None
    spec = importlib.util.find_spec("numcnn._kernels")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    ptr, size = ctypes.c_void_p, ctypes.c_long
    lib.numcnn_conv_forward_f32.argtypes = [ptr, size, size, size, ptr, size, size, size, ptr,
                                            ptr, size, size, size, size, size, ctypes.c_int]
    lib.numcnn_conv_forward_f32.restype = ctypes.c_int
    lib.numcnn_conv_weight_grad_f32.argtypes = [ptr, ptr, size, size, size, size, size, size,
                                                ptr, size, size, size, size, size, ctypes.c_int]
    lib.numcnn_conv_weight_grad_f32.restype = ctypes.c_int
    return lib


_LIB = _load()
_ENABLED = _LIB is not None


def available() -> bool:
    """True if the compiled kernels were built and loaded (and not turned off by
    ``NUMCNN_KERNELS=0``)."""
    return _LIB is not None


def enabled() -> bool:
    """True if convolutions use the compiled kernels where they apply."""
    return _ENABLED


@contextlib.contextmanager
def use_kernels(flag: bool):
    """``with use_kernels(False):`` runs the NumPy reference path (``True``: the kernels, where
    available). Restores the previous setting on exit."""
    global _ENABLED
    previous = _ENABLED
    _ENABLED = bool(flag) and _LIB is not None
    try:
        yield
    finally:
        _ENABLED = previous


def applies(rows_p: np.ndarray, weight: np.ndarray, groups: int, stride, out_hw) -> bool:
    """Whether the kernels compute this convolution: float32, one group, stride 1 along the
    width, and output rows of at least ``MIN_ROW`` numbers."""
    return (_ENABLED and groups == 1 and stride[1] == 1 and rows_p.dtype == np.float32
            and weight.dtype == np.float32 and out_hw[1] * rows_p.shape[3] >= MIN_ROW)


_blas_limited = False


def _one_blas_thread() -> None:
    """Limit the BLAS to one thread, once (see the module docstring)."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    if os.environ.get("NUMCNN_BLAS_THREADS") == "keep":
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an install without it: the kernels still work, sharing the cores
        return
    threadpool_limits(1, user_api="blas")


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


def _check(status: int, what: str) -> None:
    if status != 0:
        raise MemoryError(f"numcnn kernels: out of memory in the {what}")


def conv_forward(rows_p: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride,
                 dilation, out_hw) -> np.ndarray:
    """``out[o, p, q, s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * xp[ci, p*sh + i*dh, q + j*dw, s]``.

    ``rows_p (c, hp, wp, n)`` padded input, C-contiguous; returns ``(oc, oh, ow, n)``.
    """
    _one_blas_thread()
    c, hp, wp, n = rows_p.shape
    oc, _, kh, kw = weight.shape
    (oh, ow), (sh, _), (dh, dw) = out_hw, stride, dilation
    rows_p = np.ascontiguousarray(rows_p)
    weight = np.ascontiguousarray(weight)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    out = np.empty((oc, oh, ow, n), np.float32)
    _check(_LIB.numcnn_conv_forward_f32(_ptr(rows_p), c, hp * wp * n, wp * n, _ptr(weight), oc,
                                        kh, kw, _ptr(bias), _ptr(out), oh, ow * n, sh, dh,
                                        dw * n, 0), "forward")
    return out


def conv_weight_grad(grad_rows: np.ndarray, rows_p: np.ndarray, weight_shape, stride,
                     dilation) -> np.ndarray:
    """``dL/dw[o,ci,i,j] = sum_{p,q,s} g[o,p,q,s] * xp[ci, p*sh + i*dh, q + j*dw, s]``.

    ``grad_rows (oc, oh, ow, n)`` and ``rows_p (c, hp, wp, n)``; returns ``(oc, c, kh, kw)``.
    """
    c, hp, wp, n = rows_p.shape
    oc, _, kh, kw = weight_shape
    _, oh, ow, _ = grad_rows.shape
    (sh, _), (dh, dw) = stride, dilation
    grad_rows = np.ascontiguousarray(grad_rows, np.float32)
    rows_p = np.ascontiguousarray(rows_p)
    grad_w = np.empty(weight_shape, np.float32)
    _check(_LIB.numcnn_conv_weight_grad_f32(_ptr(grad_rows), _ptr(rows_p), c, hp * wp * n,
                                            wp * n, oc, kh, kw, _ptr(grad_w), oh, ow * n, sh,
                                            dh, dw * n, 0), "weight gradient")
    return grad_w


def conv_input_grad(grad_rows: np.ndarray, weight: np.ndarray, dilation, pads,
                    in_hw) -> np.ndarray:
    """The input gradient of a stride-1 convolution, cropped to the unpadded input:
    ``(oc, oh, ow, n) -> (c, h, w, n)``.

    It is the full correlation of the gradient with the mirrored kernel, channels swapped::

        dL/dx[c, h, w] = sum_{o,i,j} w[o, c, kh-1-i, kw-1-j] * gp[o, h + i*dh, w + j*dw]

    where ``gp`` is ``g`` shifted by ``(kh-1)*dh - top`` rows and ``(kw-1)*dw - left`` columns
    in a zero frame ``(h + (kh-1)*dh, w + (kw-1)*dw)`` (the rows and columns it leaves out only
    ever met padding).
    """
    oc, c, kh, kw = weight.shape
    _, oh, ow, n = grad_rows.shape
    (dh, dw), ((top, _), (left, _)), (h, w) = dilation, pads, in_hw
    frame_h, frame_w = h + (kh - 1) * dh, w + (kw - 1) * dw
    shift_h, shift_w = (kh - 1) * dh - top, (kw - 1) * dw - left
    grad_p = np.zeros((oc, frame_h, frame_w, n), np.float32)
    # rows r of grad land at r + shift_h; keep those inside the frame
    r0, r1 = max(0, -shift_h), min(oh, frame_h - shift_h)
    q0, q1 = max(0, -shift_w), min(ow, frame_w - shift_w)
    if r1 > r0 and q1 > q0:
        grad_p[:, r0 + shift_h:r1 + shift_h, q0 + shift_w:q1 + shift_w] = \
            grad_rows[:, r0:r1, q0:q1]
    mirrored = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (c, oc, kh, kw)
    return conv_forward(grad_p, mirrored, None, (1, 1), dilation, (h, w))
