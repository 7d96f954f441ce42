"""Pooling against PyTorch (outputs, indices, input gradients), numerical gradients, the fast
block path against a plain loop reference, tie and NaN routing, the course's examples, errors."""

import inspect
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numcnn
from numcnn import functional as F
from numcnn import nn
from numcnn.errors import DTypeError, ShapeError
from numcnn.functional._windows import pair
from tests.helpers import check_layer_gradients, tol

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])

dtypes = st.sampled_from([np.float32, np.float64])
pairs_1_3 = st.tuples(st.integers(1, 3), st.integers(1, 3))


def make_input(shape, dtype, seed, ties=False, specials=False):
    """Random data; with ``ties`` small integers (so windows hold tied maxima), with
    ``specials`` some NaN and -inf as well."""
    rng = np.random.default_rng(seed)
    if ties:
        x = rng.integers(-2, 3, shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    if specials:
        x[rng.random(shape) < 0.1] = np.nan
        x[rng.random(shape) < 0.15] = -np.inf
    return x


def distinct_input(shape, seed=0):
    """float64 values with no ties, at least 0.05 apart, so finite differences see one maximum."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(math.prod(shape)).reshape(shape) * 0.05 - 1.0).astype(np.float64)


def torch_run(fn, x, grad):
    """Output (or (output, indices)) and input gradient of a torch function of ``x``."""
    t_x = torch.tensor(x, requires_grad=True)
    result = fn(t_x)
    out = result[0] if isinstance(result, tuple) else result
    out.backward(torch.tensor(grad))
    if isinstance(result, tuple):
        return out.detach().numpy(), result[1].numpy(), t_x.grad.numpy()
    return out.detach().numpy(), None, t_x.grad.numpy()


def upstream(shape, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, equal_nan=True, **tol(dtype))


def has_empty_window(hw, args):
    """Whether some window of a dilated max pool holds no pixel of the input (PyTorch 2.x then
    writes that window's gradient outside the input plane: corrupted memory, so such cases are
    compared with the loop reference only)."""
    for size, k, s, p, d in zip(hw, args["kernel_size"], args["stride"], args["padding"],
                                args["dilation"]):
        out = torch_output_size(size, k, s, p, d, args["ceil_mode"])
        for y in range(out):
            if not any(0 <= y * s - p + a * d < size for a in range(k)):
                return True
    return False


def torch_output_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape, written out independently of numcnn's out_size."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


# -- plain loop references ----------------------------------------------------------------------
def naive_max_pool(x, kernel, stride, padding, dilation, ceil_mode, grad_out=None,
                   split_ties=False):
    """Max pooling one window at a time, as PyTorch's CPU kernel scans it: start at -inf, keep a
    value if it is greater than the maximum so far or NaN. Returns out, indices, grad_x."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = torch_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = torch_output_size(w, kw, sw, pw, dw, ceil_mode)
    out = np.empty((n, c, oh, ow), x.dtype)
    indices = np.empty((n, c, oh, ow), np.int64)
    grad_x = np.zeros(x.shape, x.dtype)
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for z in range(ow):
                    positions = [(y * sh - ph + i * dh, z * sw - pw + j * dw)
                                 for i in range(kh) for j in range(kw)]
                    positions = [(r, q) for r, q in positions if 0 <= r < h and 0 <= q < w]
                    best, best_at = -np.inf, positions[0] if positions else None
                    for r, q in positions:
                        value = x[b, ch, r, q]
                        if value > best or np.isnan(value):
                            best, best_at = value, (r, q)
                    out[b, ch, y, z] = best
                    if best_at is not None:
                        indices[b, ch, y, z] = best_at[0] * w + best_at[1]
                    if grad_out is None or best_at is None:
                        continue
                    g = grad_out[b, ch, y, z]
                    if split_ties:
                        tied = [(r, q) for r, q in positions
                                if x[b, ch, r, q] == best
                                or (np.isnan(best) and np.isnan(x[b, ch, r, q]))]
                        for r, q in tied:
                            grad_x[b, ch, r, q] += g / len(tied)
                    else:
                        grad_x[b, ch, best_at[0], best_at[1]] += g
    return out, indices, grad_x


def naive_avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override,
                   grad_out=None):
    """Average pooling one window at a time with PyTorch's divisor. Returns out, grad_x."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh = torch_output_size(h, kh, sh, ph, 1, ceil_mode)
    ow = torch_output_size(w, kw, sw, pw, 1, ceil_mode)
    out = np.empty((n, c, oh, ow), x.dtype)
    grad_x = np.zeros(x.shape, x.dtype)
    for y in range(oh):
        for z in range(ow):
            r0, q0 = y * sh - ph, z * sw - pw
            r1, q1 = min(r0 + kh, h + ph), min(q0 + kw, w + pw)
            full = (r1 - r0) * (q1 - q0)
            r0, q0, r1, q1 = max(r0, 0), max(q0, 0), min(r1, h), min(q1, w)
            if divisor_override is not None:
                divisor = divisor_override
            else:
                divisor = full if count_include_pad else (r1 - r0) * (q1 - q0)
            out[:, :, y, z] = x[:, :, r0:r1, q0:q1].sum(axis=(2, 3)) / divisor
            if grad_out is not None:
                grad_x[:, :, r0:r1, q0:q1] += grad_out[:, :, y, z, None, None] / divisor
    return out, grad_x


# -- max pooling ----------------------------------------------------------------------------------
max_pool_args = st.fixed_dictionaries(dict(
    kernel=pairs_1_3, stride=pairs_1_3, dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad_fraction=st.tuples(st.integers(0, 1), st.integers(0, 1)), ceil_mode=st.booleans()))


def max_args(a):
    kernel = a["kernel"]
    padding = tuple(f * (k // 2) for f, k in zip(a["pad_fraction"], kernel))
    return dict(kernel_size=kernel, stride=a["stride"], padding=padding,
                dilation=a["dilation"], ceil_mode=a["ceil_mode"])


@SETTINGS
@given(a=max_pool_args, hw=st.tuples(st.integers(1, 8), st.integers(1, 8)), dtype=dtypes,
       ties=st.booleans(), specials=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_max_pool2d_matches_torch(a, hw, dtype, ties, specials, seed):
    args = max_args(a)
    x = make_input((2, 3, *hw), dtype, seed, ties=ties, specials=specials)
    sizes = [torch_output_size(s, k, st_, p, d, args["ceil_mode"]) for s, k, st_, p, d in
             zip(hw, args["kernel_size"], args["stride"], args["padding"], args["dilation"])]
    if min(sizes) < 1:
        with pytest.raises(ShapeError, match="max_pool2d: input of shape"):
            F.max_pool2d(x, **args)
        return
    if has_empty_window(hw, args):
        return
    (out, indices), cache = F.max_pool2d_forward(x, **args, return_indices=True)
    grad = upstream(out.shape, dtype)
    grad_x = F.max_pool2d_backward(grad, cache)
    t_out, t_indices, t_grad = torch_run(
        lambda t: TF.max_pool2d(t, **args, return_indices=True), x, grad)
    assert out.dtype == dtype and out.shape == t_out.shape
    np.testing.assert_array_equal(out, t_out)  # a maximum is exact
    np.testing.assert_array_equal(indices, t_indices)
    assert_close(grad_x, t_grad, dtype)
    np.testing.assert_array_equal(F.max_pool2d(x, **args), out)


@SETTINGS
@given(a=max_pool_args, hw=st.tuples(st.integers(2, 7), st.integers(2, 7)),
       ties=st.booleans(), specials=st.booleans(), split_ties=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_max_pool2d_matches_loop_reference(a, hw, ties, specials, split_ties, seed):
    args = max_args(a)
    x = make_input((1, 2, *hw), np.float64, seed, ties=ties, specials=specials)
    sizes = [torch_output_size(s, k, st_, p, d, args["ceil_mode"]) for s, k, st_, p, d in
             zip(hw, args["kernel_size"], args["stride"], args["padding"], args["dilation"])]
    if min(sizes) < 1:
        return
    out, cache = F.max_pool2d_forward(x, **args, split_ties=split_ties)
    grad = upstream(out.shape, np.float64)
    grad_x = F.max_pool2d_backward(grad, cache)
    ref_out, _, ref_grad = naive_max_pool(x, args["kernel_size"], args["stride"],
                                          args["padding"], args["dilation"], args["ceil_mode"],
                                          grad, split_ties=split_ties)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(grad_x, ref_grad, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(k=pairs_1_3, hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), ceil_mode=st.booleans(),
       ties=st.booleans(), specials=st.booleans(), dtype=dtypes, seed=st.integers(0, 2 ** 16))
def test_max_pool2d_block_fast_path_matches_loop_reference(k, hw, ceil_mode, ties, specials,
                                                           dtype, seed):
    """Non-overlapping windows (stride = kernel, no padding), with and without leftover rows."""
    if hw[0] < k[0] or hw[1] < k[1]:
        return
    x = make_input((2, 3, *hw), dtype, seed, ties=ties, specials=specials)
    (out, indices), cache = F.max_pool2d_forward(x, k, ceil_mode=ceil_mode, return_indices=True)
    divides = hw[0] % k[0] == 0 and hw[1] % k[1] == 0
    assert cache["impl"] == ("numpy-blocks" if divides or not ceil_mode else "numpy-windows")
    grad = upstream(out.shape, dtype)
    grad_x = F.max_pool2d_backward(grad, cache)
    ref_out, ref_indices, ref_grad = naive_max_pool(x, k, k, (0, 0), (1, 1), ceil_mode, grad)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(grad_x, ref_grad)  # one gradient per input: exact
    assert grad_x.dtype == dtype and grad_x.flags.c_contiguous


def test_max_pool2d_tie_goes_to_the_first_in_row_major_order_as_in_torch():
    # the maxima at (0, 1) and (1, 0) tie: PyTorch scans row by row, so (0, 1) wins (a pass
    # over columns before rows would pick (1, 0))
    x = np.array([[[[0., 5.], [5., 1.]]]])
    for path, args in (("numpy-blocks", dict(kernel_size=2)),
                       ("numpy-windows", dict(kernel_size=2, stride=1, padding=1))):
        (out, indices), cache = F.max_pool2d_forward(x, **args, return_indices=True)
        assert cache["impl"] == path
        grad = np.ones_like(out)
        grad_x = F.max_pool2d_backward(grad, cache)
        t_out, t_indices, t_grad = torch_run(
            lambda t: TF.max_pool2d(t, **args, return_indices=True), x, grad)
        np.testing.assert_array_equal(indices, t_indices)
        np.testing.assert_array_equal(grad_x, t_grad)
    grad_x = F.max_pool2d_backward(np.ones((1, 1, 1, 1)), F.max_pool2d_forward(x, 2)[1])
    np.testing.assert_array_equal(grad_x, [[[[0., 1.], [0., 0.]]]])
    all_equal = np.ones((1, 1, 2, 2))
    grad_x = F.max_pool2d_backward(np.ones((1, 1, 1, 1)), F.max_pool2d_forward(all_equal, 2)[1])
    np.testing.assert_array_equal(grad_x, [[[[1., 0.], [0., 0.]]]])


def test_max_pool2d_nan_and_neg_inf_windows_as_in_torch():
    nan, inf = np.nan, np.inf
    x = np.array([[[[nan, 1., -inf, -inf],
                    [nan, 3., -inf, -inf],
                    [2., 2., 0., nan],
                    [1., 2., 0., 0.]]]])
    for args in (dict(kernel_size=2), dict(kernel_size=2, stride=1, padding=1),
                 dict(kernel_size=3, stride=1, padding=1, ceil_mode=True)):
        (out, indices), cache = F.max_pool2d_forward(x, **args, return_indices=True)
        grad = upstream(out.shape, np.float64)
        grad_x = F.max_pool2d_backward(grad, cache)
        t_out, t_indices, t_grad = torch_run(
            lambda t: TF.max_pool2d(t, **args, return_indices=True), x, grad)
        np.testing.assert_array_equal(out, t_out)
        np.testing.assert_array_equal(indices, t_indices)
        np.testing.assert_allclose(grad_x, t_grad, rtol=1e-12)
    out, indices = F.max_pool2d(x, 2, return_indices=True)
    assert indices[0, 0, 0, 0] == 4  # the last NaN of the window
    assert indices[0, 0, 0, 1] == 2 and out[0, 0, 0, 1] == -inf  # all -inf: the first


def test_split_ties_with_nan_and_neg_inf_windows_matches_loop_reference():
    nan, inf = np.nan, np.inf
    x = np.array([[[[-inf, -inf, 1., 2.],
                    [-inf, -inf, nan, 2.],
                    [3., nan, 0., 0.],
                    [3., 1., 0., 0.]]]])
    for args in (dict(kernel_size=2), dict(kernel_size=2, stride=1, padding=1),
                 dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        full = dict(dict(stride=args["kernel_size"], padding=0, ceil_mode=False), **args)
        out, cache = F.max_pool2d_forward(x, **args, split_ties=True)
        grad = upstream(out.shape, np.float64)
        kernel, stride, padding = (pair(full[key]) for key in ("kernel_size", "stride", "padding"))
        _, _, ref_grad = naive_max_pool(x, kernel, stride, padding, (1, 1), full["ceil_mode"],
                                        grad, split_ties=True)
        np.testing.assert_allclose(F.max_pool2d_backward(grad, cache), ref_grad, rtol=1e-12)
    # the all -inf corner window of the padded 2x2 pooling splits among its one inside pixel
    layer = nn.MaxPool2d(2, stride=1, padding=1, split_ties=True)
    layer(x)
    grad = np.zeros((1, 1, 5, 5))
    grad[0, 0, 0, 0] = 1.0
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 0] = 1.0
    np.testing.assert_array_equal(layer.backward(grad), expected)


def test_max_pool2d_nonfinite_upstream_gradient_stays_at_the_maximum():
    x = distinct_input((1, 2, 4, 4))
    grad = np.array([np.nan, np.inf, 1.0, -np.inf] * 2).reshape(1, 2, 2, 2)
    for args in (dict(kernel_size=2), dict(kernel_size=2, stride=2, padding=1)):
        out, cache = F.max_pool2d_forward(x, **args)
        grad_ = np.resize(grad, out.shape)
        _, _, t_grad = torch_run(lambda t: TF.max_pool2d(t, **args), x, grad_)
        np.testing.assert_array_equal(F.max_pool2d_backward(grad_, cache), t_grad)


def test_split_ties_divides_the_gradient_evenly_among_tied_maxima():
    # course notes 04: "in case several pixels in the patch were all the maximal value the
    # gradient would be evenly distributed to these pixels"
    x = np.array([[[[3., 1., 2., 2.],
                    [3., 3., 2., 2.],
                    [0., 1., 5., 4.],
                    [1., 0., 4., 4.]]]])
    layer = nn.MaxPool2d(2, split_ties=True)
    out = layer(x)
    np.testing.assert_array_equal(out, [[[[3., 2.], [1., 5.]]]])
    grad_x = layer.backward(np.array([[[[6., 4.], [2., 1.]]]]))
    np.testing.assert_allclose(grad_x, [[[[2., 0., 1., 1.],
                                          [2., 2., 1., 1.],
                                          [0., 1., 1., 0.],
                                          [1., 0., 0., 0.]]]])
    # PyTorch routing of the same gradient: all of it to the first maximum
    layer = nn.MaxPool2d(2)
    layer(x)
    np.testing.assert_allclose(layer.backward(np.array([[[[6., 4.], [2., 1.]]]])),
                               [[[[6., 0., 4., 0.], [0., 0., 0., 0.],
                                  [0., 2., 1., 0.], [0., 0., 0., 0.]]]])


def test_split_ties_with_overlapping_windows_and_no_ties_equals_torch():
    x = distinct_input((2, 2, 6, 5))
    layer = nn.MaxPool2d(3, stride=2, padding=1, split_ties=True).double()
    out = layer(x)
    grad = upstream(out.shape, np.float64)
    _, _, t_grad = torch_run(lambda t: TF.max_pool2d(t, 3, 2, 1), x, grad)
    np.testing.assert_allclose(layer.backward(grad), t_grad, rtol=1e-12)
    # with every value tied, output (y, z) splits its gradient among the count[y, z] input
    # pixels of its window, so pixel (r, q) gets the sum of 1/count over the windows holding it
    layer = nn.MaxPool2d(3, stride=1, padding=1, split_ties=True)
    layer(np.zeros((1, 1, 3, 3)))
    grad_x = layer.backward(np.ones((1, 1, 3, 3)))
    count = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    expected = np.zeros((3, 3))
    for r in range(3):
        for q in range(3):
            expected[r, q] = (1 / count[max(r - 1, 0):r + 2, max(q - 1, 0):q + 2]).sum()
    np.testing.assert_allclose(grad_x[0, 0], expected)
    np.testing.assert_allclose(grad_x.sum(), 9.0)


# -- average pooling ------------------------------------------------------------------------------
@SETTINGS
@given(kernel=pairs_1_3, stride=pairs_1_3, pad_fraction=st.tuples(st.integers(0, 1),
                                                                     st.integers(0, 1)),
       ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, 1, 3]),
       hw=st.tuples(st.integers(1, 8), st.integers(1, 8)), dtype=dtypes,
       seed=st.integers(0, 2 ** 16))
def test_avg_pool2d_matches_torch_and_loop_reference(kernel, stride, pad_fraction, ceil_mode,
                                                     count_include_pad, divisor_override, hw,
                                                     dtype, seed):
    padding = tuple(f * (k // 2) for f, k in zip(pad_fraction, kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad, divisor_override=divisor_override)
    x = make_input((2, 3, *hw), dtype, seed)
    sizes = [torch_output_size(s, k, st_, p, 1, ceil_mode)
             for s, k, st_, p in zip(hw, kernel, stride, padding)]
    if min(sizes) < 1:
        with pytest.raises(ShapeError, match="avg_pool2d: input of shape"):
            F.avg_pool2d(x, **args)
        return
    out, cache = F.avg_pool2d_forward(x, **args)
    grad = upstream(out.shape, dtype)
    grad_x = F.avg_pool2d_backward(grad, cache)
    t_out, _, t_grad = torch_run(lambda t: TF.avg_pool2d(t, **args), x, grad)
    assert_close(out, t_out, dtype)
    assert_close(grad_x, t_grad, dtype)
    ref, ref_grad = naive_avg_pool(x.astype(np.float64), kernel, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override, grad.astype(np.float64))
    np.testing.assert_allclose(out, ref, **tol(dtype))
    np.testing.assert_allclose(grad_x, ref_grad, **tol(dtype))


@SETTINGS
@given(k=pairs_1_3, hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), ceil_mode=st.booleans(),
       divisor_override=st.sampled_from([None, 2]), dtype=dtypes, seed=st.integers(0, 2 ** 16))
def test_avg_pool2d_block_fast_path_matches_loop_reference(k, hw, ceil_mode, divisor_override,
                                                           dtype, seed):
    if hw[0] < k[0] or hw[1] < k[1]:
        return
    x = make_input((2, 3, *hw), dtype, seed)
    out, cache = F.avg_pool2d_forward(x, k, ceil_mode=ceil_mode,
                                      divisor_override=divisor_override)
    divides = hw[0] % k[0] == 0 and hw[1] % k[1] == 0
    assert cache["impl"] == ("numpy-blocks" if divides or not ceil_mode else "numpy-windows")
    grad = upstream(out.shape, dtype)
    grad_x = F.avg_pool2d_backward(grad, cache)
    ref, ref_grad = naive_avg_pool(x.astype(np.float64), k, k, (0, 0), ceil_mode, True,
                                   divisor_override, grad.astype(np.float64))
    np.testing.assert_allclose(out, ref, **tol(dtype))
    np.testing.assert_allclose(grad_x, ref_grad, **tol(dtype))
    assert out.dtype == grad_x.dtype == dtype and grad_x.flags.c_contiguous


# -- power-average pooling ------------------------------------------------------------------------
@SETTINGS
@given(norm_type=st.sampled_from([1, 2, 3, 1.5, 0.5, float("inf"), float("-inf")]),
       kernel=pairs_1_3, stride=st.one_of(st.none(), pairs_1_3), ceil_mode=st.booleans(),
       hw=st.tuples(st.integers(3, 7), st.integers(3, 7)), positive=st.booleans(),
       zeros=st.booleans(), dtype=dtypes, seed=st.integers(0, 2 ** 16))
def test_lp_pool2d_matches_torch(norm_type, kernel, stride, ceil_mode, hw, positive, zeros,
                                 dtype, seed):
    x = make_input((2, 2, *hw), dtype, seed)
    if positive:
        x = np.abs(x) + 0.1
    if zeros:
        x[..., :2, :2] = 0  # a window summing to zero: PyTorch sets its gradient to zero
    out, cache = F.lp_pool2d_forward(x, norm_type, kernel, stride, ceil_mode)
    grad = upstream(out.shape, dtype)
    grad_x = F.lp_pool2d_backward(grad, cache)
    t_out, _, t_grad = torch_run(lambda t: TF.lp_pool2d(t, norm_type, kernel, stride, ceil_mode),
                                 x, grad)
    assert_close(out, t_out, dtype)
    np.testing.assert_array_equal(np.isnan(grad_x), np.isnan(t_grad))
    finite = np.isfinite(t_grad)
    rtol = 1e-8 if dtype == np.float64 else 2e-4  # powers amplify float32 rounding
    np.testing.assert_allclose(grad_x[finite], t_grad[finite], rtol=rtol, atol=rtol)


def test_l2_pool_is_the_euclidean_norm_of_each_window():
    x = make_input((2, 3, 6, 6), np.float64, 3)
    out = nn.LPPool2d(2, 3, stride=3)(x)
    windows = x.reshape(2, 3, 2, 3, 2, 3)
    np.testing.assert_allclose(out, np.sqrt((windows ** 2).sum(axis=(3, 5))), rtol=1e-12)


# -- adaptive and global pooling ------------------------------------------------------------------
output_sizes = st.one_of(st.integers(1, 6),
                         st.tuples(st.one_of(st.none(), st.integers(1, 9)),
                                   st.one_of(st.none(), st.integers(1, 9))))


@SETTINGS
@given(output_size=output_sizes, hw=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       dtype=dtypes, ties=st.booleans(), specials=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_adaptive_pooling_matches_torch(output_size, hw, dtype, ties, specials, seed):
    x = make_input((2, 3, *hw), dtype, seed, ties=ties, specials=specials)
    (out, indices), cache = F.adaptive_max_pool2d_forward(x, output_size, return_indices=True)
    grad = upstream(out.shape, dtype)
    grad_x = F.adaptive_max_pool2d_backward(grad, cache)
    t_out, t_indices, t_grad = torch_run(
        lambda t: TF.adaptive_max_pool2d(t, output_size, return_indices=True), x, grad)
    np.testing.assert_array_equal(out, t_out)
    np.testing.assert_array_equal(indices, t_indices)
    assert_close(grad_x, t_grad, dtype)
    np.testing.assert_array_equal(F.adaptive_max_pool2d(x, output_size), out)

    x = make_input((2, 3, *hw), dtype, seed)
    out, cache = F.adaptive_avg_pool2d_forward(x, output_size)
    grad = upstream(out.shape, dtype)
    grad_x = F.adaptive_avg_pool2d_backward(grad, cache)
    t_out, _, t_grad = torch_run(lambda t: TF.adaptive_avg_pool2d(t, output_size), x, grad)
    assert_close(out, t_out, dtype)
    assert_close(grad_x, t_grad, dtype)


@SETTINGS
@given(hw=st.tuples(st.integers(1, 8), st.integers(1, 8)), dtype=dtypes, ties=st.booleans(),
       specials=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_global_pooling_is_adaptive_pooling_to_1_then_flatten(hw, dtype, ties, specials, seed):
    x = make_input((3, 4, *hw), dtype, seed, ties=ties, specials=specials)
    grad = upstream((3, 4), dtype)
    for layer, torch_layer in ((nn.GlobalMaxPool2d(), torch.nn.AdaptiveMaxPool2d(1)),
                               (nn.GlobalAvgPool2d(), torch.nn.AdaptiveAvgPool2d(1))):
        data = x if isinstance(layer, nn.GlobalMaxPool2d) else np.nan_to_num(x, neginf=-3.0)
        out = layer(data)
        grad_x = layer.backward(grad)
        t_out, _, t_grad = torch_run(lambda t: torch.flatten(torch_layer(t), 1), data, grad)
        assert out.shape == (3, 4) and layer.output_shape(data.shape) == (3, 4)
        assert_close(out, t_out, dtype)
        assert_close(grad_x, t_grad, dtype)


# -- layers: against torch.nn, gradients, shapes, attributes --------------------------------------
LAYERS = [
    (lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2)),
    (lambda: nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True),
     lambda: torch.nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2),
                                ceil_mode=True)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
     lambda: torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
    (lambda: nn.AvgPool2d(2, ceil_mode=True, divisor_override=3),
     lambda: torch.nn.AvgPool2d(2, ceil_mode=True, divisor_override=3)),
    (lambda: nn.LPPool2d(2, 2), lambda: torch.nn.LPPool2d(2, 2)),
    (lambda: nn.LPPool2d(3, (2, 3), stride=1), lambda: torch.nn.LPPool2d(3, (2, 3), stride=1)),
    (lambda: nn.AdaptiveAvgPool2d((3, None)), lambda: torch.nn.AdaptiveAvgPool2d((3, None))),
    (lambda: nn.AdaptiveMaxPool2d(3), lambda: torch.nn.AdaptiveMaxPool2d(3)),
    (lambda: nn.GlobalAvgPool2d(),
     lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())),
    (lambda: nn.GlobalMaxPool2d(),
     lambda: torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_layers_match_torch_nn_and_predict_their_shape(index, dtype):
    make, make_torch = LAYERS[index]
    layer, torch_layer = make(), make_torch()
    x = np.abs(make_input((2, 3, 7, 8), dtype, index)) + 0.1
    out = layer(x)
    assert layer.output_shape(x.shape) == out.shape
    grad = upstream(out.shape, dtype)
    grad_copy = grad.copy()
    grad_x = layer.backward(grad)
    t_out, _, t_grad = torch_run(torch_layer, x, grad)
    assert_close(out, t_out, dtype)
    assert_close(grad_x, t_grad, dtype)
    assert grad_x.shape == x.shape
    np.testing.assert_array_equal(grad, grad_copy)  # backward leaves grad_out alone
    with numcnn.no_grad():
        np.testing.assert_array_equal(layer(x), out)
    with pytest.raises(numcnn.NumcnnError, match="without a forward pass"):
        layer.backward(grad)


@pytest.mark.parametrize("make", [
    lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=2),
    lambda: nn.MaxPool2d(2, ceil_mode=True, split_ties=True),
    lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    lambda: nn.LPPool2d(2, 2), lambda: nn.LPPool2d(1.5, (2, 3), stride=(1, 2)),
    lambda: nn.LPPool2d(float("inf"), 2),
    lambda: nn.AdaptiveAvgPool2d((2, 4)), lambda: nn.AdaptiveMaxPool2d((3, None)),
    lambda: nn.GlobalAvgPool2d(), lambda: nn.GlobalMaxPool2d(),
])
def test_numerical_gradients(make):
    layer = make()
    x = distinct_input((2, 2, 5, 7))
    if isinstance(layer, nn.LPPool2d):
        x = 0.2 * x + 1.0  # positive (away from the zero sum) and near 1 (x^p stays moderate)
    check_layer_gradients(layer, x)


def test_max_pool_return_indices_layers():
    x = make_input((2, 3, 6, 6), np.float32, 0, ties=True)
    out, indices = nn.MaxPool2d(2, return_indices=True)(x)
    t_out, t_indices = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(indices, t_indices.numpy())
    assert indices.dtype == np.int64
    out, indices = nn.AdaptiveMaxPool2d((4, 3), return_indices=True)(x)
    t_out, t_indices = TF.adaptive_max_pool2d(torch.tensor(x), (4, 3), return_indices=True)
    np.testing.assert_array_equal(indices, t_indices.numpy())
    # the indices pick the outputs out of the flattened input planes
    np.testing.assert_array_equal(np.take_along_axis(x.reshape(2, 3, -1),
                                                     indices.reshape(2, 3, -1), axis=2),
                                  out.reshape(2, 3, -1))


def test_constructor_arguments_are_kept_as_attributes_as_in_torch():
    layers = [nn.MaxPool2d(3, padding=1, return_indices=True, split_ties=True),
              nn.AvgPool2d((2, 3), stride=1, divisor_override=2), nn.LPPool2d(2, 3),
              nn.AdaptiveAvgPool2d((2, None)), nn.AdaptiveMaxPool2d(4, return_indices=True),
              nn.GlobalAvgPool2d(), nn.GlobalMaxPool2d()]
    for layer in layers:
        for name in list(inspect.signature(type(layer).__init__).parameters)[1:]:
            assert name in layer.__dict__, (type(layer).__name__, name)
    assert layers[0].stride == 3 and layers[0].split_ties and layers[0].return_indices
    assert layers[1].kernel_size == (2, 3) and layers[1].divisor_override == 2
    assert layers[2].stride is None and layers[2].norm_type == 2  # as in PyTorch
    assert layers[3].output_size == (2, None)
    assert repr(layers[0]) == ("MaxPool2d(kernel_size=3, stride=3, padding=1, dilation=1, "
                               "ceil_mode=False, split_ties=True)")
    assert repr(nn.AvgPool2d(2)) == repr(torch.nn.AvgPool2d(2))
    assert repr(nn.MaxPool2d(2)) == repr(torch.nn.MaxPool2d(2))
    assert repr(nn.LPPool2d(2, 3)) == repr(torch.nn.LPPool2d(2, 3))
    assert repr(nn.AdaptiveMaxPool2d((2, None))) == repr(torch.nn.AdaptiveMaxPool2d((2, None)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    x = make_input((2, 3, 8, 8), dtype, 0)
    for layer in (nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.LPPool2d(2, 2),
                  nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d(3), nn.GlobalAvgPool2d(),
                  nn.GlobalMaxPool2d()):
        out = layer(x)
        assert out.dtype == dtype, type(layer).__name__
        assert layer.backward(np.ones_like(out)).dtype == dtype, type(layer).__name__


# -- the course's examples (03: max, average, global average and L2 pooling) --------------------
COURSE_INPUT = np.array([[[[1.0, 2.0, 3.0, 0.0],
                           [4.0, 5.0, 6.0, 1.0],
                           [3.0, 4.0, 7.0, 2.0],
                           [1.0, 2.0, 1.0, 0.0]]]], dtype=np.float32)


def test_course_pooling_examples():
    # values worked out by hand from the 2x2 windows of the course's 4x4 input
    np.testing.assert_array_equal(nn.MaxPool2d(kernel_size=2, stride=2, padding=0)(COURSE_INPUT),
                                  [[[[5, 6], [4, 7]]]])
    np.testing.assert_allclose(nn.AvgPool2d(kernel_size=2, stride=2, padding=0)(COURSE_INPUT),
                               [[[[3.0, 2.5], [2.5, 2.5]]]])
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(COURSE_INPUT), [[[[42 / 16]]]])
    np.testing.assert_allclose(nn.GlobalAvgPool2d()(COURSE_INPUT), [[42 / 16]])
    np.testing.assert_allclose(nn.GlobalMaxPool2d()(COURSE_INPUT), [[7]])
    # L2: sqrt(1+4+16+25), sqrt(9+0+36+1), sqrt(9+16+1+4), sqrt(49+4+1+0)
    np.testing.assert_allclose(nn.LPPool2d(2, 2)(COURSE_INPUT),
                               np.sqrt([[[[46, 46], [30, 54]]]]), rtol=1e-6)
    # the max pool gradient goes to the maxima 5, 6, 4, 7
    layer = nn.MaxPool2d(2)
    layer(COURSE_INPUT)
    grad_x = layer.backward(np.array([[[[1, 2], [3, 4]]]], dtype=np.float32))
    np.testing.assert_array_equal(grad_x, [[[[0, 0, 0, 0], [0, 1, 2, 0],
                                             [0, 3, 4, 0], [0, 0, 0, 0]]]])


# -- errors ---------------------------------------------------------------------------------------
def test_wrong_ndim_names_the_layer_and_the_shape():
    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.LPPool2d(2, 2), nn.AdaptiveAvgPool2d(2),
                  nn.AdaptiveMaxPool2d(2), nn.GlobalAvgPool2d(), nn.GlobalMaxPool2d()):
        name = type(layer).__name__
        with pytest.raises(ShapeError, match=rf"{name}: expected a 4-D input \(N, C, H, W\), "
                                             r"got shape \(5, 5\)"):
            layer(np.zeros((5, 5), np.float32))
        with pytest.raises(ShapeError, match=rf"{name}: expected a 4-D input"):
            layer.output_shape((5, 5))       # (C, H, W) is one image (tests/test_unbatched.py)
    with pytest.raises(ShapeError, match=r"max_pool2d: expected a 4-D input .* got shape "
                                         r"\(1, 5, 5\)"):
        F.max_pool2d(np.zeros((1, 5, 5)), 2)


def test_window_larger_than_input_shows_the_formula():
    message = (r"MaxPool2d: input of shape \(1, 1, 2, 2\) is smaller than the pooling window "
               r"\(kernel_size=\(3, 3\), stride=\(1, 1\), padding=\(0, 0\), dilation=\(1, 1\)\); "
               r"along the height: out = floor\(\(in \+ 2\*pad - dilation\*\(k-1\) - 1\) / "
               r"stride\) \+ 1 = floor\(\(2 \+ 2\*0 - 1\*\(3-1\) - 1\) / 1\) \+ 1 = 0")
    layer = nn.MaxPool2d(3, stride=1)
    with pytest.raises(ShapeError, match=message):
        layer(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=message):
        layer.output_shape((1, 1, 2, 2))
    with pytest.raises(ShapeError, match=r"AvgPool2d: input of shape \(1, 1, 1, 9\) .* along "
                                         r"the height: .*floor\(\(1 \+ 2\*1 - 1\*\(5-1\) - 1\) "
                                         r"/ 1\) \+ 1 = -1"):
        nn.AvgPool2d(5, stride=1, padding=1)(np.zeros((1, 1, 1, 9), np.float32))
    with pytest.raises(ShapeError, match=r"LPPool2d: input of shape \(2, 3, 4, 1\) .* along "
                                         r"the width"):
        nn.LPPool2d(2, 2).output_shape((2, 3, 4, 1))
    with pytest.raises(ShapeError, match=r"layer 2 \(MaxPool2d\): MaxPool2d: input of shape "
                                         r"\(1, 1, 1, 1\)"):
        nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(2)).output_shape((1, 1, 5, 5))


def test_bad_arguments_are_value_errors_naming_the_layer():
    with pytest.raises(ValueError, match=r"MaxPool2d: padding should be at most half of the "
                                         r"kernel size, got padding=\(2, 2\) for "
                                         r"kernel_size=\(3, 3\)"):
        nn.MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2d: padding should be at most half"):
        nn.AvgPool2d(2, padding=(0, 2))
    with pytest.raises(ValueError, match=r"max_pool2d: padding should be at most half"):
        F.max_pool2d(np.zeros((1, 1, 5, 5)), 2, padding=2)
    with pytest.raises(ValueError, match=r"MaxPool2d: stride must be positive, got \(0, 0\)"):
        nn.MaxPool2d(2, stride=0)
    with pytest.raises(ValueError, match=r"MaxPool2d: kernel_size must be positive"):
        nn.MaxPool2d(0)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a tuple of 2 ints"):
        nn.MaxPool2d((2, 2, 2))
    with pytest.raises(ValueError, match=r"AvgPool2d: divisor_override must be non-zero"):
        nn.AvgPool2d(2, divisor_override=0)
    with pytest.raises(ValueError, match=r"LPPool2d: norm_type must be a non-zero number"):
        nn.LPPool2d(0, 2)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: output_size entries must be "
                                         r"positive ints or None, got \(0, 2\)"):
        nn.AdaptiveAvgPool2d((0, 2))
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2d: output_size must be an int or a "
                                         r"pair"):
        nn.AdaptiveMaxPool2d((1, 2, 3))
    with pytest.raises(DTypeError, match=r"MaxPool2d: expected a floating-point input .* "
                                         r"got dtype int64"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), np.int64))


def test_backward_checks_the_gradient_shape():
    x = make_input((2, 3, 6, 6), np.float32, 0)
    for layer in (nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.LPPool2d(2, 2),
                  nn.AdaptiveAvgPool2d(4), nn.AdaptiveMaxPool2d(4), nn.GlobalAvgPool2d(),
                  nn.GlobalMaxPool2d()):
        out = layer(x)
        with pytest.raises(ShapeError, match=r"_backward: grad_out has shape \(2, 3, 6, 6\), "
                                             rf"expected the shape of the forward output "
                                             rf"{re.escape(str(out.shape))}"):
            layer.backward(x)


def test_cached_geometry_still_checks_each_call():
    # the pooling geometry is cached per (arguments, shape): a float or a bad tuple after a
    # cached int call must still be refused, and a list must give the int call's answer
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    expected = F.max_pool2d(x, 2)
    with pytest.raises((TypeError, ValueError)):
        F.max_pool2d(x, 2.0)
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool2d(x, (2.0, 2))
    np.testing.assert_array_equal(F.max_pool2d(x, [2, 2]), expected)
    np.testing.assert_array_equal(F.avg_pool2d(x, 2), F.avg_pool2d(x, [2, 2]))
    with pytest.raises(ShapeError, match="smaller than the pooling window"):
        F.max_pool2d(x[:, :, :1], 2)  # same arguments, another shape
