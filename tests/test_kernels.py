"""The compiled convolution kernels against the NumPy reference path and against PyTorch.

Every case is built so that the kernels apply (float32, one group, stride 1 along the width,
output rows of at least ``policy.MIN_ROW`` numbers), and is run twice: through the kernels and,
with ``use_kernels(False)``, through im2col + BLAS + col2im. Both must agree with PyTorch.
"""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import numcnn
from numcnn import functional as F
from numcnn import nn
from numcnn import backend
from numcnn.backend import kernels, layout, policy
from numcnn.functional import conv as conv_module

needs_kernels = pytest.mark.skipif(not backend.available(),
                                   reason="the compiled kernels were not built or are off (no C compiler, NUMCNN_KERNELS=0?)")


def test_kernels_were_built():
    """Where a C compiler is installed, pip must have built the extension (else every other test
    here would silently check the NumPy path twice)."""
    if os.environ.get("NUMCNN_KERNELS") == "0":
        pytest.skip("NUMCNN_KERNELS=0")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert backend.available()


# (n, c, oc, h, w, kernel, stride, padding, dilation): the presets' layers, batch sizes whose
# rows are not a whole number of vectors, channel counts that leave partial register blocks,
# strided rows, dilation, asymmetric and 'same' padding.
CASES = [
    (64, 1, 16, 28, 28, (5, 5), (1, 1), (2, 2), (1, 1)),
    (64, 16, 32, 14, 14, (5, 5), (1, 1), (2, 2), (1, 1)),
    (64, 8, 8, 14, 14, (5, 5), (1, 1), (1, 1), (1, 1)),
    (64, 4, 8, 28, 28, (3, 3), (1, 1), (1, 1), (1, 1)),
    (8, 3, 5, 13, 11, (3, 3), (1, 1), (0, 0), (1, 1)),
    (9, 5, 11, 10, 12, (3, 5), (2, 1), (1, 2), (1, 1)),
    (6, 2, 3, 12, 15, (3, 3), (1, 1), "same", (2, 3)),
    (7, 7, 9, 9, 17, (2, 4), (1, 1), (3, 0), (1, 2)),
    (33, 3, 17, 6, 6, (1, 1), (1, 1), (0, 0), (1, 1)),
    (70, 2, 4, 5, 5, (5, 5), (1, 1), "full", (1, 1)),
    (1, 6, 10, 70, 80, (3, 3), (3, 1), (1, 1), (1, 1)),
    (8, 3, 4, 2, 1, (3, 9), (1, 1), "full", (1, 1)),  # input-gradient rows shorter than a vector
    # uneven 'same' padding (a (3, 2) kernel pads one column more on the right): a kernel input
    # gradient that cropped the left padding twice would show here
    (64, 3, 10, 12, 12, (3, 2), (1, 1), "same", (1, 1)),
    (64, 4, 6, 9, 11, (2, 4), (1, 1), "same", (1, 1)),
    # a stride along the height: the input gradient one phase at a time (dilation 1), or col2im
    (1, 3, 5, 9, 70, (3, 3), (2, 1), (1, 1), (1, 1)),
    (16, 3, 4, 12, 10, (3, 3), (2, 1), (2, 2), (2, 1)),
    # weight-gradient rows longer than a chunk (WCHUNK) whose last piece ends mid-vector
    (33, 4, 9, 8, 20, (3, 3), (1, 1), (1, 1), (1, 1)),
]


def _random_conv(case, seed: int):
    """``(rng, x, weight, bias)`` for a case ``(n, c, oc, h, w, kernel, ...)``, float32; the
    weights scaled by 1/sqrt(fan-in), as a layer's initialisation would."""
    n, c, oc, h, w, kernel = case[:6]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((oc, c, *kernel)) / np.sqrt(c * np.prod(kernel))
    bias = rng.standard_normal(oc).astype(np.float32)
    return rng, x, weight.astype(np.float32), bias


def _run(x, w, b, stride, padding, dilation, g, use, impl=policy.KERNELS):
    with backend.use_kernels(use):
        y, cache = F.conv2d_forward(x, w, b, stride, padding, dilation)
        assert cache["impl"] == (impl if use and backend.available() else policy.NUMPY)
        grad_x, grad_w, grad_b = F.conv2d_backward(g, cache)
    return np.ascontiguousarray(y), grad_x, grad_w, grad_b


