"""Pooling over NCHW maps: max, average, power-average (L_p), adaptive and global pooling.

Notation (as in :mod:`._windows`): ``n, c`` batch and channels; ``h, w`` input height and width;
``kh, kw`` kernel; ``sh, sw`` stride; ``ph, pw`` padding; ``dh, dw`` dilation; ``oh, ow`` output.

A pooling window slides as a convolution kernel does, so the output size is PyTorch's::

    out = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1

and with ``ceil_mode=True`` the floor becomes a ceiling, except that a last window starting in
the right padding is dropped. ``padding`` may be at most half the kernel size (as in PyTorch):
max pooling pads with ``-inf``, average pooling with zeros.

Which input a max-pool output comes from (its index, and where its gradient goes) is chosen as
PyTorch's CPU kernels choose it: the window is scanned row by row and a value must be strictly
greater than the maximum so far to replace it, so among tied maxima the first in scan order wins;
a window holding NaN has maximum NaN and its winner is the *last* NaN; a window of nothing but
``-inf`` picks its first position inside the input. ``split_ties=True`` instead divides the
gradient evenly among all tied maxima of a window.

Every operation ``op`` comes as ``op(...)`` (the output, same signature as
``torch.nn.functional.op``), ``op_forward(...) -> (output, cache)`` and
``op_backward(grad_out, cache) -> grad_input``.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ArgumentError, DTypeError, NumcnnError, ShapeError
from . import kernels
from ._windows import (check_input, col2im, formula, is_batch_last, new_map, out_size, pad2d,
                       pad2d_backward, pair, to_layout, windows)

__all__ = [
    "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_forward", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_forward", "lp_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_forward", "global_avg_pool2d_backward",
    "global_max_pool2d", "global_max_pool2d_forward", "global_max_pool2d_backward",
    "pool2d_output_size", "adaptive_output_size",
]


# -- arguments, shapes and errors --------------------------------------------------------------
def _check_map(x, name: str) -> np.ndarray:
    """``x`` as a floating-point (n, c, h, w) array, else a ShapeError or DTypeError naming it."""
    x = check_input(x, 4, name, "(N, C, H, W)")
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(f"{name}: expected a floating-point input (float32 or float64), "
                         f"got dtype {x.dtype}")
    return x


def _pool_args(name: str, kernel_size, stride, padding, dilation=1):
    """Kernel, stride, padding and dilation as checked pairs (stride defaults to the kernel)."""
    kernel = pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    else:
        stride = pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    for label, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                               ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(values) < low:
            raise ArgumentError(f"{name}: {label} must be {'positive' if low else 'non-negative'}, "
                                f"got {values}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ArgumentError(f"{name}: padding should be at most half of the kernel size, got "
                            f"padding={padding} for kernel_size={kernel}")
    return kernel, stride, padding, dilation


def pool2d_output_size(name: str, shape, kernel, stride, padding, dilation=(1, 1),
                       ceil_mode: bool = False) -> tuple[int, int]:
    """(oh, ow) of a pooling window over an (n, c, h, w) ``shape``; ShapeError if it is empty."""
    if len(shape) != 4:
        raise ShapeError(f"{name}: expected a 4-D input (N, C, H, W), got shape {tuple(shape)}")
    sizes = []
    for axis, size, k, s, p, d in zip(("height", "width"), shape[2:], kernel, stride, padding,
                                      dilation):
        out = out_size(size, k, s, p, p, d, ceil_mode)
        if out < 1:
            raise ShapeError(
                f"{name}: input of shape {tuple(shape)} is smaller than the pooling window "
                f"(kernel_size={tuple(kernel)}, stride={tuple(stride)}, padding={tuple(padding)}, "
                f"dilation={tuple(dilation)}{', ceil_mode=True' if ceil_mode else ''}); along the "
                f"{axis}: {formula(size, k, s, p, p, d)}")
        sizes.append(out)
    return tuple(sizes)


def _pads(size: int, k: int, s: int, p: int, d: int, out: int) -> tuple[int, int]:
    """(lo, hi) padding along one axis so that all ``out`` windows fit (ceil_mode may need more
    than ``p`` at the end)."""
    needed = (out - 1) * s + d * (k - 1) + 1
    return p, max(p, needed - size - p)


def _is_blocks(shape, kernel, stride, padding, dilation, out_hw) -> bool:
    """Whether the windows are the non-overlapping kh x kw blocks of the (cropped) input."""
    return (stride == kernel and padding == (0, 0) and dilation == (1, 1)
            and out_hw[0] * kernel[0] <= shape[2] and out_hw[1] * kernel[1] <= shape[3])


def _blocks(x: np.ndarray, kernel, out_hw, writeable: bool = False) -> np.ndarray:
    """(n, c, oh, kh, ow, kw) view of the non-overlapping blocks of ``x``; rows and columns past
    ``oh*kh``, ``ow*kw`` are left out. No data is copied."""
    (kh, kw), (oh, ow) = kernel, out_hw
    n, c, h, w = x.shape
    if oh * kh == h and ow * kw == w and x.flags.c_contiguous:
        return x.reshape(n, c, oh, kh, ow, kw)  # the same view, built without as_strided's cost
    s_n, s_c, s_h, s_w = x.strides
    return as_strided(x, shape=(x.shape[0], x.shape[1], oh, kh, ow, kw),
                      strides=(s_n, s_c, kh * s_h, s_h, kw * s_w, s_w), writeable=writeable)


def _check_grad(grad_out, cache, name: str) -> np.ndarray:
    """``grad_out`` as an array of the forward output's shape, or a ShapeError."""
    grad_out = np.asarray(grad_out)
    expected = cache.get("out_shape")
    if expected is None:  # lp_pool2d: the shape is in the cache it wraps
        expected = (cache.get("avg_cache") or cache.get("max_cache"))["out_shape"]
    if grad_out.shape != tuple(expected):
        raise ShapeError(f"{name}: grad_out has shape {grad_out.shape}, expected the shape of the "
                         f"forward output {tuple(expected)}")
    return grad_out


