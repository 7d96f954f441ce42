"""Sliding-window machinery shared by convolution, transposed convolution and pooling.

Notation (as in Chainer's ``conv.py``):

    n          batch size
    c          channels
    h, w       input height and width; hp, wp after padding
    kh, kw     kernel height and width
    sh, sw     stride
    dh, dw     dilation (1 means none, as in PyTorch)
    oh, ow     output height and width

Output size along one spatial dimension (convolution and pooling; PyTorch's
``torch/nn/modules/conv.py`` and ``aten/src/ATen/native/Pool.h``, ``pooling_output_shape``)::

    out = floor((in + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1

with ``ceil_mode`` (pooling) the floor becomes a ceiling, but a last window that would start in
the right padding is dropped. A transposed convolution runs the same map backwards::

    out = (in - 1)*stride - pad_lo - pad_hi + dilation*(k-1) + output_padding + 1

Everything that slides a window asks this module: conv (:mod:`.conv`), transposed conv, every
pooling family (:mod:`.pooling`, :mod:`.pooling1d`), max unpooling (:mod:`.unpool`) and the
ONNX import/export. :func:`output_size`, :func:`pool_output_size` and
:func:`transposed_output_size` are the checked forms: a window that does not fit raises a
ShapeError naming the layer, the axis, the sizes and the formula with the numbers filled in.

Window views. :func:`windows` (a padded NCHW array) and :func:`windows_chwn` (a padded
``(c, hp, wp, n)`` array, numcnn's batch-last layout) give the same ``(n, c, kh, kw, oh, ow)``
read-only view of every receptive field; :func:`blocks` is the ``(n, c, oh, kh, ow, kw)`` view
of non-overlapping blocks (pooling with ``stride == kernel``). None copies data.

"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._text import a
from ..backend.blas import matmul
from ..errors import ArgumentError, ShapeError

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def ntuple(value, n: int, name: str) -> tuple[int, ...]:
    """``3 -> (3, 3)``; a tuple of length ``n`` is checked and returned."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ArgumentError(f"{name} must be an int or a tuple of {n} ints, got "
                            f"{value!r}") from None
    if len(value) != n or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ArgumentError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    return tuple(int(v) for v in value)


def pair(value, name: str = "argument") -> tuple[int, int]:
    return ntuple(value, 2, name)


# -- output sizes -------------------------------------------------------------------------------
AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
             ceil_mode: bool = False) -> int:
    """Output length of a sliding window along one dimension (PyTorch's formula).

    ``floor((size + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1``; with ``ceil_mode`` the
    floor becomes a ceiling, but the last window must start inside the input or the left padding
    (PyTorch's ``pooling_output_shape``, ``aten/src/ATen/native/Pool.h``). May be < 1: the
    checked forms (:func:`output_size` ...) turn that into an error.
    """
    span = size + pad_lo + pad_hi - dilation * (k - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
        return out
    return span // stride + 1


def transposed_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int,
                        dilation: int, output_padding: int = 0) -> int:
    """Output length of a transposed convolution along one dimension (PyTorch's formula)::

        out = (size - 1)*stride - pad_lo - pad_hi + dilation*(k-1) + output_padding + 1

    the largest input a convolution with these arguments maps onto ``size`` outputs, plus
    ``output_padding`` (``torch.nn.ConvTranspose2d``, Shape). May be < 1.
    """
    return (size - 1) * stride - pad_lo - pad_hi + dilation * (k - 1) + output_padding + 1


