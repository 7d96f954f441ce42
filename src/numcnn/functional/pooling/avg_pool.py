"""Average pooling."""

from __future__ import annotations

import numpy as np

from ...backend import policy
from ...errors import ArgumentError
from .._windows import blocks, col2im, is_blocks, pad2d, pad2d_backward, window_pads, windows
from ._common import _check_grad, _check_map, _geometry


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
    kh, kw = kernel
    pads = tuple(window_pads(size, k, s, p, 1, o) for size, k, s, p, o
                 in zip((h, w), kernel, stride, padding, out_hw))
    if is_blocks(x.shape, kernel, stride, padding, (1, 1), out_hw):
        # fast path: sum the kw columns of each kernel row, then the kh rows
        x_blocks = blocks(x, kernel, out_hw)  # (n, c, oh, kh, ow, kw)
        row_sum = _running_sum([x_blocks[..., j] for j in range(kw)])  # (n, c, oh, kh, ow)
        out = _running_sum([row_sum[:, :, :, i] for i in range(kh)])  # (n, c, oh, ow)
        impl = policy.NUMPY_BLOCKS
    else:
        xp = pad2d(x, pads, mode="zeros")
        cols = windows(xp, kernel, stride, (1, 1), out_hw)  # (n, c, kh, kw, oh, ow)
        out = _running_sum([cols[:, :, i, j] for i in range(kh) for j in range(kw)])
        impl = policy.NUMPY_WINDOWS
    if divisor_override is not None:
        divisor = np.asarray(divisor_override, dtype=x.dtype)
    else:
        div_h, div_w = (_avg_divisor(size, k, s, p, o, count_include_pad) for size, k, s, p, o
                        in zip((h, w), kernel, stride, padding, out_hw))
        divisor = (div_h[:, None] * div_w[None, :]).astype(x.dtype)  # (oh, ow)
    out /= divisor
    cache = dict(impl=impl, x_shape=x.shape, out_shape=out.shape, kernel=kernel, stride=stride,
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
    if cache["impl"] == policy.NUMPY_BLOCKS:
        cropped = oh * kh < h or ow * kw < w
        grad_x = (np.zeros if cropped else np.empty)((n, c, h, w), share.dtype)
        grad_blocks = blocks(grad_x, (kh, kw), (oh, ow), writeable=True)  # (n,c,oh,kh,ow,kw)
        for j in range(kw):
            grad_blocks[..., j] = share[:, :, :, None, :]
        return grad_x
    cols = np.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))  # no copy
    (top, bottom), (left, right) = pads
    grad_xp = col2im(cols, (n, c, h + top + bottom, w + left + right), stride, (1, 1))
    return np.ascontiguousarray(pad2d_backward(grad_xp, pads, mode="zeros"))