def _route(grad: np.ndarray, hit: np.ndarray, out: np.ndarray, finite: bool) -> None:
    """``out = grad where hit, else 0``. A product with the mask runs without branches (np.where
    on a random mask is several times slower) and is exact while ``grad`` is finite."""
    if finite:
        np.multiply(grad, hit, out=out)
    else:
        out[...] = np.where(hit, grad, 0)


# -- max pooling ----------------------------------------------------------------------------------
def _running_max(candidates: list[np.ndarray], need_arg: bool):
    """Element-wise maximum of same-shaped arrays, and (``need_arg``) which one won.

    ``candidates`` are the positions of a window in PyTorch's scan order. The winner follows
    PyTorch's CPU kernels: the first maximum (a later value must be strictly greater), or, where
    the maximum is NaN, the last NaN. Returns ``(maximum, arg)``, ``arg`` an unsigned int array.
    """
    first = candidates[0]
    # zeros_like keeps the memory order of the candidates (NCHW or batch last)
    arg = np.zeros_like(first, np.min_scalar_type(len(candidates) - 1)) if need_arg else None
    if len(candidates) == 1:
        return first.copy(), arg
    best = None
    for k, value in enumerate(candidates[1:], start=1):
        current = first if best is None else best
        if need_arg:
            # k exceeds every index recorded so far, so "k where value wins, else keep" is a
            # maximum: branch-free, unlike np.where / copyto(where=) on a random mask
            np.maximum(arg, np.multiply(value > current, k, dtype=arg.dtype), out=arg)
        best = np.maximum(first, value) if best is None else np.maximum(best, value, out=best)
    if need_arg:
        nan_windows = np.isnan(best)  # NaN propagates through np.maximum
        if nan_windows.any():
            for k, value in enumerate(candidates):
                np.copyto(arg, k, where=nan_windows & np.isnan(value))
    return best, arg


def _is_plain(value) -> bool:
    """An int, ``None`` or a tuple of ints: a value that hashes only like itself."""
    kind = type(value)
    return (value is None or kind is int or kind is bool
            or (kind is tuple and all(type(v) is int for v in value)))


@functools.lru_cache(maxsize=256)
def _geometry_cached(name, shape, kernel_size, stride, padding, dilation, ceil_mode):
    kernel, stride, padding, dilation = _pool_args(name, kernel_size, stride, padding, dilation)
    out_hw = pool2d_output_size(name, shape, kernel, stride, padding, dilation, ceil_mode)
    return kernel, stride, padding, dilation, out_hw


