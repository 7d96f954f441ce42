"""Convolution (2-D and 1-D) and transposed convolution, each with its backward pass.

What a CNN calls a convolution is a cross-correlation: the kernel slides over the input without
being flipped (:mod:`numcnn.functional.signal` has both, for comparison). Notation:

    n          batch size
    c, oc      input and output channels; cg = c / groups input channels per group
    h, w       input height and width; hp, wp after padding (xp is the padded input)
    kh, kw     kernel height and width
    sh, sw     stride;  dh, dw dilation (1 means none)
    oh, ow     output height and width

For sample ``n`` and output channel ``o`` of group ``g = o // (oc/groups)``::

    y[n, o, p, q] = b[o] + sum_{ci < cg, i < kh, j < kw} w[o, ci, i, j]
                                       * xp[n, g*cg + ci, p*sh + i*dh, q*sw + j*dw]

and along each spatial axis the output size is::

    out = floor((in + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1

im2col. Every receptive field is copied into one column, so that the whole layer is one matrix
product (one per group)::

    cols (c*kh*kw, oh*ow*n)          rows ordered (channel, kernel row, kernel column)
    y    = W.reshape(oc, c*kh*kw) @ cols   -> (oc, oh*ow*n)

The columns are ordered (output row, output column, sample): the batch is the innermost axis.
That is the layout decision the speed rests on: copying windows into ``cols`` and adding
columns back (col2im) then move runs of ``ow*n`` contiguous numbers (896 for a 14-pixel-wide
batch of 64) instead of ``ow`` (14), and NumPy's cost is per run. Inputs are brought into this
channels-first, batch-last layout ``(c, h, w, n)`` by one transposing copy that also writes the
zero padding, and the output goes back to NCHW by one transposing copy that also adds the bias.
The columns are built for a few output rows at a time (about ``BLOCK_BYTES``) in one reused
buffer and multiplied at once, while they are still in cache; the full matrix, ``kh*kw`` times
the size of the input, never exists, and backward rebuilds the blocks from the padded input.

Backward. With ``g = dL/dy`` (stride 1, one channel, to see the idea; the course texts 01 and
04 derive it)::

    dL/dw = correlate(xp, g, 'valid')          each weight sees the inputs it multiplied
    dL/db = sum of g over batch and positions
    dL/dx = correlate(g, rot180(w), 'full')    a *full* convolution of g with the kernel
          = convolve(g, w, 'full')             rotated by 180 degrees (mirrored)

im2col computes exactly these for any stride, dilation, padding and groups: ``dL/dw`` is
``g @ cols.T``, and ``dL/dx`` is ``col2im(W.T @ g)``: ``W.T @ g`` gives, for every window, what
each of its pixels contributed, and col2im adds those back onto the pixels (the adjoint of
copying them out), which is the full convolution with the mirrored kernel. Padding is cropped
off the result.

Compiled kernels. Where numcnn's C extension was built (:mod:`numcnn.backend`),
float32 convolutions (groups and depthwise included) are computed there instead: the same two
formulas, summed directly on the ``(c, h, w, n)`` layout without a column matrix (a row of
``ow*n`` outputs is one long vector, and so is the input each tap reads). The code below stays
the reference that runs everywhere and that the tests hold the kernels to.

Transposed convolution is the same linear map run backwards: its forward pass is the input
gradient of a convolution whose weight has shape ``(c_in, c_out/groups, kh, kw)``, and its
backward pass is that convolution's forward pass (and weight gradient). Both share the code
below (``_correlate`` and ``_correlate_backward``).
"""

from __future__ import annotations

import numpy as np

from .._grad import is_grad_enabled
from .._text import a
from ..backend import kernels, policy
from ..backend.blas import matmul
from ..backend.layout import NO_PADS, Pads, from_chwn, to_chwn  # noqa: F401
from ..errors import ArgumentError, DTypeError, ShapeError
from ._windows import (col2im, ntuple, output_size, resolve_padding, transposed_output_size,
                       windows_chwn)

__all__ = [
    "conv2d", "conv2d_forward", "conv2d_backward",
    "conv1d", "conv1d_forward", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_forward", "conv_transpose2d_backward",
]

# The im2col matrix (kh*kw times the size of the input) is built for a tile of output pixels at
# a time (whole rows, or part of one row when a row alone is larger) of at most this many bytes,
# in one reused buffer, so that large inputs never need it whole. Smaller tiles that stay in
# cache were measured slower: BLAS runs small products far below its peak (conv 16->32 5x5 at
# batch 64, input gradient: 5.0 ms whole, 7.2 ms in 4 MiB tiles, 11 ms in 1 MiB tiles). In
# training the whole matrix is built at once and kept for the backward pass (the weight gradient
# is then one product), when it takes at most KEEP_COLS_BYTES.
BLOCK_BYTES = 1 << 25
KEEP_COLS_BYTES = 1 << 27