# A stride along the width (dilation 1): the kernels on the polyphase split of the input. The
# ResNet's stride-2 3x3 and 1x1 layers, strides larger than the kernel (phases no tap reads),
# uneven padding, channel counts and batches that leave partial register blocks.
STRIDED_CASES = [
    (64, 16, 32, 16, 16, (3, 3), (2, 2), (1, 1), (1, 1)),
    (64, 16, 32, 16, 16, (1, 1), (2, 2), (0, 0), (1, 1)),
    (64, 5, 7, 11, 9, (3, 2), (2, 3), (1, 0), (1, 1)),
    (17, 5, 17, 10, 12, (4, 5), (3, 2), (2, 1), (1, 1)),
    (33, 3, 17, 9, 13, (1, 1), (1, 3), (0, 0), (1, 1)),
    (20, 2, 9, 7, 15, (2, 2), (1, 4), (1, 1), (1, 1)),
    (1, 4, 12, 9, 200, (3, 3), (2, 2), (1, 1), (1, 1)),  # a single image with long rows
    (16, 3, 8, 20, 20, (7, 7), (2, 2), (3, 3), (1, 1)),   # a 7x7 stride-2 stem
    (16, 6, 10, 15, 17, (5, 5), (2, 2), (2, 2), (1, 1)),
]


@needs_kernels
@pytest.mark.parametrize("case", CASES + STRIDED_CASES, ids=str)
def test_kernels_match_numpy_and_torch(case):
    n, c, oc, h, w, kernel, stride, padding, dilation = case
    rng, x, weight, bias = _random_conv(case, seed=0)
    out_shape = F.conv2d(x[:1], weight, bias, stride, padding, dilation).shape[1:]
    g = rng.standard_normal((n, *out_shape)).astype(np.float32)

    impl = policy.KERNELS_STRIDED if stride[1] > 1 else policy.KERNELS
    fast = _run(x, weight, bias, stride, padding, dilation, g, True, impl)
    slow = _run(x, weight, bias, stride, padding, dilation, g, False, impl)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    if padding == "full":  # PyTorch has no 'full': dilation * (k - 1) on each side
        padding_t = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    else:
        padding_t = padding
    yt = TF.conv2d(xt, wt, bt, stride, padding_t, dilation)
    yt.backward(torch.tensor(g))
    expected = [yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
    for name, a, b_, e in zip(["y", "grad_x", "grad_w", "grad_b"], fast, slow, expected):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=2e-5 * scale, err_msg=f"kernels {name}")
        np.testing.assert_allclose(b_, e, rtol=1e-4, atol=2e-5 * scale, err_msg=f"numpy {name}")


@needs_kernels
def test_kernels_skip_the_input_gradient_and_keep_no_columns():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((16, 1, 5, 5)).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, 1, 2)
    assert cache["impl"] == policy.KERNELS and cache["cols"] is None and cache["rows_p"] is not None
    grad_x, grad_w, grad_b = F.conv2d_backward(np.ones_like(y), cache, input_grad=False)
    assert grad_x is None and grad_b is None and grad_w.shape == w.shape


@needs_kernels
def test_kernels_keep_their_input_apart_from_later_changes():
    """The forward pass keeps the (padded) input for the weight gradient; an unpadded input that
    already lies batch-last would be kept by reference, so it is copied."""
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((4, 10, 10, 64)).astype(np.float32)  # (c, h, w, n) memory
    x = rows.transpose(3, 0, 1, 2)                                  # its NCHW view
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, 1, 0)
    assert cache["impl"] == policy.KERNELS
    g = rng.standard_normal(y.shape).astype(np.float32)
    _, expected, _ = F.conv2d_backward(g, cache)
    y, cache = F.conv2d_forward(x, w, None, 1, 0)
    rows[...] = 0.0
    _, grad_w, _ = F.conv2d_backward(g, cache)
    np.testing.assert_array_equal(grad_w, expected)