def _geometry(name, shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Checked ``(kernel, stride, padding, dilation, out_hw)`` of a pooling call.

    Layers ask this on every forward with the same arguments, so plain (int/tuple) arguments
    are checked once and the answer cached; a float ``2.0`` must not share the cache entry of
    ``2`` (the check rejects it), hence the plainness test. Errors are raised, never cached.
    """
    args = (name, shape, kernel_size, stride, padding, dilation, ceil_mode)
    if all(_is_plain(value) for value in args[2:]):
        return _geometry_cached(*args)
    return _geometry_cached.__wrapped__(*args)


def _max_pool_args(name, x, kernel_size, stride, padding, dilation, ceil_mode):
    x = _check_map(x, name)
    kernel, stride, padding, dilation, out_hw = _geometry(
        name, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return x, kernel, stride, padding, dilation, out_hw


def _max_pool(x, kernel, stride, padding, dilation, out_hw, need_arg: bool, split_ties=False,
              use_kernels: bool = True):
    """Output of max pooling and the cache of its backward pass (winner codes if ``need_arg``).
    ``use_kernels``: the compiled kernel may be used (it keeps winners in its own form)."""
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    pads = tuple(_pads(size, k, s, p, d, o) for size, k, s, p, d, o
                 in zip((h, w), kernel, stride, padding, dilation, out_hw))
    cache = dict(x_shape=x.shape, out_shape=(n, c, oh, ow), kernel=kernel, stride=stride,
                 padding=padding, dilation=dilation, pads=pads, split_ties=split_ties,
                 batch_last=is_batch_last(x))
    blocks = _is_blocks(x.shape, kernel, stride, padding, dilation, out_hw)
    if blocks and use_kernels and not split_ties and kernels.max_pool_applies(x, kernel):
        # the compiled kernel: blocks of a batch-last map, winner codes kept (uint8)
        out, arg = kernels.max_pool_blocks(x, kernel, out_hw, need_arg)
        cache.update(path="kernels", arg=arg)
    elif blocks:
        # Fast path: maximum over the kw columns of each kernel row, then over the kh rows.
        # Columns first keeps PyTorch's row-by-row scan order for ties; the column stage reads
        # the input once, with strides NumPy merges into one long loop.
        blocks = _blocks(x, kernel, out_hw)  # (n, c, oh, kh, ow, kw)
        row_max, col_arg = _running_max([blocks[..., j] for j in range(kw)], need_arg)
        out, row_arg = _running_max([row_max[:, :, :, i] for i in range(kh)], need_arg)
        cache.update(path="blocks", row_arg=row_arg, col_arg=col_arg)
        if need_arg:
            cache.update(winner=_winner_mask(x, kernel, out_hw, row_arg, col_arg))
    else:
        xp = pad2d(x, pads, mode="constant", value=-np.inf)
        cols = windows(xp, kernel, stride, dilation, out_hw)  # (n, c, kh, kw, oh, ow)
        out, arg = _running_max([cols[:, :, i, j] for i in range(kh) for j in range(kw)],
                                need_arg)
        if need_arg and padding != (0, 0):
            # a window of nothing but -inf: PyTorch keeps its first position inside the input
            empty = np.isneginf(out)
            if empty.any():
                lead_h = _leading_padding(oh, stride[0], padding[0], dilation[0])
                lead_w = _leading_padding(ow, stride[1], padding[1], dilation[1])
                first = (lead_h[:, None] * kw + lead_w[None, :]).astype(arg.dtype)  # (oh, ow)
                np.copyto(arg, np.broadcast_to(first, out.shape), where=empty)
        cache.update(path="windows", arg=arg)
    if split_ties:
        cache.update(x=x, out=out)
    return out, cache


def _winner_mask(x, kernel, out_hw, row_arg, col_arg) -> np.ndarray:
    """Boolean map of the shape and layout of ``x``, true at each block's winning position:
    ``winner[n, c, y*kh + i, x*kw + j] = (row_arg == i) & (col_arg[..., i, :] == j)``. The
    backward pass is then one product of the mask with the upsampled gradient."""
    (kh, kw), (oh, ow) = kernel, out_hw
    n, c, h, w = x.shape
    winner = new_map(x.shape, np.bool_, is_batch_last(x), zeros=oh * kh < h or ow * kw < w)
    blocks = _blocks(winner, kernel, out_hw, writeable=True)  # (n, c, oh, kh, ow, kw)
    for i in range(kh):
        row_won = row_arg == i
        for j in range(kw):
            np.logical_and(row_won, col_arg[:, :, :, i] == j, out=blocks[:, :, :, i, :, j])
    return winner


def _leading_padding(out: int, s: int, p: int, d: int) -> np.ndarray:
    """Per window, how many of its kernel offsets fall in the leading padding: ceil((p - y*s)/d)."""
    start = np.arange(out) * s - p
    return np.where(start < 0, (-start + d - 1) // d, 0)


def _max_indices(cache) -> np.ndarray:
    """PyTorch's indices: the flat position ``h*W + w`` of each maximum in its input plane."""
    w = cache["x_shape"][3]
    (kh, kw), stride, padding, dilation = (cache["kernel"], cache["stride"], cache["padding"],
                                           cache["dilation"])
    if cache["path"] == "blocks":
        row_arg, col_arg = cache["row_arg"], cache["col_arg"]
        oh, ow = row_arg.shape[2:]
        col = np.take_along_axis(col_arg, row_arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
        rows = np.arange(oh)[:, None] * kh + row_arg.astype(np.int64)  # (n, c, oh, ow)
        return rows * w + np.arange(ow) * kw + col
    arg = cache["arg"].astype(np.int64)
    oh, ow = arg.shape[2:]
    rows = (np.arange(oh) * stride[0] - padding[0])[:, None] + (arg // kw) * dilation[0]
    cols = (np.arange(ow) * stride[1] - padding[1]) + (arg % kw) * dilation[1]
    return rows * w + cols


def _max_pool2d_forward(name, x, kernel_size, stride, padding, dilation, ceil_mode,
                        return_indices, split_ties, need_grad):
    x, kernel, stride, padding, dilation, out_hw = _max_pool_args(
        name, x, kernel_size, stride, padding, dilation, ceil_mode)
    need_arg = return_indices or (need_grad and not split_ties)
    out, cache = _max_pool(x, kernel, stride, padding, dilation, out_hw, need_arg, split_ties,
                           use_kernels=not return_indices)
    if return_indices:
        return (out, _max_indices(cache)), cache
    return out, cache


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False, split_ties=False):
    """Max pooling; returns ``(out, cache)``, or ``((out, indices), cache)`` with
    ``return_indices``. See :func:`max_pool2d`."""
    return _max_pool2d_forward("max_pool2d", x, kernel_size, stride, padding, dilation,
                               ceil_mode, return_indices, split_ties, need_grad=True)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, split_ties=False):
    r"""2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    .. math::
        \text{out}(n, c, y, x) = \max_{i < k_h,\ j < k_w}
            \text{input}(n, c,\ s_h y + d_h i - p_h,\ s_w x + d_w j - p_w)

    Args:
        x: input of shape (N, C, H, W), float32 or float64.
        kernel_size: window size, int or (kh, kw).
        stride: step of the window; default ``kernel_size``.
        padding: implicit ``-inf`` padding on both sides, at most ``kernel_size // 2``. Default 0.
        dilation: spacing between window elements (1: none). Default 1.
        ceil_mode: use ceil instead of floor in the output size. Default False.
        return_indices: also return the flat index ``h*W + w`` of each maximum in its input
            plane, as PyTorch does (int64). Default False.
        split_ties: numcnn only; changes the backward pass alone (see :func:`max_pool2d_backward`).

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out), ``H_out = floor((H + 2*padding[0] -
        dilation[0]*(kernel_size[0]-1) - 1) / stride[0]) + 1`` (ceil with ``ceil_mode``).

    https://pytorch.org/docs/stable/generated/torch.nn.functional.max_pool2d.html
    """
    return _max_pool2d_forward("max_pool2d", x, kernel_size, stride, padding, dilation,
                               ceil_mode, return_indices, split_ties, need_grad=False)[0]


def max_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of max pooling with respect to its input.

    Each output sends its gradient to the input it took its maximum from, where PyTorch sends it
    (the first of tied maxima, the last NaN); inputs picked by several overlapping windows add
    the gradients up. With ``split_ties`` each output divides its gradient evenly among all
    positions of its window equal to the maximum (all NaNs, for a NaN window), as in the course
    notes; a window of nothing but ``-inf`` splits it among its positions inside the input.
    A window holding no input pixel at all (possible with dilation) outputs ``-inf`` and drops
    its gradient (PyTorch 2.x gives it an index past the plane and writes out of bounds there).
    """
    grad_out = _check_grad(grad_out, cache, "max_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    (kh, kw), stride, dilation, pads = (cache["kernel"], cache["stride"], cache["dilation"],
                                        cache["pads"])
    oh, ow = grad_out.shape[2:]
    if cache["path"] == "kernels":
        if cache["arg"] is None:
            raise NumcnnError("max_pool2d_backward: the forward pass kept no winners (it ran "
                              "without gradients, e.g. under numcnn.no_grad())")
        return kernels.max_pool_blocks_backward(grad_out, cache["arg"], (n, c, h, w), (kh, kw))
    finite = bool(np.isfinite(grad_out).all())
    if cache["path"] == "blocks" and not cache["split_ties"]:
        # each block's gradient goes to its winner: mask * the gradient repeated over the block
        grad_out = to_layout(grad_out, cache["batch_last"])  # that of the input and the mask
        cropped = oh * kh < h or ow * kw < w
        grad_x = new_map((n, c, h, w), grad_out.dtype, cache["batch_last"], zeros=cropped)
        grad_blocks = _blocks(grad_x, (kh, kw), (oh, ow), writeable=True)  # (n,c,oh,kh,ow,kw)
        winner = _blocks(cache["winner"], (kh, kw), (oh, ow))
        _route(grad_out[:, :, :, None, :, None], winner, grad_blocks, finite)
        return grad_x

    cols = np.empty((n, c, kh, kw, oh, ow), grad_out.dtype)
    if cache["split_ties"]:
        _split_ties(grad_out, cache, cols, finite)
    else:
        arg = cache["arg"]
        for k in range(kh * kw):
            _route(grad_out, arg == k, cols[:, :, k // kw, k % kw], finite)
    (top, bottom), (left, right) = pads
    grad_xp = col2im(cols, (n, c, h + top + bottom, w + left + right), stride, dilation)
    grad_x = new_map((n, c, h, w), grad_out.dtype, cache["batch_last"])
    grad_x[...] = pad2d_backward(grad_xp, pads, mode="zeros")
    return grad_x


def _split_ties(grad_out, cache, cols, finite: bool) -> None:
    """Fill ``cols`` (n, c, kh, kw, oh, ow) with each output's gradient split among its ties."""
    x, out, pads = cache["x"], cache["out"], cache["pads"]
    (kh, kw), stride, dilation = cache["kernel"], cache["stride"], cache["dilation"]
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    xp = pad2d(x, pads, mode="constant", value=-np.inf)
    windows_x = windows(xp, (kh, kw), stride, dilation, (oh, ow))  # (n, c, kh, kw, oh, ow)
    nan_out, neginf_out = np.isnan(out), np.isneginf(out)
    any_nan, any_neginf = nan_out.any(), neginf_out.any()
    if any_neginf:  # in a -inf window only the positions inside the input tie
        rows = (np.arange(oh) * stride[0] - pads[0][0])[None, :] \
            + (np.arange(kh) * dilation[0])[:, None]  # (kh, oh)
        columns = (np.arange(ow) * stride[1] - pads[1][0])[None, :] \
            + (np.arange(kw) * dilation[1])[:, None]  # (kw, ow)
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((columns >= 0) & (columns < w))[None, :, None, :])  # (kh, kw, oh, ow)
    count = np.zeros(out.shape, out.dtype)
    for i in range(kh):
        for j in range(kw):
            tied = windows_x[:, :, i, j] == out
            if any_nan:
                tied |= nan_out & np.isnan(windows_x[:, :, i, j])
            if any_neginf:
                tied &= ~neginf_out | inside[i, j]
            cols[:, :, i, j] = tied
            count += tied
    share = np.divide(grad_out, count, out=np.zeros_like(count), where=count > 0)
    if finite:
        cols *= share[:, :, None, None]
    else:
        cols[...] = np.where(cols != 0, share[:, :, None, None], 0)