def _tiles(channels: int, kernel, out_hw, n: int, itemsize: int, whole: bool = False):
    """Tiles ``(r0, r1, q0, q1)`` of output rows and columns whose columns take about
    ``BLOCK_BYTES``; a tile spans whole rows, or part of a single row. ``whole``: one tile."""
    (kh, kw), (oh, ow) = kernel, out_hw
    if whole:
        return [(0, oh, 0, ow)]
    per_pixel = max(1, channels * kh * kw * n * itemsize)
    pixels = max(1, BLOCK_BYTES // per_pixel)
    if pixels >= ow:
        step = pixels // ow
        return [(r0, min(oh, r0 + step), 0, ow) for r0 in range(0, oh, step)]
    step = -(-ow // -(-ow // pixels))  # split each row into equal parts
    return [(r, r + 1, q0, min(ow, q0 + step)) for r in range(oh) for q0 in range(0, ow, step)]


def _tile_buffer(tiles, channels: int, kernel, n: int, dtype) -> np.ndarray:
    (kh, kw), (r0, r1, q0, q1) = kernel, tiles[0]
    return np.empty(channels * kh * kw * (r1 - r0) * (q1 - q0) * n, dtype)


def _im2col_tile(view: np.ndarray, tile, buffer: np.ndarray) -> np.ndarray:
    """The columns of one tile of output pixels: ``(c*kh*kw, rows*cols*n)``, written to ``buffer``.

    ``view`` is the ``(n, c, kh, kw, oh, ow)`` window view of the padded input (batch-last
    memory); ``cols[(ci, i, j), (p, q, s)] = xp[s, ci, p*sh + i*dh, q*sw + j*dw]``.
    """
    n, c, kh, kw, _, _ = view.shape
    r0, r1, q0, q1 = tile
    cols = buffer[:c * kh * kw * (r1 - r0) * (q1 - q0) * n]
    cols = cols.reshape(c, kh, kw, r1 - r0, q1 - q0, n)
    np.copyto(cols.transpose(5, 0, 1, 2, 3, 4), view[:, :, :, :, r0:r1, q0:q1])  # runs of q*n
    return cols.reshape(c * kh * kw, -1)


def _column_tiles(rows_p: np.ndarray, kernel, stride, dilation, out_hw, whole: bool = False):
    """Yield ``(tile, cols)``: the im2col columns of each tile of output pixels in turn.

    The tiles share one buffer, so each ``cols`` is valid until the next is yielded; with
    ``whole`` there is one tile, the whole matrix ``(c*kh*kw, oh*ow*n)`` in its own array.
    """
    c, _, _, n = rows_p.shape
    view = windows_chwn(rows_p, kernel, stride, dilation, out_hw)  # (n, c, kh, kw, oh, ow)
    tiles = _tiles(c, kernel, out_hw, n, rows_p.itemsize, whole)
    buffer = _tile_buffer(tiles, c, kernel, n, rows_p.dtype)
    for tile in tiles:
        yield tile, _im2col_tile(view, tile, buffer)


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Batched ``(g, p, q) @ (g, q, r)``, one BLAS product per group; with ``q == 1`` (depthwise
    convolutions) it is an outer product, which ``np.multiply`` does several times faster."""
    if a.shape[-1] == 1:
        return np.multiply(a, b, out=out)
    return matmul(a, b, out=out)  # under the BLAS-thread rule (numcnn.backend.blas)


# -- the convolution and its adjoint: every op below is made of these two -------------------------
def _correlate(rows_p: np.ndarray, weight: np.ndarray, groups: int, stride, dilation, out_hw,
               grad_rows: np.ndarray | None = None, keep_cols: bool = False):
    """Cross-correlate a padded ``(c, hp, wp, n)`` input with ``weight (oc, cg, kh, kw)``.

    Returns ``(out, grad_w, cols)``: the output ``(oc, oh, ow, n)``, ``W @ cols`` per group, a
    tile of output pixels at a time. If ``grad_rows (oc, oh, ow, n)`` is given, ``grad_w`` is
    the weight gradient ``grad @ cols.T`` (per group) from the same columns, else None. With
    ``keep_cols`` the columns are built whole, in one tile, and returned as ``cols``
    ``(groups, cg*kh*kw, oh*ow*n)``, else ``cols`` is None.
    """
    oc, cg, kh, kw = weight.shape
    w_groups = weight.reshape(groups, oc // groups, cg * kh * kw)
    out = np.empty((oc, *out_hw, rows_p.shape[3]), rows_p.dtype)
    grad_w = None if grad_rows is None else np.zeros(w_groups.shape, rows_p.dtype)
    for (r0, r1, q0, q1), cols in _column_tiles(rows_p, (kh, kw), stride, dilation, out_hw,
                                                whole=keep_cols):
        cols = cols.reshape(groups, cg * kh * kw, -1)
        _matmul(w_groups, cols, out=out[:, r0:r1, q0:q1].reshape(groups, oc // groups, -1))
        if grad_rows is not None:
            grad_tile = grad_rows[:, r0:r1, q0:q1].reshape(groups, oc // groups, -1)
            grad_w += _matmul(grad_tile, cols.transpose(0, 2, 1))  # (g, oc/g, cg*kh*kw)
    grad_w = None if grad_w is None else grad_w.reshape(weight.shape)
    return out, grad_w, cols if keep_cols else None


def _weight_grad(grad_rows: np.ndarray, weight_shape, groups: int, stride, dilation,
                 rows_p: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """``dL/dW = grad @ cols.T`` per group: each weight gathers the inputs it multiplied, times
    the gradient of the output they made. From the kept columns ``cols`` in one product, or
    from the padded input ``rows_p``, the columns rebuilt a tile at a time."""
    oc, cg, kh, kw = weight_shape
    # computed transposed, cols @ grad.T -> (g, cg*kh*kw, oc/g): the same numbers, but BLAS
    # runs this shape ~1.6x faster than grad @ cols.T for the presets' layers
    if cols is not None:
        grad = grad_rows.reshape(groups, oc // groups, -1)              # (g, oc/g, oh*ow*n)
        grad_w_t = _matmul(cols, grad.transpose(0, 2, 1))
    else:
        grad_w_t = np.zeros((groups, cg * kh * kw, oc // groups), grad_rows.dtype)
        for (r0, r1, q0, q1), cols in _column_tiles(rows_p, (kh, kw), stride, dilation,
                                                    grad_rows.shape[1:3]):
            grad_tile = grad_rows[:, r0:r1, q0:q1].reshape(groups, oc // groups, -1)
            grad_w_t += _matmul(cols.reshape(groups, cg * kh * kw, -1),
                                grad_tile.transpose(0, 2, 1))
    return np.ascontiguousarray(grad_w_t.transpose(0, 2, 1)).reshape(weight_shape)


def _correlate_backward(grad_rows: np.ndarray, weight: np.ndarray, groups: int, stride,
                        dilation, padded_shape) -> np.ndarray:
    """Gradient of :func:`_correlate` with respect to its padded input.

    ``grad_rows (oc, oh, ow, n) -> (c, hp, wp, n)``: ``W.T @ grad`` gives each window's share of
    the gradient, and col2im adds the shares onto the pixels they came from; together that is
    the full convolution of the gradient with the mirrored kernel.
    """
    oc, cg, kh, kw = weight.shape
    _, oh, ow, n = grad_rows.shape
    c = padded_shape[0]
    kernel, (sh, sw), (dh, dw) = (kh, kw), stride, dilation
    w_t = weight.reshape(groups, oc // groups, cg * kh * kw).transpose(0, 2, 1)  # (g, cg*k*k, ocg)
    grad_p = np.zeros(padded_shape, grad_rows.dtype)
    tiles = _tiles(c, kernel, (oh, ow), n, grad_rows.itemsize)
    buffer = _tile_buffer(tiles, c, kernel, n, grad_rows.dtype)
    for r0, r1, q0, q1 in tiles:
        grad_tile = grad_rows[:, r0:r1, q0:q1].reshape(groups, oc // groups, -1)  # (g, oc/g, L)
        size = c * kh * kw * (r1 - r0) * (q1 - q0) * n
        grad_cols = _matmul(w_t, grad_tile, out=buffer[:size].reshape(groups, cg * kh * kw, -1))
        # col2im onto the padded pixels this tile read: rows r0*sh .. (r1-1)*sh + dh*(kh-1), and
        # columns likewise
        target = grad_p[:, r0 * sh:(r1 - 1) * sh + dh * (kh - 1) + 1,
                        q0 * sw:(q1 - 1) * sw + dw * (kw - 1) + 1]  # (c, rows, cols, n)
        grad_cols = grad_cols.reshape(c, kh, kw, r1 - r0, q1 - q0, n)
        col2im(grad_cols.transpose(5, 0, 1, 2, 3, 4), None, stride, dilation,
               out=target.transpose(3, 0, 1, 2))
    return grad_p


# -- argument checks ------------------------------------------------------------------------------
def _check_weight(name: str, weight, ndim: int, layout: str) -> np.ndarray:
    weight = np.asarray(weight)
    if weight.dtype not in (np.float32, np.float64):
        raise DTypeError(f"{name}: expected a float32 or float64 weight, got dtype {weight.dtype}")
    if weight.ndim != ndim:
        raise ShapeError(f"{name}: expected {a(f'{ndim}-D')} weight {layout}, got shape "
                         f"{weight.shape}")
    return weight


def _check_input(name: str, x, ndim: int, layout: str, dtype) -> np.ndarray:
    """``x`` as an array of ``dtype`` (the weight's), or a ShapeError / DTypeError."""
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ShapeError(f"{name}: expected {a(f'{ndim}-D')} input {layout}, got shape "
                         f"{x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
            or x.dtype == np.bool_):
        raise DTypeError(f"{name}: expected a real-valued input, got dtype {x.dtype}")
    return x.astype(dtype, copy=False)


def _check_bias(name: str, bias, channels: int, dtype) -> np.ndarray | None:
    if bias is None:
        return None
    bias = np.asarray(bias)
    if bias.shape != (channels,):
        raise ShapeError(f"{name}: expected a bias of shape ({channels},), got {bias.shape}")
    return bias.astype(dtype, copy=False)


def _check_positive(name: str, **values) -> None:
    for arg, value in values.items():
        if any(v < 1 for v in np.atleast_1d(value)):
            raise ArgumentError(f"{name}: {arg} must be positive, got {value!r}")


def _check_groups(name: str, groups, channels: int, what: str) -> int:
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ArgumentError(f"{name}: groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ShapeError(f"{name}: {what} ({channels}) must be divisible by groups ({groups})")
    return int(groups)


def _check_channels(name: str, shape, expected: int, layout: str, why: str = "") -> None:
    if shape[1] != expected:
        raise ShapeError(f"{name}: expected input of shape {layout.replace('C', str(expected), 1)}"
                         f"{why}, got {tuple(shape)}")


def _check_grad(name: str, grad_out, shape) -> np.ndarray:
    grad_out = np.asarray(grad_out)
    if grad_out.shape != tuple(shape):
        raise ShapeError(f"{name} backward: expected grad_out of shape {tuple(shape)} (the "
                         f"output's), got {grad_out.shape}")
    return grad_out


# -- conv2d ---------------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D convolution (cross-correlation) over an NCHW batch, as ``torch.nn.functional.conv2d``.

    ``y[n, o] = b[o] + sum_{ci, i, j} w[o, ci, i, j] * xp[n, g*cg + ci, p*sh + i*dh, q*sw + j*dw]``
    (see the module docstring), computed by im2col and one matrix product per group.

    Args:
        x: input ``(N, C, H, W)``; cast to the weight's dtype.
        weight: ``(out_channels, C / groups, kH, kW)``, float32 or float64.
        bias: ``(out_channels,)`` or None. Default: None.
        stride: int or (sh, sw). Default: 1.
        padding: int, (ph, pw), ``'valid'`` (none), ``'same'`` (output size = input size, stride
            1 only; an odd total goes to the bottom/right) or ``'full'`` (``dilation*(k-1)`` on
            each side). Zero padding. Default: 0.
        dilation: int or (dh, dw), spacing between kernel taps. Default: 1 (none).
        groups: input and output channels split into this many independent groups;
            ``groups = C`` is a depthwise convolution. Default: 1.

    Shape:
        - Input ``(N, C, H, W)``, output ``(N, out_channels, H_out, W_out)`` with
          ``H_out = floor((H + 2*ph - dh*(kH-1) - 1) / sh) + 1`` (likewise W_out).

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
    """
    return conv2d_forward(x, weight, bias, stride, padding, dilation, groups)[0]


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`conv2d` that also returns the cache for :func:`conv2d_backward`: ``(y, cache)``."""
    x, weight, bias, stride, pads, dilation, groups, out_hw = _checked_conv_args(
        "conv2d", 2, x, weight, bias, stride, padding, dilation, groups)
    return _conv2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw, "conv2d")


_LAYOUTS = {1: ("(N, C, L)", "(out_channels, in_channels/groups, k)"),
            2: ("(N, C, H, W)", "(out_channels, in_channels/groups, kH, kW)")}


def _checked_conv_args(name, dims, x, weight, bias, stride, padding, dilation, groups):
    """The arguments of a ``dims``-D convolution checked and normalised: ``(x, weight, bias,
    stride, pads, dilation, groups, out_sizes)``, or a ShapeError / DTypeError / ValueError that
    names the argument, what was expected and what came."""
    layout, weight_layout = _LAYOUTS[dims]
    weight = _check_weight(name, weight, dims + 2, weight_layout)
    x = _check_input(name, x, dims + 2, layout, weight.dtype)
    stride, dilation = ntuple(stride, dims, "stride"), ntuple(dilation, dims, "dilation")
    _check_positive(name, stride=stride, dilation=dilation)
    kernel = weight.shape[2:]
    pads = resolve_padding(padding, kernel, dilation, stride)
    groups = _check_groups(name, groups, weight.shape[0], "out_channels (weight.shape[0])")
    _check_channels(name, x.shape, weight.shape[1] * groups, layout,
                    f" (weight {weight.shape} with groups={groups})")
    bias = _check_bias(name, bias, weight.shape[0], weight.dtype)
    out_sizes = output_size(name, x.shape, kernel, stride, pads, dilation)
    return x, weight, bias, stride, pads, dilation, groups, out_sizes


def _conv2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw, name="conv2d",
                    keep_cols: bool | None = None):
    """conv2d on checked arguments: ``x`` of the weight's dtype, ``pads`` as ((t, b), (l, r)).

    ``keep_cols``: keep the im2col matrix for the backward pass; by default when gradients are
    on (not under ``numcnn.no_grad()``) and it takes at most ``KEEP_COLS_BYTES``.
    """
    if policy.to_chwn(x) == policy.KERNELS:  # NCHW images: the blocked transposition
        rows_p = kernels.to_chwn(x, pads)  # (c, hp, wp, n)
    else:
        rows_p = to_chwn(x, pads)  # (c, hp, wp, n); no copy if already CHWN and unpadded
    has_bias = bias is not None
    impl = policy.conv2d(rows_p, weight, groups, stride, out_hw, dilation)
    if impl in (policy.KERNELS_STRIDED, policy.KERNELS_GROUPED, policy.KERNELS_DEPTHWISE):
        return _conv2d_forward_grouped(rows_p, x, weight, bias, stride, pads, dilation, groups,
                                       out_hw, name, impl)
    if impl != policy.NUMPY:
        # the compiled kernels: the same sums, no column matrix (numcnn.backend.kernels);
        # rows of a few numbers (a single image) by a kernel for short rows, whose backward
        # pass is NumPy's
        forward = (kernels.conv_forward if impl == policy.KERNELS
                   else kernels.conv_forward_short_rows)
        out_rows = forward(rows_p, weight, bias, stride, dilation, out_hw)
        keep_cols, cols, bias = False, None, None  # bias already added
    else:
        if keep_cols is None:
            cols_bytes = rows_p.shape[0] * weight[0, 0].size * x.shape[0] * int(np.prod(out_hw))
            keep_cols = is_grad_enabled() and cols_bytes * rows_p.itemsize <= KEEP_COLS_BYTES
        out_rows, _, cols = _correlate(rows_p, weight, groups, stride, dilation, out_hw,
                                       keep_cols=keep_cols)
    if not keep_cols and np.may_share_memory(rows_p, x):
        rows_p = rows_p.copy()  # kept for backward: later changes to x must not reach it
    y = from_chwn(out_rows, bias)  # (n, oc, oh, ow), a view of out_rows
    cache = dict(name=name, impl=impl, rows_p=None if keep_cols else rows_p, cols=cols,
                 padded_shape=rows_p.shape, weight=weight, pads=pads, stride=stride,
                 dilation=dilation, groups=groups, has_bias=has_bias, out_shape=y.shape)
    return y, cache


def conv2d_backward(grad_out, cache, input_grad: bool = True):
    """Gradients of :func:`conv2d`: ``(grad_x, grad_weight, grad_bias or None)``.

    ``grad_weight = grad @ cols.T`` (per group); ``grad_bias`` sums ``grad`` over batch and
    positions; ``grad_x = col2im(W.T @ grad)``, cropped: the full convolution of ``grad`` with the
    180-degree rotated kernel, for any stride, padding, dilation and groups. With
    ``input_grad=False`` ``grad_x`` is not computed and is None (the input is data, as images
    that do not require a gradient in PyTorch); that saves about a third of the work.
    """
    weight, groups = cache["weight"], cache["groups"]
    grad_out = _check_grad(cache["name"], grad_out, cache["out_shape"])
    grad_rows = to_chwn(grad_out, dtype=weight.dtype)  # (oc, oh, ow, n), no copy if it can
    grad_b = grad_rows.reshape(weight.shape[0], -1).sum(axis=1) if cache["has_bias"] else None
    if cache["impl"] == policy.KERNELS:
        return _conv2d_backward_kernels(grad_rows, grad_b, cache, input_grad)
    if cache["impl"] in (policy.KERNELS_STRIDED, policy.KERNELS_GROUPED,
                         policy.KERNELS_DEPTHWISE):
        return _conv2d_backward_grouped(grad_rows, grad_b, cache, input_grad)
    grad_w = _weight_grad(grad_rows, weight.shape, groups, cache["stride"], cache["dilation"],
                          rows_p=cache["rows_p"], cols=cache["cols"])
    grad_x = None
    if input_grad:
        grad_rows_p = _correlate_backward(grad_rows, weight, groups, cache["stride"],
                                          cache["dilation"], cache["padded_shape"])
        grad_x = from_chwn(grad_rows_p, crop=cache["pads"])
    return grad_x, grad_w, grad_b


def _conv2d_backward_kernels(grad_rows, grad_b, cache, input_grad: bool):
    """:func:`conv2d_backward` by the compiled kernels, for a forward pass that used them."""
    weight, stride, dilation, pads = (cache["weight"], cache["stride"], cache["dilation"],
                                      cache["pads"])
    grad_w = kernels.conv_weight_grad(grad_rows, cache["rows_p"], weight.shape, stride, dilation)
    grad_x = None
    if input_grad:
        (top, bottom), (left, right) = pads
        _, hp, wp, _ = cache["padded_shape"]
        in_hw = (hp - top - bottom, wp - left - right)
        if stride == (1, 1):
            grad_x = from_chwn(kernels.conv_input_grad(grad_rows, weight, dilation, pads, in_hw))
        else:  # a stride along the height: one stride-1 gradient per phase of the input (a
            # dilated kernel written out dense)
            grad_x = from_chwn(kernels.conv_input_grad_strided(
                grad_rows, kernels.dilated_weight(weight, dilation), stride,
                cache["padded_shape"]), crop=pads)
    return grad_x, grad_w, grad_b


def _conv2d_forward_grouped(rows_p, x, weight, bias, stride, pads, dilation, groups, out_hw,
                            name, impl):
    """conv2d by the kernels for ``impl`` KERNELS_GROUPED (groups), KERNELS_DEPTHWISE (one
    input channel per group) or KERNELS_STRIDED (one group, a stride along the width, any
    dilation). In the CHWN layout each group's input channels, weights and output channels are
    contiguous blocks, so the kernels take the groups in one call.

    Stride 1 along the width: directly (a single image with stride 1 as its rows end to end,
    :func:`numcnn.backend.kernels.conv_forward_flat`). A stride along the width: read directly,
    vectorised along the batch, when the policy says so (``policy.strided_direct``; depthwise:
    ``policy.depthwise_direct_stride``), else on the polyphase split of the input
    (:func:`_width_split`). The stride and dilation along the height the kernels take as they
    are. The split input, when made, is kept for the weight gradient instead of the padded
    input."""
    depthwise = impl == policy.KERNELS_DEPTHWISE
    (sh, sw), n, padded_shape = stride, rows_p.shape[3], rows_p.shape
    phases = None
    if sw > 1 and depthwise and policy.depthwise_direct_stride(n):
        out_rows = kernels.conv_forward_depthwise_strided(rows_p, weight, bias, stride, dilation,
                                                          out_hw, groups)
    elif sw > 1 and not depthwise and policy.strided_direct(n, weight.shape[3], sw, dilation[1]):
        out_rows = kernels.conv_forward_strided_direct(rows_p, weight, bias, stride, dilation,
                                                       out_hw, groups)
    elif sw > 1:
        phases, phase_weight, phase_dilation = _width_split(rows_p, weight, sw, dilation)
        out_rows = kernels.conv_forward(phases, phase_weight, bias, (sh, 1), phase_dilation,
                                        out_hw, groups, depthwise)
        rows_p = None
    elif sh == 1 and out_hw[1] * n < policy.MIN_ROW:  # a single image, stride 1
        out_rows = kernels.conv_forward_flat(rows_p, weight, bias, dilation, out_hw, groups,
                                             depthwise)
    else:
        out_rows = kernels.conv_forward(rows_p, weight, bias, stride, dilation, out_hw, groups,
                                        depthwise)
    if rows_p is not None and np.may_share_memory(rows_p, x):
        rows_p = rows_p.copy()  # kept for backward: later changes to x must not reach it
    y = from_chwn(out_rows)
    cache = dict(name=name, impl=impl, rows_p=rows_p, phases=phases, cols=None,
                 padded_shape=padded_shape, weight=weight, pads=pads, stride=stride,
                 dilation=dilation, groups=groups, has_bias=bias is not None, out_shape=y.shape)
    return y, cache


def _width_split(rows_p, weight, sw: int, dilation):
    """A stride ``sw`` along the width as stride 1 on the polyphase split of the padded input
    (:func:`numcnn.backend.kernels.width_phases`): ``(phases, weight, dilation)`` of that
    convolution. Phase 0 alone with dilation ``dw/sw`` when the stride divides the dilation
    (every tap falls on it), else every phase with the kernel written out dense along the width
    (:func:`numcnn.backend.kernels.dilated_weight`) and split likewise."""
    dh, dw = dilation
    if dw % sw == 0:  # every tap on the phase 0 columns, dw/sw of them apart
        return kernels.width_phases(rows_p, sw, 1), weight, (dh, dw // sw)
    dense = kernels.dilated_weight(weight, (1, dw))
    phases = kernels.width_phases(rows_p, sw, dense.shape[3])  # (c*P, hp, ceil(wp/sw), n)
    return phases, kernels.phase_weight(dense, sw), (dh, 1)


def _conv2d_backward_grouped(grad_rows, grad_b, cache, input_grad: bool):
    """:func:`conv2d_backward` for a forward pass by :func:`_conv2d_forward_grouped`.

    Weight gradient: by the kernels on the kept input (a stride along the width read directly,
    depthwise, or for a batch of 64 or more, ``policy.strided_direct_weight_grad``; a single
    grouped image with stride 1 as its rows end to end), else on the width phases (made here if
    the forward pass read the input directly), mapped back to the taps. Input gradient: the
    forward kernels on the mirrored kernel (stride 1), one phase of the padded input at a time
    (a stride; a dilated kernel written out dense), or, depthwise with a stride, gathered pixel
    by pixel."""
    weight, groups, stride, dilation = (cache["weight"], cache["groups"], cache["stride"],
                                        cache["dilation"])
    depthwise = cache["impl"] == policy.KERNELS_DEPTHWISE
    oc, cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    rows_p, phases = cache["rows_p"], cache["phases"]
    _, _, ow, n = grad_rows.shape
    # a single image with stride 1, grouped: the backward kernels on its rows end to end (the
    # weight gradient 2-2.5x faster than row by row at 8-16 pixels a row, one AMD EPYC core;
    # depthwise no faster, so row by row)
    short_rows = stride == (1, 1) and ow * n < policy.MIN_ROW and not depthwise
    if sw > 1 and phases is None and depthwise:  # read directly
        grad_w = kernels.conv_weight_grad_depthwise_strided(grad_rows, rows_p, weight.shape,
                                                            stride, dilation, groups)
    elif sw > 1 and phases is None and policy.strided_direct_weight_grad(n):
        grad_w = kernels.conv_weight_grad_strided_direct(grad_rows, rows_p, weight.shape, stride,
                                                         dilation, groups)
    elif sw > 1:
        if phases is None:  # the forward pass read the input directly
            phases = _width_split(rows_p, weight, sw, dilation)[0]
        if dw % sw == 0:  # phase 0 alone
            grad_w = kernels.conv_weight_grad(grad_rows, phases, weight.shape, (sh, 1),
                                              (dh, dw // sw), groups, depthwise)
        else:
            kwd = (kw - 1) * dw + 1
            grad_wph = kernels.conv_weight_grad(grad_rows, phases,
                                                (oc, phases.shape[0] // groups, kh,
                                                 -(-kwd // sw)),
                                                (sh, 1), (dh, 1), groups, depthwise)
            grad_w = kernels.phase_weight_grad(grad_wph, (oc, cg, kh, kwd), sw)[..., ::dw]
            grad_w = np.ascontiguousarray(grad_w)
    elif short_rows:  # a single image: its rows end to end
        grad_w = kernels.conv_weight_grad_flat(grad_rows, rows_p, weight.shape, dilation, groups,
                                               depthwise)
    else:
        grad_w = kernels.conv_weight_grad(grad_rows, rows_p, weight.shape, stride, dilation,
                                          groups, depthwise)
    grad_x = None
    if input_grad:
        pads, padded_shape = cache["pads"], cache["padded_shape"]
        (top, bottom), (left, right) = pads
        in_hw = (padded_shape[1] - top - bottom, padded_shape[2] - left - right)
        if depthwise and stride != (1, 1) and policy.depthwise_direct_stride(n):
            grad_x = from_chwn(kernels.conv_input_grad_depthwise(grad_rows, weight, stride,
                                                                 dilation, pads, in_hw, groups))
        elif stride == (1, 1):
            grad_x = from_chwn(kernels.conv_input_grad(grad_rows, weight, dilation, pads, in_hw,
                                                       groups, depthwise, short_rows))
        else:
            grad_x = from_chwn(kernels.conv_input_grad_strided(
                grad_rows, kernels.dilated_weight(weight, dilation), stride, padded_shape,
                groups, depthwise), crop=pads)
    return grad_x, grad_w, grad_b


# -- conv1d ---------------------------------------------------------------------------------------
def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """1-D convolution (cross-correlation) over an NCL batch, as ``torch.nn.functional.conv1d``.

    ``y[n, o, p] = b[o] + sum_{ci, i} w[o, ci, i] * xp[n, g*cg + ci, p*stride + i*dilation]``;
    computed as :func:`conv2d` on a height-1 image with a ``(1, k)`` kernel.

    Args:
        x: input ``(N, C, L)``; weight ``(out_channels, C / groups, k)``; bias ``(out_channels,)``
            or None; stride, padding (int, ``'valid'``, ``'same'``, ``'full'``), dilation, groups
            as in :func:`conv2d`.

    Shape:
        - Input ``(N, C, L)``, output ``(N, out_channels, L_out)`` with
          ``L_out = floor((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``.

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.functional.conv1d.html
    """
    return conv1d_forward(x, weight, bias, stride, padding, dilation, groups)[0]


def conv1d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`conv1d` that also returns the cache for :func:`conv1d_backward`: ``(y, cache)``."""
    x, weight, bias, stride, pads, dilation, groups, (out_len,) = _checked_conv_args(
        "conv1d", 1, x, weight, bias, stride, padding, dilation, groups)
    y, cache = _conv2d_forward(x[:, :, None, :], weight[:, :, None, :], bias, (1, *stride),
                               ((0, 0), *pads), (1, *dilation), groups, (1, out_len), "conv1d")
    return y[:, :, 0, :], cache


def conv1d_backward(grad_out, cache, input_grad: bool = True):
    """Gradients of :func:`conv1d`: ``(grad_x, grad_weight, grad_bias or None)``; ``grad_x`` is
    None with ``input_grad=False``."""
    grad_x, grad_w, grad_b = conv2d_backward(_grad_1d_as_2d(grad_out, cache), cache, input_grad)
    return None if grad_x is None else grad_x[:, :, 0, :], grad_w[:, :, 0, :], grad_b


def _grad_1d_as_2d(grad_out, cache) -> np.ndarray:
    """A conv1d output gradient ``(n, oc, l)``, checked, as the height-1 ``(n, oc, 1, l)``."""
    n, oc, _, length = cache["out_shape"]
    return _check_grad(cache["name"], grad_out, (n, oc, length))[:, :, None, :]


# -- conv_transpose2d -----------------------------------------------------------------------------
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> np.ndarray:
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint (transpose) of :func:`conv2d` with the same weight: every input pixel scatters
    ``x[n, i, p, q] * w[i, co, :, :]`` into the output at ``(p*sh - ph, q*sw - pw)`` with taps
    ``dilation`` apart, and overlapping contributions add up. It is the input gradient of a
    convolution (``W.T @ x`` then col2im), so it expands the spatial size, e.g. for a decoder.

    Args:
        x: input ``(N, C_in, H, W)``; cast to the weight's dtype.
        weight: ``(C_in, C_out / groups, kH, kW)`` (note: in_channels first), float32/float64.
        bias: ``(C_out,)`` or None. Default: None.
        stride: int or pair. Default: 1.
        padding: int or pair: ``dilation*(k-1) - padding`` zeros are (in effect) added to the
            input of the equivalent direct convolution, i.e. ``padding`` is cropped off the
            output. Default: 0.
        output_padding: int or pair, extra size added to one side (bottom/right) of the output,
            smaller than stride or dilation. Default: 0.
        groups: Default: 1. dilation: int or pair. Default: 1.

    Shape:
        - Input ``(N, C_in, H, W)``, output ``(N, C_out, H_out, W_out)`` with
          ``H_out = (H - 1)*sh - 2*ph + dh*(kH-1) + output_padding + 1`` (likewise W_out).

    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.functional.conv_transpose2d.html
    """
    return conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups,
                                    dilation)[0]


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                             groups=1, dilation=1):
    """:func:`conv_transpose2d` that also returns the cache for the backward: ``(y, cache)``."""
    name = "conv_transpose2d"
    weight = _check_weight(name, weight, 4, "(in_channels, out_channels/groups, kH, kW)")
    x = _check_input(name, x, 4, "(N, C, H, W)", weight.dtype)
    stride, dilation = ntuple(stride, 2, "stride"), ntuple(dilation, 2, "dilation")
    _check_positive(name, stride=stride, dilation=dilation)
    output_padding = check_output_padding(name, output_padding, stride, dilation)
    if isinstance(padding, str):
        raise ArgumentError(f"{name}: padding must be an int or a pair of ints (PyTorch has no "
                            f"string padding for transposed convolutions), got {padding!r}")
    pads = resolve_padding(padding, weight.shape[2:], dilation, stride)
    groups = _check_groups(name, groups, weight.shape[0], "in_channels (weight.shape[0])")
    _check_channels(name, x.shape, weight.shape[0], "(N, C, H, W)", f" (weight {weight.shape})")
    bias = _check_bias(name, bias, weight.shape[1] * groups, weight.dtype)
    out_hw = transposed_output_size(name, x.shape, weight.shape[2:], stride, pads, dilation,
                                    output_padding)
    return _conv_transpose2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw, name)


def check_output_padding(name: str, output_padding, stride, dilation) -> tuple[int, int]:
    """``output_padding`` as a pair; each must be smaller than the stride or the dilation."""
    output_padding = ntuple(output_padding, len(stride), "output_padding")
    for extra, s, d in zip(output_padding, stride, dilation):
        if extra < 0 or (extra >= s and extra >= d):
            raise ArgumentError(f"{name}: output_padding must be non-negative and smaller than "
                                f"either stride or dilation, got output_padding={output_padding}, "
                                f"stride={stride}, dilation={dilation}")
    return output_padding


def _conv_transpose2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw,
                              name="conv_transpose2d"):
    """conv_transpose2d on checked arguments: the input gradient of a convolution."""
    (top, bottom), (left, right) = pads
    padded_shape = (weight.shape[1] * groups, out_hw[0] + top + bottom,
                    out_hw[1] + left + right, x.shape[0])
    x_rows = to_chwn(x)  # (c_in, h, w, n)
    if np.may_share_memory(x_rows, x):
        x_rows = x_rows.copy()  # kept for backward: later changes to x must not reach it
    out_rows_p = _correlate_backward(x_rows, weight, groups, stride, dilation, padded_shape)
    y = from_chwn(out_rows_p, bias, crop=pads)  # (n, c_out, h_out, w_out)
    cache = dict(name=name, impl=policy.NUMPY, x_rows=x_rows, weight=weight, pads=pads, stride=stride,
                 dilation=dilation, groups=groups, has_bias=bias is not None, out_shape=y.shape)
    return y, cache


def conv_transpose2d_backward(grad_out, cache):
    """Gradients of :func:`conv_transpose2d`: ``(grad_x, grad_weight, grad_bias or None)``.

    ``grad_x`` is the direct convolution of ``grad_out`` with the same weight (the adjoint of
    the adjoint), and ``grad_weight`` the convolution's weight gradient with the roles of input
    and output gradient exchanged.
    """
    weight, groups, x_rows = cache["weight"], cache["groups"], cache["x_rows"]
    grad_out = _check_grad(cache["name"], grad_out, cache["out_shape"])
    grad_rows_p = to_chwn(grad_out, cache["pads"], dtype=weight.dtype)  # (c_out, hp, wp, n)
    grad_x_rows, grad_w, _ = _correlate(grad_rows_p, weight, groups, cache["stride"],
                                        cache["dilation"], x_rows.shape[1:3], grad_rows=x_rows)
    grad_b = None
    if cache["has_bias"]:  # the padding is zeros, so summing it changes nothing
        grad_b = grad_rows_p.reshape(grad_rows_p.shape[0], -1).sum(axis=1)
    return from_chwn(grad_x_rows), grad_w, grad_b