@needs_kernels
def test_training_step_is_the_same_with_and_without_kernels():
    """A preset's whole training step (conv, batch norm, pooling, linear) through the kernels
    and through NumPy gives the same loss and the same parameter gradients."""
    from numcnn import models

    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    grads = []
    for use in (True, False):
        numcnn.manual_seed(0)
        model = models.preset("convnet-bn")
        crit = nn.CrossEntropyLoss()
        with backend.use_kernels(use):
            loss = crit(model(x), y)
            model.zero_grad()
            model.backward(crit.backward())
        grads.append((loss, {k: p.grad.copy() for k, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = grads
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    # one scale for all: the conv biases before batch norm have a true gradient of 0, so theirs
    # is rounding noise on both paths
    scale = max(float(np.abs(g).max()) for g in grads_b.values())
    for key in grads_a:
        np.testing.assert_allclose(grads_a[key], grads_b[key], rtol=1e-3, atol=1e-5 * scale,
                                   err_msg=key)


# Rows too short for the main kernel (a single image, or strided rows): the forward kernel that
# vectorises over output channels; (n, c, oc, h, w, kernel, stride, padding, dilation)
SMALL_CASES = [
    (1, 1, 16, 28, 28, (5, 5), (1, 1), (2, 2), (1, 1)),
    (1, 16, 32, 14, 14, (5, 5), (1, 1), (2, 2), (1, 1)),
    (1, 3, 20, 9, 11, (3, 3), (2, 2), (1, 0), (1, 1)),
    (3, 5, 40, 8, 7, (2, 3), (1, 2), (0, 1), (2, 1)),
    (2, 4, 7, 6, 6, (1, 1), (1, 1), (0, 0), (1, 1)),
    (2, 8, 17, 10, 10, (3, 3), (2, 2), (1, 1), (1, 1)),
    # a single image with a stride along the height only: the dispatch must not take it for
    # stride 1 (a stride-1 kernel on it gives wrong outputs)
    (1, 4, 9, 12, 14, (3, 3), (2, 1), (1, 1), (1, 1)),
    (1, 4, 9, 13, 15, (3, 2), (3, 1), (1, 0), (1, 1)),
    (1, 2, 40, 10, 10, (3, 3), (2, 1), (1, 1), (1, 1)),  # many channels: vectorised over them
]


@needs_kernels
@pytest.mark.parametrize("case", SMALL_CASES, ids=[str(c) for c in SMALL_CASES])
def test_small_row_kernel_matches_numpy_and_torch(case):
    n, c, oc, h, w, kernel, stride, padding, dilation = case
    rng, x, weight, bias = _random_conv(case, seed=12)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.conv2d(xt, torch.tensor(weight), torch.tensor(bias), stride, padding, dilation)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    for use in (True, False):
        with backend.use_kernels(use):
            y, cache = F.conv2d_forward(x, weight, bias, stride, padding, dilation)
            assert cache["impl"] == (policy.KERNELS_SHORT_ROWS if use else policy.NUMPY)
            grad_x, _, _ = F.conv2d_backward(g, cache)  # NumPy's, from the kept input
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-4, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("case", [c for c in SMALL_CASES if c[6] == (1, 1)] +
                         [(1, 2, 5, 2, 3, (3, 3), (1, 1), (1, 1), (1, 1))],  # rows < a vector
                         ids=str)
def test_both_short_row_kernels_match_torch(case):
    """Stride 1: the channel-vectorised kernel and the rows-end-to-end one, each called
    directly (the dispatch picks one of them by the number of output channels)."""
    n, c, oc, h, w, kernel, stride, padding, dilation = case
    _, x, weight, bias = _random_conv(case, seed=16)
    expected = TF.conv2d(torch.tensor(x), torch.tensor(weight), torch.tensor(bias), stride,
                         padding, dilation).numpy()
    (top, bottom), (left, right) = conv_module.resolve_padding(padding, kernel, dilation, stride)
    rows_p = layout.to_chwn(x, ((top, bottom), (left, right)))
    out_hw = expected.shape[2:]
    for out in (kernels.conv_forward_flat(rows_p, weight, bias, dilation, out_hw),
                kernels.conv_forward_small(rows_p, weight, bias, stride, dilation, out_hw)):
        np.testing.assert_allclose(out.transpose(3, 0, 1, 2), expected, rtol=1e-4, atol=1e-4)


def test_kernels_leave_other_cases_to_numpy():
    """float64, groups, a stride along the width, and short rows (batch 1) are not the main
    kernels' (float32 short rows go forward by the small-row kernel, strided rows by the kernels
    on the polyphase split)."""
    rng = np.random.default_rng(4)
    x64 = rng.standard_normal((64, 4, 8, 8))
    cases = [
        (x64, rng.standard_normal((4, 4, 3, 3)), dict()),
        (x64.astype(np.float32), rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
         dict(groups=2)),
        (x64.astype(np.float32), rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
         dict(stride=(1, 2))),
        (x64[:1].astype(np.float32), rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
         dict()),
    ]
    for x, w, kwargs in cases:
        _, cache = F.conv2d_forward(x, w, None, **kwargs)
        assert cache["impl"] != policy.KERNELS, kwargs


@needs_kernels
def test_conv2d_layer_in_eval_under_no_grad_uses_kernels():
    rng = np.random.default_rng(5)
    layer = nn.Conv2d(3, 8, 3, padding=1)
    x = rng.standard_normal((32, 3, 12, 12)).astype(np.float32)
    rows_p = layout.to_chwn(x, ((1, 1), (1, 1)))
    assert policy.conv2d(rows_p, layer.weight.data, 1, (1, 1), (12, 12)) == policy.KERNELS
    with numcnn.no_grad():
        fast = np.ascontiguousarray(layer(x))
    with backend.use_kernels(False), numcnn.no_grad():
        slow = np.ascontiguousarray(layer(x))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    reference = conv_module.conv2d(x.astype(np.float64), layer.weight.data.astype(np.float64),
                                   layer.bias.data.astype(np.float64), 1, 1)
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-5)


# -- element-wise layers --------------------------------------------------------------------------
def _batch_last(a: np.ndarray) -> np.ndarray:
    """``a (n, c, h, w)`` laid out in memory as ``(c, h, w, n)``, what convolutions output."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)


def _both_paths(fn):
    """``fn()`` through the kernels and through NumPy."""
    with backend.use_kernels(True):
        fast = fn()
    with backend.use_kernels(False):
        slow = fn()
    return fast, slow


@needs_kernels
@pytest.mark.parametrize("layout", ["nchw", "batch_last"])
def test_relu_kernel_matches_numpy_and_torch(layout):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 6, 9, 11)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, 0.0, -0.0]
    g = rng.standard_normal(x.shape).astype(np.float32)
    if layout == "batch_last":
        x, g = _batch_last(x), _batch_last(g)
    assert policy.elementwise(x, g) == policy.KERNELS

    def run():
        y, cache = F.relu_forward(x)
        return y, F.relu_backward(g, cache)

    (y, dx), (y_ref, dx_ref) = _both_paths(run)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(np.ascontiguousarray(g)))
    for a in (y, y_ref):
        np.testing.assert_array_equal(a, yt.detach().numpy())
    for a in (dx, dx_ref):
        np.testing.assert_array_equal(a, xt.grad.numpy())
    assert y.strides == x.strides and dx.strides == x.strides  # the input's layout is kept


@needs_kernels
def test_relu_kernel_in_place():
    x = _batch_last(np.random.default_rng(7).standard_normal((64, 8, 10, 10)).astype(np.float32))
    expected = np.maximum(x, 0)
    y, _ = F.relu_forward(x, inplace=True)
    assert y is x
    np.testing.assert_array_equal(x, expected)


@needs_kernels
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_kernels_match_numpy_and_torch(affine):
    rng = np.random.default_rng(8)
    # an offset far from zero: the statistics must not lose digits to it
    x = _batch_last((rng.standard_normal((64, 6, 9, 11)) * 3 + 50).astype(np.float32))
    g = _batch_last(rng.standard_normal(x.shape).astype(np.float32))
    weight = rng.standard_normal(6).astype(np.float32) if affine else None
    bias = rng.standard_normal(6).astype(np.float32) if affine else None

    def run():
        mean, var = np.zeros(6, np.float32), np.ones(6, np.float32)
        y, cache = F.batch_norm_forward(x, mean, var, weight, bias, training=True)
        assert (cache["impl"] == policy.KERNELS) == backend.enabled()
        return (np.ascontiguousarray(y), mean, var, *F.batch_norm_backward(g, cache))

    fast, slow = _both_paths(run)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True) if affine else None
    bt = torch.tensor(bias, requires_grad=True) if affine else None
    mean_t, var_t = torch.zeros(6), torch.ones(6)
    yt = TF.batch_norm(xt, mean_t, var_t, wt, bt, training=True)
    yt.backward(torch.tensor(np.ascontiguousarray(g)))
    expected = [yt.detach().numpy(), mean_t.numpy(), var_t.numpy(), xt.grad.numpy()]
    if affine:
        expected += [wt.grad.numpy(), bt.grad.numpy()]
    for result in (fast, slow):
        got = [a for a in result if a is not None]
        assert len(got) == len(expected)
        for a, e in zip(got, expected):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * max(1, np.abs(e).max()))


@needs_kernels
def test_batch_norm_kernels_leave_nchw_batches_to_numpy():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((128, 4, 8, 8)).astype(np.float32)
    mean, var = np.zeros(4, np.float32), np.ones(4, np.float32)
    assert F.batch_norm_forward(x, mean, var, training=True)[1]["impl"] != policy.KERNELS  # NCHW
    assert F.batch_norm_forward(_batch_last(x), mean, var, training=True)[1]["impl"] == policy.KERNELS


@needs_kernels
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("n", [64, 1])  # a batch laid out batch last; a single image
def test_batch_norm_eval_kernel_matches_numpy_and_torch(affine, n):
    rng = np.random.default_rng(13)
    x = _batch_last((rng.standard_normal((n, 6, 9, 11)) * 3 + 5).astype(np.float32))
    g = _batch_last(rng.standard_normal(x.shape).astype(np.float32))
    mean = rng.standard_normal(6).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    weight = rng.standard_normal(6).astype(np.float32) if affine else None
    bias = rng.standard_normal(6).astype(np.float32) if affine else None
    assert policy.batch_norm(F.normalization._channel_view(x)[0], False) == policy.KERNELS_EVAL

    def run():
        y, cache = F.batch_norm_forward(x, mean, var, weight, bias, training=False)
        assert (cache["centred"] is None and cache["invstd"].shape == (6,))
        return (np.ascontiguousarray(y), *F.batch_norm_backward(g, cache))

    fast, slow = _both_paths(run)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True) if affine else None
    bt = torch.tensor(bias, requires_grad=True) if affine else None
    yt = TF.batch_norm(xt, torch.tensor(mean), torch.tensor(var), wt, bt, training=False)
    yt.backward(torch.tensor(np.ascontiguousarray(g)))
    expected = [yt.detach().numpy(), xt.grad.numpy()]
    if affine:
        expected += [wt.grad.numpy(), bt.grad.numpy()]
    for result in (fast, slow):
        got = [a for a in result if a is not None]
        for a, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * max(1, np.abs(e).max()))


@needs_kernels
@pytest.mark.parametrize("kernel, shape", [((2, 2), (64, 8, 14, 14)), ((2, 2), (96, 7, 7, 9)),
                                           ((3, 2), (48, 10, 10, 7)), ((1, 3), (37, 15, 5, 12))])
def test_max_pool_kernels_match_numpy_and_torch(kernel, shape):
    rng = np.random.default_rng(10)
    # few distinct values, so that windows hold ties; and NaNs, which win (the last one)
    x = rng.integers(0, 4, shape).astype(np.float32)
    x[0, 0, 0, :4] = np.nan
    x[1, 0, :2, :2] = [[np.nan, 1.0], [np.nan, 5.0]]
    x = _batch_last(x)
    assert policy.max_pool(x, kernel, True, False, False) == policy.KERNELS
    out_shape = TF.max_pool2d(torch.tensor(np.ascontiguousarray(x[:1])), kernel).shape[1:]
    g = rng.standard_normal((shape[0], *out_shape)).astype(np.float32)

    def run():
        y, cache = F.max_pool2d_forward(x, kernel)
        assert (cache["impl"] == policy.KERNELS) == backend.enabled()
        return np.ascontiguousarray(y), F.max_pool2d_backward(g, cache)

    fast, slow = _both_paths(run)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    yt = TF.max_pool2d(xt, kernel)
    yt.backward(torch.tensor(g))
    for y, dx in (fast, slow):
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(dx, xt.grad.numpy())


@needs_kernels
def test_max_pool_kernel_without_gradients_keeps_no_winners():
    rng = np.random.default_rng(14)
    x = _batch_last(rng.integers(0, 3, (32, 16, 8, 8)).astype(np.float32))
    layer = nn.MaxPool2d(2)
    with_grad = np.ascontiguousarray(layer(x))
    layer.backward(np.ones_like(with_grad))
    with numcnn.no_grad():
        y, cache = F.pooling.max_pool._max_pool2d_forward("max_pool2d", x, 2, None, 0, 1, False, False,
                                                 False, need_grad=False)
    assert cache["impl"] == policy.KERNELS and cache["arg"] is None
    np.testing.assert_array_equal(np.ascontiguousarray(y), with_grad)
    with pytest.raises(numcnn.NumcnnError, match="kept no winners"):
        F.max_pool2d_backward(np.ones_like(with_grad), cache)


@needs_kernels
def test_max_pool_kernels_leave_other_cases_to_numpy():
    x = _batch_last(np.random.default_rng(11).standard_normal((32, 16, 8, 8)).astype(np.float32))
    assert F.max_pool2d_forward(x, 2)[1]["impl"] == policy.KERNELS
    assert F.max_pool2d_forward(x[:1], 2)[1]["impl"] != policy.KERNELS  # a single image
    assert F.max_pool2d_forward(np.ascontiguousarray(x), 2)[1]["impl"] != policy.KERNELS   # NCHW
    assert F.max_pool2d_forward(x, 3, stride=2)[1]["impl"] != policy.KERNELS   # overlapping windows
    assert F.max_pool2d_forward(x, 2, split_ties=True)[1]["impl"] != policy.KERNELS
    (_, indices), cache = F.max_pool2d_forward(x, 2, return_indices=True)
    assert cache["impl"] != policy.KERNELS


def _conv_sum(seed: int) -> float:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 16, 5, 5)).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, 1, 2)
    assert cache["impl"] == policy.KERNELS
    return float(np.asarray(y, np.float64).sum())


@needs_kernels
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_kernels_run_in_a_forked_child():
    """A child forked after the parent's OpenMP threads ran must not wait for them (GNU OpenMP
    would hang): numcnn runs its kernels there on one thread."""
    import multiprocessing

    expected = _conv_sum(0)  # the parent's threads have run
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        results = pool.map_async(_conv_sum, [0, 0]).get(timeout=60)
    finally:
        pool.terminate()
    assert results == [pytest.approx(expected, rel=1e-6)] * 2


# -- NumPy's BLAS beside the kernels --------------------------------------------------------------
def _blas_threads() -> list[int]:
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


@needs_kernels
def test_blas_keeps_its_threads_outside_numcnn(monkeypatch):
    """numcnn's float32 products run on one BLAS thread (their spinning threads would take the
    cores from the kernels), and the BLAS has its threads back after each."""
    from numcnn import models

    if not backend.blas._controllers() or max(_blas_threads()) < 2:
        pytest.skip("no multi-threaded BLAS that threadpoolctl controls")
    before = _blas_threads()
    seen = []
    matmul = np.matmul

    def spy(*args, **kwargs):
        seen.append(max(_blas_threads()))
        return matmul(*args, **kwargs)

    monkeypatch.setattr(np, "matmul", spy)
    model = models.preset("convnet-bn")  # its linear layer makes BLAS products
    crit = nn.CrossEntropyLoss()
    x = np.random.default_rng(15).standard_normal((16, 1, 28, 28)).astype(np.float32)
    crit(model(x), np.arange(16) % 10)
    model.backward_params(crit.backward())
    assert seen and set(seen) == {1}
    assert _blas_threads() == before

    seen.clear()  # float64: no kernels to make room for, the BLAS keeps its threads
    layer = nn.Linear(8, 4).double()
    layer(np.ones((3, 8)))
    assert seen and min(seen) >= 2
    seen.clear()
    with backend.use_kernels(False):
        nn.Linear(8, 4)(np.ones((3, 8), np.float32))
    assert seen and min(seen) >= 2


@needs_kernels
@pytest.mark.parametrize("layout", ["nchw", "batch_last"])
def test_residual_add_kernel_matches_numpy(layout):
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal((64, 8, 9, 10)).astype(np.float32) for _ in range(2))
    if layout == "batch_last":
        a, b = _batch_last(a), _batch_last(b)
    out = F.add(a, b)
    assert out.strides == a.strides  # laid out as its terms, for the next layer
    np.testing.assert_array_equal(out, a + b)
    with backend.use_kernels(False):
        np.testing.assert_array_equal(F.add(a, b), a + b)
    assert policy.elementwise(a, b) == policy.KERNELS
    with pytest.raises(numcnn.errors.ShapeError, match="one shape"):
        F.add(a, b[:, :4])


@needs_kernels
@pytest.mark.parametrize("shape, pads", [((128, 3, 32, 32), ((1, 1), (1, 1))),
                                         ((33, 5, 7, 9), ((1, 0), (2, 1))),
                                         ((17, 2, 40, 41), ((0, 0), (0, 0))),
                                         ((20, 3, 30, 30), ((2, 3), (0, 1)))])
def test_to_chwn_kernel_matches_the_numpy_copy(shape, pads):
    """The blocked NCHW -> padded CHWN transposition (batches not a multiple of its 16-sample
    blocks, uneven padding) gives exactly layout.to_chwn's array, and convolutions on NCHW
    colour images take it."""
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(kernels.to_chwn(x, pads), layout.to_chwn(x, pads))
    assert policy.to_chwn(x) == (policy.KERNELS if x.size >= policy.MIN_ELEMENTWISE
                                 else policy.NUMPY)
    assert policy.to_chwn(x[:, :1].copy()) == policy.NUMPY