# -- average pooling ------------------------------------------------------------------------------
def _avg_divisor(size: int, k: int, s: int, p: int, out: int, count_include_pad: bool):
    """Per output along one axis, how many window positions PyTorch divides by.

    The window ``[y*s - p, y*s - p + k)`` is first cut at the end of the padding, then (without
    ``count_include_pad``) at the borders of the input.
    """
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_pool_args(name, x, kernel_size, stride, padding, ceil_mode, divisor_override):
    x = _check_map(x, name)
    kernel, stride, padding, dilation, out_hw = _geometry(
        name, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise ArgumentError(f"{name}: divisor_override must be non-zero, got {divisor_override}")
    return x, kernel, stride, padding, out_hw


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """Average pooling; returns ``(out, cache)``. See :func:`avg_pool2d`."""
    return _avg_pool2d_forward("avg_pool2d", x, kernel_size, stride, padding, ceil_mode,
                               count_include_pad, divisor_override)


def _avg_pool2d_forward(name, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    x, kernel, stride, padding, out_hw = _avg_pool_args(
        name, x, kernel_size, stride, padding, ceil_mode, divisor_override)
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    pads = tuple(_pads(size, k, s, p, 1, o) for size, k, s, p, o
                 in zip((h, w), kernel, stride, padding, out_hw))
    if _is_blocks(x.shape, kernel, stride, padding, (1, 1), out_hw):
        # fast path: sum the kw columns of each kernel row, then the kh rows
        blocks = _blocks(x, kernel, out_hw)  # (n, c, oh, kh, ow, kw)
        row_sum = _running_sum([blocks[..., j] for j in range(kw)])  # (n, c, oh, kh, ow)
        out = _running_sum([row_sum[:, :, :, i] for i in range(kh)])  # (n, c, oh, ow)
        path = "blocks"
    else:
        xp = pad2d(x, pads, mode="zeros")
        cols = windows(xp, kernel, stride, (1, 1), out_hw)  # (n, c, kh, kw, oh, ow)
        out = _running_sum([cols[:, :, i, j] for i in range(kh) for j in range(kw)])
        path = "windows"
    if divisor_override is not None:
        divisor = np.asarray(divisor_override, dtype=x.dtype)
    else:
        div_h, div_w = (_avg_divisor(size, k, s, p, o, count_include_pad) for size, k, s, p, o
                        in zip((h, w), kernel, stride, padding, out_hw))
        divisor = (div_h[:, None] * div_w[None, :]).astype(x.dtype)  # (oh, ow)
    out /= divisor
    cache = dict(path=path, x_shape=x.shape, out_shape=out.shape, kernel=kernel, stride=stride,
                 pads=pads, divisor=divisor)
    return out, cache


def _running_sum(terms: list[np.ndarray]) -> np.ndarray:
    total = terms[0].copy() if len(terms) == 1 else np.add(terms[0], terms[1])
    for term in terms[2:]:
        np.add(total, term, out=total)
    return total


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> np.ndarray:
    r"""2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    .. math::
        \text{out}(n, c, y, x) = \frac{1}{D(y, x)} \sum_{i < k_h,\ j < k_w}
            \text{input}(n, c,\ s_h y + i - p_h,\ s_w x + j - p_w)

    with zero padding. The divisor ``D`` is ``divisor_override`` if given; otherwise the number
    of window positions inside the padded input (``count_include_pad=True``; with ``ceil_mode``
    a window reaching past the padding counts only the part inside it) or inside the input
    itself (``count_include_pad=False``).

    Args:
        x: input of shape (N, C, H, W).
        kernel_size: window size, int or (kh, kw).
        stride: default ``kernel_size``.
        padding: zero padding on both sides, at most ``kernel_size // 2``. Default 0.
        ceil_mode: ceil instead of floor in the output size. Default False.
        count_include_pad: count the zero padding in the divisor. Default True.
        divisor_override: divide every sum by this number instead. Default None.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out), ``H_out = floor((H + 2*padding[0] -
        kernel_size[0]) / stride[0]) + 1`` (ceil with ``ceil_mode``).

    https://pytorch.org/docs/stable/generated/torch.nn.functional.avg_pool2d.html
    """
    return avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)[0]


def avg_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of average pooling: each output's gradient, divided by its divisor, goes back to
    every position of its window (``col2im`` of the broadcast gradient), padding cropped."""
    grad_out = _check_grad(grad_out, cache, "avg_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    (kh, kw), stride, pads = cache["kernel"], cache["stride"], cache["pads"]
    oh, ow = grad_out.shape[2:]
    share = grad_out / cache["divisor"]
    if cache["path"] == "blocks":
        cropped = oh * kh < h or ow * kw < w
        grad_x = (np.zeros if cropped else np.empty)((n, c, h, w), share.dtype)
        grad_blocks = _blocks(grad_x, (kh, kw), (oh, ow), writeable=True)  # (n,c,oh,kh,ow,kw)
        for j in range(kw):
            grad_blocks[..., j] = share[:, :, :, None, :]
        return grad_x
    cols = np.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))  # no copy
    (top, bottom), (left, right) = pads
    grad_xp = col2im(cols, (n, c, h + top + bottom, w + left + right), stride, (1, 1))
    return np.ascontiguousarray(pad2d_backward(grad_xp, pads, mode="zeros"))


# -- power-average (L_p) pooling ------------------------------------------------------------------
def lp_pool2d_forward(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling; returns ``(out, cache)``. See :func:`lp_pool2d`."""
    return _lp_pool2d_forward("lp_pool2d", x, norm_type, kernel_size, stride, ceil_mode)


def _lp_norm_type(name: str, norm_type) -> float:
    p = float(norm_type)
    if p == 0 or np.isnan(p):
        raise ArgumentError(f"{name}: norm_type must be a non-zero number, got {norm_type}")
    return p


def _lp_pool2d_forward(name, x, norm_type, kernel_size, stride, ceil_mode):
    x = _check_map(x, name)
    p = _lp_norm_type(name, norm_type)
    if np.isinf(p):
        # PyTorch: p = inf is max pooling of |x|, p = -inf is minus the max pooling of -|x|
        sign = 1.0 if p > 0 else -1.0
        pooled, cache = _max_pool2d_forward(name, sign * np.abs(x), kernel_size, stride,
                                            0, 1, ceil_mode, False, False, need_grad=True)
        return sign * pooled, dict(p=p, sign_x=np.sign(x), max_cache=cache)
    kernel = pair(kernel_size, "kernel_size")
    with np.errstate(invalid="ignore"):  # x^p of a negative x: NaN, silently, as in PyTorch
        mean, avg_cache = _avg_pool2d_forward(name, x ** p, kernel, stride, 0, ceil_mode, True,
                                              None)
        total = mean * (kernel[0] * kernel[1])
        out = total ** (1.0 / p)
    return out, dict(p=p, x=x, mean=mean, total=total, out=out, avg_cache=avg_cache,
                     window=kernel[0] * kernel[1])


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False) -> np.ndarray:
    r"""2-D power-average pooling, as ``torch.nn.functional.lp_pool2d``.

    .. math::
        \text{out}(n, c, y, x) = \Big(\sum_{(i, j) \in \text{window}} \text{input}^p\Big)^{1/p}

    ``p = 2`` is L2 pooling; ``p = inf`` is max pooling of ``|x|``. As in PyTorch the sum is an
    average times ``kh*kw``, so with ``ceil_mode`` a window cut off at the border is scaled up
    to the full window, and where the sum is zero the gradient is zero.

    Args:
        x: input of shape (N, C, H, W).
        norm_type: the exponent ``p``.
        kernel_size: window size, int or (kh, kw).
        stride: default ``kernel_size``.
        ceil_mode: ceil instead of floor in the output size. Default False.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out), ``H_out = floor((H - kernel_size[0])
        / stride[0]) + 1`` (ceil with ``ceil_mode``).

    https://pytorch.org/docs/stable/generated/torch.nn.functional.lp_pool2d.html
    """
    return lp_pool2d_forward(x, norm_type, kernel_size, stride, ceil_mode)[0]


