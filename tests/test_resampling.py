"""MaxPool1d, AvgPool1d, MaxUnpool2d (with MaxPool2d(return_indices=True)) and Upsample against
PyTorch over random grids, and by float64 numerical gradients."""

import numpy as np
import pytest
import torch

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, numerical_grad, tol

DTYPES = [np.float32, np.float64]


def compare(layer, t_layer, x, dtype, seed=0):
    """Forward and backward of both on ``x``; compare output and input gradient."""
    out = layer(x)
    grad = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.dtype == dtype and grad_x.dtype == dtype
    assert layer.output_shape(x.shape) == out.shape == tuple(t_out.shape)
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_pool1d_matches_pytorch(dtype, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    stride = int(rng.integers(1, 4))
    padding = int(rng.integers(0, k // 2 + 1))
    dilation = int(rng.integers(1, 3))
    ceil_mode = bool(rng.integers(2))
    length = int(rng.integers(dilation * (k - 1) + 1, 14))
    shape = (2, 3, length) if seed % 3 else (3, length)             # unbatched too
    x = rng.standard_normal(shape).astype(dtype)
    compare(nn.MaxPool1d(k, stride, padding, dilation, ceil_mode=ceil_mode),
            torch.nn.MaxPool1d(k, stride, padding, dilation, ceil_mode=ceil_mode), x, dtype)
    include = bool(rng.integers(2))
    compare(nn.AvgPool1d(k, stride, padding, ceil_mode, include),
            torch.nn.AvgPool1d(k, stride, padding, ceil_mode, include), x, dtype)
    out, idx = nn.MaxPool1d(k, stride, padding, dilation, return_indices=True)(x)
    t_out, t_idx = torch.nn.functional.max_pool1d(torch.tensor(x), k, stride, padding, dilation,
                                                  return_indices=True)
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(10))
def test_max_unpool2d_inverts_max_pool2d_as_pytorch(dtype, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    stride = k                                      # windows that tile: every value has a slot
    padding = int(rng.integers(0, k // 2 + 1)) if seed % 3 == 0 else 0
    h, w = (int(v) for v in rng.integers(k + 1, 9, size=2))
    default_size = seed % 2 and padding == 0
    if default_size:            # the default output size is the input's when windows tile it
        h, w = h - h % k, w - w % k
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    out, idx = nn.MaxPool2d(k, stride, padding, return_indices=True)(x)
    t_out, t_idx = torch.nn.functional.max_pool2d(torch.tensor(x), k, stride, padding,
                                                  return_indices=True)
    np.testing.assert_array_equal(idx, t_idx.numpy())
    unpool, t_unpool = nn.MaxUnpool2d(k, stride, padding), torch.nn.MaxUnpool2d(k, stride, padding)
    size = None if default_size else (h, w)
    y = unpool(out, idx, output_size=size)
    t_in = torch.tensor(out, requires_grad=True)
    t_y = t_unpool(t_in, t_idx, output_size=size)
    np.testing.assert_allclose(y, t_y.detach().numpy(), **tol(dtype))
    grad = rng.standard_normal(y.shape).astype(dtype)
    t_y.backward(torch.tensor(grad))
    np.testing.assert_allclose(unpool.backward(grad), t_in.grad.numpy(), **tol(dtype))
    if size is None:
        assert unpool.output_shape(out.shape) == y.shape
    single = unpool(out[0], idx[0], output_size=size)              # unbatched (C, H, W)
    np.testing.assert_array_equal(single, y[0])


def test_max_pool2d_default_still_returns_one_array():
    assert isinstance(nn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), np.float32)), np.ndarray)


def test_max_unpool2d_gradient_and_errors():
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    out, idx = nn.MaxPool2d(2, return_indices=True).double()(x)
    unpool = nn.MaxUnpool2d(2)
    unpool(out, idx)
    r = np.random.default_rng(1).standard_normal((1, 2, 4, 4))
    analytic = unpool.backward(r)
    numeric = numerical_grad(lambda: float(np.sum(F.max_unpool2d(out, idx, 2) * r)), out)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    with pytest.raises(ShapeError, match="indices"):
        unpool(out, idx[:, :1])
    with pytest.raises(ShapeError, match="outside"):
        unpool(out, idx + 100)
    with pytest.raises(ShapeError, match="strictly between"):
        unpool(out, idx, output_size=(9, 9))
    with pytest.raises(ShapeError, match="indices of the maxima"):
        unpool(out)


UPSAMPLE_CASES = [
    dict(scale_factor=2, mode="nearest"),
    dict(scale_factor=(1.5, 2.7), mode="nearest"),
    dict(size=(5, 7), mode="nearest"),
    dict(size=(2, 3), mode="nearest"),
    dict(scale_factor=2, mode="bilinear"),
    dict(scale_factor=2, mode="bilinear", align_corners=True),
    dict(scale_factor=(1.7, 0.6), mode="bilinear"),
    dict(size=(7, 4), mode="bilinear", align_corners=True),
    dict(size=(1, 5), mode="bilinear", align_corners=True),
    dict(size=(6, 9), mode="bilinear", align_corners=False),
    dict(scale_factor=1.6, mode="bilinear", recompute_scale_factor=True),
    dict(scale_factor=3, mode="linear"),
    dict(size=8, mode="linear", align_corners=True),
    dict(scale_factor=2.5, mode="nearest"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", UPSAMPLE_CASES, ids=lambda k: ",".join(map(str, k.values())))
def test_upsample_matches_pytorch(kwargs, dtype):
    rng = np.random.default_rng(len(str(kwargs)))
    one_d = kwargs["mode"] == "linear" or kwargs.get("scale_factor") == 2.5
    shape = (2, 3, 5) if one_d else (2, 3, 4, 5)
    x = rng.standard_normal(shape).astype(dtype)
    compare(nn.Upsample(**kwargs), torch.nn.Upsample(**kwargs), x, dtype)


@pytest.mark.parametrize("kwargs", [dict(scale_factor=2, mode="nearest"),
                                    dict(size=(5, 3), mode="bilinear"),
                                    dict(scale_factor=1.5, mode="bilinear", align_corners=True)])
def test_upsample_numerical_gradients(kwargs):
    check_layer_gradients(nn.Upsample(**kwargs),
                          np.random.default_rng(0).standard_normal((1, 2, 3, 4)))


def test_pool1d_numerical_gradients():
    x = np.random.default_rng(0).permutation(24).reshape(2, 2, 6) / 7.0   # no ties
    check_layer_gradients(nn.MaxPool1d(3, 2, padding=1), x)
    check_layer_gradients(nn.AvgPool1d(3, 2, padding=1, count_include_pad=False), x)


def test_errors_say_what_was_expected():
    with pytest.raises(ShapeError, match=r"\(N, C, L\)"):
        nn.MaxPool1d(2)(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ShapeError, match="shorter than the pooling window"):
        nn.AvgPool1d(5).output_shape((1, 1, 3))
    with pytest.raises(ValueError, match="exactly one"):
        nn.Upsample()
    with pytest.raises(ValueError, match="align_corners"):
        nn.Upsample(scale_factor=2, align_corners=True)
    with pytest.raises(ShapeError, match="4-D"):
        nn.Upsample(scale_factor=2, mode="bilinear")(np.zeros((1, 2, 3), np.float32))