def formula(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
            ceil_mode: bool = False) -> str:
    """The output-size formula with the numbers filled in, for error messages, e.g.
    ``out = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1 = floor((3 + 2*0 - 1*(5-1)
    - 1) / 1) + 1 = -1``; the value is :func:`out_size`'s."""
    rounding = "ceil" if ceil_mode else "floor"
    if pad_lo == pad_hi:
        pads, numbers = "2*pad", f"2*{pad_lo}"
    else:
        pads, numbers = "pad_lo + pad_hi", f"{pad_lo} + {pad_hi}"
    value = out_size(size, k, stride, pad_lo, pad_hi, dilation, ceil_mode)
    text = (f"out = {rounding}((in + {pads} - dilation*(k-1) - 1) / stride) + 1 = "
            f"{rounding}(({size} + {numbers} - {dilation}*({k}-1) - 1) / {stride}) + 1")
    span = size + pad_lo + pad_hi - dilation * (k - 1) - 1
    if ceil_mode and value != -(-span // stride) + 1:
        return f"{text} - 1 (the last window would start in the right padding) = {value}"
    return f"{text} = {value}"


def transposed_formula(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
                       output_padding: int) -> str:
    """:func:`transposed_out_size`'s formula with the numbers filled in, for error messages."""
    pads = f"2*{pad_lo}" if pad_lo == pad_hi else f"{pad_lo} - {pad_hi}"
    value = transposed_out_size(size, k, stride, pad_lo, pad_hi, dilation, output_padding)
    return (f"out = (in - 1)*stride - 2*pad + dilation*(k-1) + output_padding + 1 = "
            f"({size} - 1)*{stride} - {pads} + {dilation}*({k}-1) + {output_padding} + 1 = "
            f"{value}")


def _spatial(shape, dims: int) -> tuple[int, ...]:
    return tuple(int(v) for v in tuple(shape)[len(shape) - dims:])


def output_size(name: str, shape, kernel, stride, pads, dilation, ceil_mode: bool = False,
                pooling: bool = False) -> tuple[int, ...]:
    """Spatial output sizes of a window sliding over an input of ``shape``, checked.

    ``shape`` ends with the spatial sizes (``(n, c, h, w)``, ``(n, c, l)`` ...); ``kernel``,
    ``stride`` and ``dilation`` have one entry per spatial axis and ``pads`` one ``(lo, hi)``
    pair. Each size is :func:`out_size`'s.

    Raises:
        ShapeError: if the window does not fit along an axis (an output size below 1), naming
            ``name`` (the layer or op), the axis, the input shape and the formula filled in;
            ``pooling`` words it for a pooling window (its arguments listed) instead of a
            convolution's kernel.
    """
    shape = tuple(shape)
    dims = len(kernel)
    sizes = []
    for axis, size, k, s, (lo, hi), d in zip(AXES[dims], _spatial(shape, dims), kernel, stride,
                                             pads, dilation):
        out = out_size(size, k, s, lo, hi, d, ceil_mode)
        if out >= 1:
            sizes.append(out)
        elif pooling:
            def show(values):
                return values[0] if dims == 1 else tuple(values)

            raise ShapeError(
                f"{name}: input of shape {shape} is {'shorter' if dims == 1 else 'smaller'} than "
                f"the pooling window (kernel_size={show(kernel)}, stride={show(stride)}, "
                f"padding={show([p for p, _ in pads])}, dilation={show(dilation)}"
                f"{', ceil_mode=True' if ceil_mode else ''}); along the {axis}: "
                f"{formula(size, k, s, lo, hi, d, ceil_mode)}")
        else:
            raise ShapeError(f"{name}: the kernel (size {k}, dilation {d}) does not fit the "
                             f"padded input along the {axis} for input of shape {shape}: "
                             f"{formula(size, k, s, lo, hi, d, ceil_mode)}, but it must be at "
                             f"least 1")
    return tuple(sizes)


def pool_output_size(name: str, shape, kernel, stride, padding, dilation=None,
                     ceil_mode: bool = False) -> tuple[int, ...]:
    """Output sizes of a pooling window over an ``(n, c, *spatial)`` ``shape``, checked.

    ``padding`` is one int per axis, on both sides (PyTorch's pooling padding); ``dilation``
    defaults to 1. Shape: ``(N, C, H, W) -> (H_out, W_out)`` (or ``(N, C, L) -> (L_out,)``) with
    ``H_out = floor((H + 2*padding - dilation*(k-1) - 1) / stride) + 1`` (ceil with
    ``ceil_mode``, as in ``torch.nn.MaxPool2d``).

    Raises:
        ShapeError: if ``shape`` is not ``len(kernel) + 2``-D, or the window does not fit
            (:func:`output_size`).
    """
    shape, dims = tuple(shape), len(kernel)
    if len(shape) != dims + 2:
        raise ShapeError(f"{name}: expected a {dims + 2}-D input {LAYOUTS[dims]}, got shape "
                         f"{shape}")
    dilation = (1,) * dims if dilation is None else dilation
    return output_size(name, shape, kernel, stride, [(p, p) for p in padding], dilation,
                       ceil_mode, pooling=True)


def transposed_output_size(name: str, shape, kernel, stride, pads, dilation,
                           output_padding) -> tuple[int, ...]:
    """Spatial output sizes of a transposed convolution of an input of ``shape``, checked.

    Each size is :func:`transposed_out_size`'s (``torch.nn.ConvTranspose2d``'s Shape block).

    Raises:
        ShapeError: if an output size is below 1 (padding too large for the input), naming the
            layer, the axis, the input shape and the formula filled in.
    """
    shape = tuple(shape)
    dims = len(kernel)
    sizes = []
    for axis, size, k, s, (lo, hi), d, extra in zip(AXES[dims], _spatial(shape, dims), kernel,
                                                     stride, pads, dilation, output_padding):
        out = transposed_out_size(size, k, s, lo, hi, d, extra)
        if out < 1:
            raise ShapeError(f"{name}: the padding is too large for input of shape {shape} "
                             f"along the {axis}: {transposed_formula(size, k, s, lo, hi, d, extra)}"
                             f", but it must be at least 1")
        sizes.append(out)
    return tuple(sizes)


def window_pads(size: int, k: int, stride: int, padding: int, dilation: int,
                out: int) -> tuple[int, int]:
    """``(lo, hi)`` padding along one axis so that all ``out`` windows fit: ``padding`` at the
    start, and at the end ``padding`` or more (``ceil_mode``'s last window may hang over the
    input and its padding: ``(out - 1)*stride + dilation*(k-1) + 1`` positions are read)."""
    needed = (out - 1) * stride + dilation * (k - 1) + 1
    return padding, max(padding, needed - size - padding)


# -- padding ------------------------------------------------------------------------------------
def resolve_padding(padding, kernel_size: tuple[int, ...], dilation: tuple[int, ...],
                    stride: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Padding as ``((lo, hi), ...)`` per spatial dimension.

    ``padding`` is an int, a tuple of ints (the same on both sides of each dimension), or one of
    ``"valid"`` (none), ``"same"`` (output size equals input size; stride 1 only, and when the
    total padding ``dilation*(k-1)`` is odd the extra pixel goes at the end, as in PyTorch) and
    ``"full"`` (``dilation*(k-1)`` on each side: every partial overlap is computed).
    """
    n = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ArgumentError(f"padding='same' is not supported for strided convolutions "
                                    f"(stride={stride}), as in PyTorch")
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        if padding == "full":
            return tuple((d * (k - 1),) * 2 for k, d in zip(kernel_size, dilation))
        raise ArgumentError(f"padding must be an int, a tuple of ints, 'valid', 'same' or 'full', "
                            f"got {padding!r}")
    pads = ntuple(padding, n, "padding")
    if any(p < 0 for p in pads):
        raise ArgumentError(f"padding must be non-negative, got {padding!r}")
    return tuple((p, p) for p in pads)


def pad2d(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], mode: str = "zeros",
          value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``((top, bottom), (left, right))``.

    ``mode`` is ``"zeros"`` (or ``"constant"`` with ``value``), ``"reflect"``, ``"replicate"`` or
    ``"circular"``, as in PyTorch's ``padding_mode``.
    """
    (t, b), (l, r) = pads
    if t == b == l == r == 0:
        return x
    if mode in ("zeros", "constant"):
        h, w = x.shape[-2:]
        out = np.full((*x.shape[:-2], h + t + b, w + l + r), value, dtype=x.dtype)
        out[..., t:t + h, l:l + w] = x
        return out
    if mode not in _NUMPY_PAD_MODE:
        raise ArgumentError(f"padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(t, b), (l, r)], mode=_NUMPY_PAD_MODE[mode])


def _padding_matrix(size: int, lo: int, hi: int, mode: str, dtype) -> np.ndarray:
    """The (size+lo+hi, size) 0/1 matrix P with ``padded = P @ x`` along one axis."""
    source = np.pad(np.arange(size), (lo, hi), mode=_NUMPY_PAD_MODE[mode])  # index read per pixel
    matrix = np.zeros((size + lo + hi, size), dtype=dtype)
    matrix[np.arange(size + lo + hi), source] = 1
    return matrix


def pad2d_backward(grad_padded: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]],
                   mode: str = "zeros") -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Padding is linear, ``xp = P_h @ x @ P_w^T``, so the gradient is ``P_h^T @ grad @ P_w``: for
    zero padding that is a crop; for reflect, replicate and circular padding each padded pixel
    sends its gradient back to the pixel it copied.
    """
    (t, b), (l, r) = pads
    hp, wp = grad_padded.shape[-2:]
    h, w = hp - t - b, wp - l - r
    if t == b == l == r == 0:
        return grad_padded
    if mode in ("zeros", "constant"):
        return grad_padded[..., t:t + h, l:l + w]
    p_h = _padding_matrix(h, t, b, mode, grad_padded.dtype)  # (hp, h)
    p_w = _padding_matrix(w, l, r, mode, grad_padded.dtype)  # (wp, w)
    return matmul(matmul(p_h.T, grad_padded), p_w)


# -- window views -------------------------------------------------------------------------------
def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """A read-only strided view of every receptive field of a padded (n, c, hp, wp) array.

    Returns shape ``(n, c, kh, kw, oh, ow)`` with
    ``view[n, c, i, j, y, x] = xp[n, c, y*sh + i*dh, x*sw + j*dw]``; no data is copied.
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(xp, shape=(xp.shape[0], xp.shape[1], kh, kw, oh, ow),
                      strides=(s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
                      writeable=False)


def windows_chwn(rows_p: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """:func:`windows` of a padded map in the CHWN layout ``(c, hp, wp, n)``.

    The same ``(n, c, kh, kw, oh, ow)`` view,
    ``view[n, c, i, j, y, x] = rows_p[c, y*sh + i*dh, x*sw + j*dw, n]``; no data is copied.
    """
    if not rows_p.flags.c_contiguous:
        return windows(rows_p.transpose(3, 0, 1, 2), kernel, stride, dilation, out_hw)
    # the same view as windows() builds, made directly on the buffer (5x less overhead than
    # as_strided, which counts at batch 1)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    c, _, _, n = rows_p.shape
    s_c, s_h, s_w, s_n = rows_p.strides
    view = np.ndarray((n, c, kh, kw, oh, ow), rows_p.dtype, buffer=rows_p,
                      strides=(s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w))
    view.flags.writeable = False
    return view


def is_blocks(shape, kernel, stride, padding, dilation, out_hw) -> bool:
    """Whether the windows are the non-overlapping kh x kw blocks of the (cropped) input:
    ``stride == kernel``, no padding, no dilation, and every window inside the input."""
    return (tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)
            and tuple(dilation) == (1, 1)
            and out_hw[0] * kernel[0] <= shape[2] and out_hw[1] * kernel[1] <= shape[3])


def blocks(x: np.ndarray, kernel, out_hw, writeable: bool = False) -> np.ndarray:
    """(n, c, oh, kh, ow, kw) view of the non-overlapping blocks of an (n, c, h, w) array:
    ``view[n, c, y, i, x, j] = x[n, c, y*kh + i, x*kw + j]``; rows and columns past ``oh*kh``,
    ``ow*kw`` are left out. No data is copied (``x`` may be in any memory order)."""
    (kh, kw), (oh, ow) = kernel, out_hw
    n, c, h, w = x.shape
    if oh * kh == h and ow * kw == w and x.flags.c_contiguous:
        return x.reshape(n, c, oh, kh, ow, kw)  # the same view, built without as_strided's cost
    s_n, s_c, s_h, s_w = x.strides
    return as_strided(x, shape=(x.shape[0], x.shape[1], oh, kh, ow, kw),
                      strides=(s_n, s_c, kh * s_h, s_h, kw * s_w, s_w), writeable=writeable)


def col2im(cols: np.ndarray, padded_shape: tuple[int, int, int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Adjoint of :func:`windows`: add every window value back onto the pixel it came from.

    ``cols`` has shape ``(n, c, kh, kw, oh, ow)`` (any strides); the result has ``padded_shape``.
    One strided slice addition per kernel offset (kh*kw of them), never a per-pixel scatter.
    ``out``, if given, is an array of ``padded_shape`` (any strides, e.g. a transposed view of
    a channels-first buffer) that the values are added into, and is returned.
    """
    n, c, kh, kw, oh, ow = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    if out is None:
        out = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return out


def check_input(x, ndim: int, layer: str, expected: str) -> np.ndarray:
    """Return ``x`` as an array, or raise a ShapeError naming the layer and the expected layout."""
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ShapeError(f"{layer}: expected {a(f'{ndim}-D')} input {expected}, got shape "
                         f"{x.shape}")
    return x