def lp_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of power-average pooling, by the chain rule through PyTorch's definition:
    ``out = (kh*kw * avg_pool(x^p))^(1/p)``, with the gradient set to zero where the sum is 0."""
    grad_out = _check_grad(grad_out, cache, "lp_pool2d_backward")
    p = cache["p"]
    if np.isinf(p):
        return max_pool2d_backward(grad_out, cache["max_cache"]) * cache["sign_x"]
    total, mean = cache["total"], cache["mean"]
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_mean = grad_out * (1.0 / p) * total ** (1.0 / p - 1.0) * cache["window"]
        grad_mean[mean == 0] = 0
        grad_power = avg_pool2d_backward(grad_mean, cache["avg_cache"])
        return grad_power * p * cache["x"] ** (p - 1.0)


# -- adaptive pooling -----------------------------------------------------------------------------
def adaptive_output_size(name: str, shape, output_size) -> tuple[int, int]:
    """(oh, ow) of adaptive pooling; an entry None keeps that input size."""
    if len(shape) != 4:
        raise ShapeError(f"{name}: expected a 4-D input (N, C, H, W), got shape {tuple(shape)}")
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size, output_size)
    output_size = tuple(output_size)
    if len(output_size) != 2:
        raise ArgumentError(f"{name}: output_size must be an int or a pair (entries int or None), "
                            f"got {output_size!r}")
    sizes = tuple(int(size) if out is None else out for size, out in zip(shape[2:], output_size))
    if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
        raise ArgumentError(f"{name}: output_size entries must be positive ints or None, "
                            f"got {output_size!r}")
    if shape[2] < 1 or shape[3] < 1:
        raise ShapeError(f"{name}: input of shape {tuple(shape)} has an empty plane")
    return int(sizes[0]), int(sizes[1])


def _uniform_bins(shape, out_hw):
    """The kernel (= stride) when every bin is a block of the same size (the output size divides
    the input size): adaptive pooling is then ordinary pooling, fast path included."""
    (h, w), (oh, ow) = shape[2:], out_hw
    return (h // oh, w // ow) if h % oh == 0 and w % ow == 0 else None


def _bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins: ``start = floor(i*size/out)``, ``end = ceil((i+1)*size/out)``."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _average_matrix(size: int, out: int, dtype) -> np.ndarray:
    """The (out, size) matrix whose row i averages bin i."""
    start, end = _bins(size, out)
    pixel = np.arange(size)
    inside = (pixel >= start[:, None]) & (pixel < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _sandwich(left: np.ndarray, x: np.ndarray, right_t: np.ndarray) -> np.ndarray:
    """``left @ plane @ right_t`` for every (h, w) plane of an (n, c, h, w) array."""
    n, c, h, w = x.shape
    with kernels.blas_one_thread(x.dtype):  # beside the kernels (see there)
        y = (x.reshape(-1, w) @ right_t).reshape(n, c, h, right_t.shape[1])  # (n, c, h, ow)
        return np.matmul(left, y)  # (n, c, oh, ow)


def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling; returns ``(out, cache)``. See :func:`adaptive_avg_pool2d`."""
    return _adaptive_avg_pool2d_forward("adaptive_avg_pool2d", x, output_size)


