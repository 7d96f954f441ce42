"""Max pooling and its three strategies (see the package docstring for PyTorch's tie rules)."""

from __future__ import annotations

import numpy as np

from ...backend import kernels, policy
from ...backend.layout import is_chwn, new_map, to_layout
from ...errors import NumcnnError
from .._windows import blocks, col2im, is_blocks, pad2d, pad2d_backward, window_pads, windows
from ._common import _check_grad, _check_map, _geometry, _route


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


def _max_pool_args(name, x, kernel_size, stride, padding, dilation, ceil_mode):
    x = _check_map(x, name)
    kernel, stride, padding, dilation, out_hw = _geometry(
        name, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return x, kernel, stride, padding, dilation, out_hw


def _max_pool(x, kernel, stride, padding, dilation, out_hw, need_arg: bool, split_ties=False,
              return_indices: bool = False):
    """Output of max pooling and the cache of its backward pass (winner codes if ``need_arg``).

    The policy (:func:`numcnn.backend.policy.max_pool`) names the strategy, recorded as
    ``cache["impl"]``, and the strategy of that name in ``STRATEGIES`` computes it.
    """
    n, c, h, w = x.shape
    oh, ow = out_hw
    pads = tuple(window_pads(size, k, s, p, d, o) for size, k, s, p, d, o
                 in zip((h, w), kernel, stride, padding, dilation, out_hw))
    non_overlapping = is_blocks(x.shape, kernel, stride, padding, dilation, out_hw)
    impl = policy.max_pool(x, kernel, non_overlapping, split_ties, return_indices)
    cache = dict(impl=impl, x_shape=x.shape, out_shape=(n, c, oh, ow), kernel=kernel,
                 stride=stride, padding=padding, dilation=dilation, pads=pads,
                 split_ties=split_ties, batch_last=is_chwn(x))
    out = STRATEGIES[impl](x, cache, out_hw, need_arg)
    if split_ties:
        cache.update(x=x, out=out)
    return out, cache


def _max_pool_kernels(x, cache, out_hw, need_arg: bool) -> np.ndarray:
    """The compiled kernel: non-overlapping blocks of a CHWN map, winner codes kept (uint8)."""
    out, arg = kernels.max_pool_blocks(x, cache["kernel"], out_hw, need_arg)
    cache.update(arg=arg)
    return out


def _max_pool_blocks(x, cache, out_hw, need_arg: bool) -> np.ndarray:
    """Non-overlapping blocks in NumPy: the maximum over the kw columns of each kernel row,
    then over the kh rows. Columns first keeps PyTorch's row-by-row scan order for ties; the
    column stage reads the input once, with strides NumPy merges into one long loop."""
    kernel = cache["kernel"]
    kh, kw = kernel
    x_blocks = blocks(x, kernel, out_hw)  # (n, c, oh, kh, ow, kw)
    row_max, col_arg = _running_max([x_blocks[..., j] for j in range(kw)], need_arg)
    out, row_arg = _running_max([row_max[:, :, :, i] for i in range(kh)], need_arg)
    cache.update(row_arg=row_arg, col_arg=col_arg)
    if need_arg:
        cache.update(winner=_winner_mask(x, kernel, out_hw, row_arg, col_arg))
    return out


def _max_pool_windows(x, cache, out_hw, need_arg: bool) -> np.ndarray:
    """Any windows (stride, padding, dilation) in NumPy: the maximum over the ``kh*kw`` views
    of the ``-inf``-padded input, in PyTorch's scan order."""
    (kh, kw), stride, padding, dilation = (cache["kernel"], cache["stride"], cache["padding"],
                                           cache["dilation"])
    oh, ow = out_hw
    xp = pad2d(x, cache["pads"], mode="constant", value=-np.inf)
    cols = windows(xp, (kh, kw), stride, dilation, out_hw)  # (n, c, kh, kw, oh, ow)
    out, arg = _running_max([cols[:, :, i, j] for i in range(kh) for j in range(kw)], need_arg)
    if need_arg and padding != (0, 0):
        # a window of nothing but -inf: PyTorch keeps its first position inside the input
        empty = np.isneginf(out)
        if empty.any():
            lead_h = _leading_padding(oh, stride[0], padding[0], dilation[0])
            lead_w = _leading_padding(ow, stride[1], padding[1], dilation[1])
            first = (lead_h[:, None] * kw + lead_w[None, :]).astype(arg.dtype)  # (oh, ow)
            np.copyto(arg, np.broadcast_to(first, out.shape), where=empty)
    cache.update(arg=arg)
    return out


STRATEGIES = {policy.KERNELS: _max_pool_kernels, policy.NUMPY_BLOCKS: _max_pool_blocks,
              policy.NUMPY_WINDOWS: _max_pool_windows}


def _winner_mask(x, kernel, out_hw, row_arg, col_arg) -> np.ndarray:
    """Boolean map of the shape and layout of ``x``, true at each block's winning position:
    ``winner[n, c, y*kh + i, x*kw + j] = (row_arg == i) & (col_arg[..., i, :] == j)``. The
    backward pass is then one product of the mask with the upsampled gradient."""
    (kh, kw), (oh, ow) = kernel, out_hw
    n, c, h, w = x.shape
    winner = new_map(x.shape, np.bool_, is_chwn(x), zeros=oh * kh < h or ow * kw < w)
    winner_blocks = blocks(winner, kernel, out_hw, writeable=True)  # (n, c, oh, kh, ow, kw)
    for i in range(kh):
        row_won = row_arg == i
        for j in range(kw):
            np.logical_and(row_won, col_arg[:, :, :, i] == j, out=winner_blocks[:, :, :, i, :, j])
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
    if cache["impl"] == policy.NUMPY_BLOCKS:
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
                           return_indices=return_indices)
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
    if cache["impl"] == policy.KERNELS:
        if cache["arg"] is None:
            raise NumcnnError("max_pool2d_backward: the forward pass kept no winners (it ran "
                              "without gradients, e.g. under numcnn.no_grad())")
        return kernels.max_pool_blocks_backward(grad_out, cache["arg"], (n, c, h, w), (kh, kw))
    finite = bool(np.isfinite(grad_out).all())
    if cache["impl"] == policy.NUMPY_BLOCKS and not cache["split_ties"]:
        # each block's gradient goes to its winner: mask * the gradient repeated over the block
        grad_out = to_layout(grad_out, cache["batch_last"])  # that of the input and the mask
        cropped = oh * kh < h or ow * kw < w
        grad_x = new_map((n, c, h, w), grad_out.dtype, cache["batch_last"], zeros=cropped)
        grad_blocks = blocks(grad_x, (kh, kw), (oh, ow), writeable=True)  # (n,c,oh,kh,ow,kw)
        winner = blocks(cache["winner"], (kh, kw), (oh, ow))
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