def _adaptive_avg_pool2d_forward(name, x, output_size):
    x = _check_map(x, name)
    oh, ow = adaptive_output_size(name, x.shape, output_size)
    kernel = _uniform_bins(x.shape, (oh, ow))
    if kernel is not None:
        return _avg_pool2d_forward(name, x, kernel, kernel, 0, False, True, None)
    average_h = _average_matrix(x.shape[2], oh, x.dtype)  # (oh, h)
    average_w = _average_matrix(x.shape[3], ow, x.dtype)  # (ow, w)
    out = _sandwich(average_h, np.ascontiguousarray(x), average_w.T)
    return out, dict(out_shape=out.shape, average_h=average_h, average_w=average_w)


def adaptive_avg_pool2d(x, output_size) -> np.ndarray:
    r"""2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output row ``i`` averages input rows ``floor(i*H/H_out)`` to ``ceil((i+1)*H/H_out) - 1``
    (bins may overlap), and likewise for columns. Averaging is linear and separable, so
    ``out = A_h @ plane @ A_w^T`` with ``A_h[i, r] = 1/len(bin i)`` for ``r`` in bin ``i``, and the
    gradient is ``A_h^T @ grad @ A_w``.

    Args:
        x: input of shape (N, C, H, W).
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out).

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveAvgPool2d.html
    """
    return adaptive_avg_pool2d_forward(x, output_size)[0]


def adaptive_avg_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Gradient of adaptive average pooling: ``A_h^T @ grad_out @ A_w`` per plane."""
    grad_out = _check_grad(grad_out, cache, "adaptive_avg_pool2d_backward")
    if "average_h" not in cache:  # the bins were uniform blocks
        return avg_pool2d_backward(grad_out, cache)
    grad_out = np.ascontiguousarray(grad_out)
    return _sandwich(cache["average_h"].T, grad_out, cache["average_w"])


def _bin_positions(size: int, out: int) -> np.ndarray:
    """(out, K) positions of each bin, K the longest bin; positions past a bin's end are
    ``size``, where the caller appends a -inf pixel."""
    start, end = _bins(size, out)
    positions = start[:, None] + np.arange(int((end - start).max()))
    positions[positions >= end[:, None]] = size
    return positions


def adaptive_max_pool2d_forward(x, output_size, return_indices=False):
    """Adaptive max pooling; returns ``(out, cache)`` or ``((out, indices), cache)``."""
    return _adaptive_max_pool2d_forward("adaptive_max_pool2d", x, output_size, return_indices,
                                        need_grad=True)


def _adaptive_max_pool2d_forward(name, x, output_size, return_indices, need_grad):
    x = _check_map(x, name)
    n, c, h, w = x.shape
    oh, ow = adaptive_output_size(name, x.shape, output_size)
    kernel = _uniform_bins(x.shape, (oh, ow))
    if kernel is not None:
        return _max_pool2d_forward(name, x, kernel, kernel, 0, 1, False, return_indices, False,
                                   need_grad)
    need_arg = need_grad or return_indices
    rows, cols = _bin_positions(h, oh), _bin_positions(w, ow)
    # Separable, columns first (PyTorch's row-by-row scan order, as in max_pool2d): the maximum
    # of each row over every column bin, then of those over every row bin. Bins are gathered at
    # each offset into the bin; offsets past a bin's end read an appended -inf pixel.
    xp = pad2d(x, ((0, 0), (0, 1)), mode="constant", value=-np.inf)  # (n, c, h, w+1)
    row_max, col_arg = _running_max([np.take(xp, cols[:, b], axis=3)
                                     for b in range(cols.shape[1])], need_arg)  # (n, c, h, ow)
    row_max_p = pad2d(row_max, ((0, 1), (0, 0)), mode="constant", value=-np.inf)
    out, row_arg = _running_max([np.take(row_max_p, rows[:, a], axis=2)
                                 for a in range(rows.shape[1])], need_arg)  # (n, c, oh, ow)
    indices = None
    if need_arg:
        start_h, start_w = _bins(h, oh)[0], _bins(w, ow)[0]
        row = start_h[:, None] + row_arg.astype(np.int64)  # (n, c, oh, ow)
        col = start_w + np.take_along_axis(col_arg, row, axis=2).astype(np.int64)
        indices = row * w + col
    cache = dict(x_shape=x.shape, out_shape=out.shape, indices=indices)
    return ((out, indices) if return_indices else out), cache


def adaptive_max_pool2d(x, output_size, return_indices=False):
    r"""2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Output ``(i, j)`` is the maximum over rows ``floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1`` and
    the columns of bin ``j`` likewise; ties and NaN as in :func:`max_pool2d`.

    Args:
        x: input of shape (N, C, H, W).
        output_size: ``(H_out, W_out)``, or an int for both; an entry None keeps the input size.
        return_indices: also return the flat index ``h*W + w`` of each maximum. Default False.

    Shape:
        input (N, C, H, W) -> output (N, C, H_out, W_out).

    https://pytorch.org/docs/stable/generated/torch.nn.AdaptiveMaxPool2d.html
    """
    return _adaptive_max_pool2d_forward("adaptive_max_pool2d", x, output_size, return_indices,
                                        need_grad=False)[0]


def adaptive_max_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Each output's gradient goes to the input its maximum came from; overlapping bins add up.

    ``np.bincount`` is a vectorised scatter-add (it accumulates in float64; the result is cast
    back to the input dtype).
    """
    grad_out = _check_grad(grad_out, cache, "adaptive_max_pool2d_backward")
    if "indices" not in cache:  # the bins were uniform blocks
        return max_pool2d_backward(grad_out, cache)
    n, c, h, w = cache["x_shape"]
    indices = cache["indices"]
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    grad = np.bincount((indices + planes).ravel(), weights=grad_out.ravel(),
                       minlength=n * c * h * w)
    return grad.astype(grad_out.dtype, copy=False).reshape(n, c, h, w)


# -- global pooling -------------------------------------------------------------------------------
def global_avg_pool2d_forward(x):
    """Global average pooling; returns ``(out, cache)``. See :func:`global_avg_pool2d`."""
    return _global_avg_pool2d_forward("global_avg_pool2d", x)


def _global_avg_pool2d_forward(name, x):
    x = _check_map(x, name)
    adaptive_output_size(name, x.shape, 1)
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).mean(axis=2), dict(x_shape=x.shape, out_shape=(n, c))


def global_avg_pool2d(x) -> np.ndarray:
    r"""Mean over each plane: ``out(n, c) = 1/(H W) \sum_{h, w} x(n, c, h, w)``.

    The same as ``adaptive_avg_pool2d(x, 1)`` flattened to (N, C) (Keras's
    GlobalAveragePooling2D).

    Shape:
        input (N, C, H, W) -> output (N, C).
    """
    return global_avg_pool2d_forward(x)[0]


def global_avg_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Every pixel of a plane gets ``grad_out / (H W)``."""
    grad_out = _check_grad(grad_out, cache, "global_avg_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    grad = np.empty((n, c, h, w), grad_out.dtype)
    grad[...] = (grad_out / (h * w))[:, :, None, None]
    return grad


def global_max_pool2d_forward(x):
    """Global max pooling; returns ``(out, cache)``. See :func:`global_max_pool2d`."""
    return _global_max_pool2d_forward("global_max_pool2d", x)


def _global_max_pool2d_forward(name, x):
    x = _check_map(x, name)
    adaptive_output_size(name, x.shape, 1)
    n, c, h, w = x.shape
    planes = x.reshape(n, c, h * w)
    arg = planes.argmax(axis=2)  # the first maximum, or the first NaN
    out = np.take_along_axis(planes, arg[:, :, None], axis=2)[:, :, 0]
    nan_planes = np.isnan(out)
    if nan_planes.any():  # PyTorch picks the last NaN
        arg[nan_planes] = h * w - 1 - np.isnan(planes[nan_planes][:, ::-1]).argmax(axis=1)
    return out, dict(x_shape=x.shape, out_shape=(n, c), arg=arg)


def global_max_pool2d(x) -> np.ndarray:
    r"""Maximum over each plane: ``out(n, c) = \max_{h, w} x(n, c, h, w)``.

    The same as ``adaptive_max_pool2d(x, 1)`` flattened to (N, C) (Keras's GlobalMaxPooling2D);
    ties and NaN as in :func:`max_pool2d`.

    Shape:
        input (N, C, H, W) -> output (N, C).
    """
    return global_max_pool2d_forward(x)[0]


def global_max_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Each plane's gradient goes to the pixel its maximum came from."""
    grad_out = _check_grad(grad_out, cache, "global_max_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    grad = np.zeros((n, c, h * w), grad_out.dtype)
    np.put_along_axis(grad, cache["arg"][:, :, None], grad_out[:, :, None], axis=2)
    return grad.reshape(n, c, h, w)
