"""Dropout and Dropout2d: mask semantics, statistics, eval identity, gradients, errors."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numcnn
from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, tol

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


class SeededDropout(nn.Dropout):
    """Dropout whose mask is the same at every call, for finite differences."""

    def forward(self, x):
        numcnn.manual_seed(7)
        return super().forward(x)


class SeededDropout2d(nn.Dropout2d):
    def forward(self, x):
        numcnn.manual_seed(7)
        return super().forward(x)


def x_without_zeros(shape, dtype=np.float64, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return x + np.where(x >= 0, 0.5, -0.5).astype(dtype)


@SETTINGS
@given(p=st.sampled_from([0.1, 0.5, 0.8]), dtype=st.sampled_from([np.float32, np.float64]),
       shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
       seed=st.integers(0, 2**16))
def test_dropout_zeros_or_scales_each_element_and_backward_uses_the_same_mask(p, dtype, shape,
                                                                              seed):
    x = x_without_zeros(shape, dtype, seed)
    layer = nn.Dropout(p)
    out = layer(x)
    assert out.dtype == dtype and out.shape == x.shape
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), **tol(dtype))
    grad = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    grad_x = layer.backward(grad)
    assert grad_x.dtype == dtype
    # d out / d x is the mask: the same m with out = x * m, as torch's autograd gives for it.
    t_x = torch.tensor(x, requires_grad=True)
    (t_x * torch.tensor(kept / (1 - p), dtype=t_x.dtype)).backward(torch.tensor(grad))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))


def test_dropout2d_drops_whole_channels():
    x = x_without_zeros((6, 40, 3, 4))
    layer = nn.Dropout2d(0.5)
    out = layer(x)
    kept = out != 0
    per_channel = kept.reshape(6, 40, -1)
    assert (per_channel.all(axis=2) | ~per_channel.any(axis=2)).all()   # all or nothing
    assert 0 < per_channel.all(axis=2).sum() < 240
    np.testing.assert_allclose(out[kept], 2 * x[kept], rtol=1e-15)
    grad = np.ones_like(x)
    np.testing.assert_allclose(layer.backward(grad), 2.0 * kept, rtol=1e-15)
    out3 = nn.Dropout2d(0.5)(x_without_zeros((6, 40, 5)))                 # (n, c, l)
    per_channel = (out3 != 0)
    assert (per_channel.all(axis=2) | ~per_channel.any(axis=2)).all()


@pytest.mark.parametrize("make, shape", [(nn.Dropout, (400, 500)),
                                         (nn.Dropout2d, (400, 500, 1, 1))])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_drop_rate_is_p_and_the_mean_is_preserved(make, shape, p):
    x = np.ones(shape, dtype=np.float32)
    out = make(p)(x)
    n = out.size
    rate = np.mean(out == 0)
    assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n)          # 5 sigma of a binomial
    # E[out] = x: the mean of n values of 0 or 1/(1-p) has sd sqrt(p / ((1-p) n)).
    assert abs(out.mean(dtype=np.float64) - 1) < 5 * np.sqrt(p / ((1 - p) * n))


@pytest.mark.parametrize("make", [nn.Dropout, nn.Dropout2d])
def test_eval_mode_is_the_identity(make):
    x = x_without_zeros((3, 4, 2, 2))
    layer = make(0.7).eval()
    np.testing.assert_array_equal(layer(x), x)
    grad = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    np.testing.assert_array_equal(layer.backward(grad), grad)
    layer.train()
    assert (layer(x) == 0).any()


def test_p_zero_is_the_identity_and_p_one_drops_everything():
    x = x_without_zeros((5, 7))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    layer = nn.Dropout(1.0)
    out = layer(x)
    assert np.isfinite(out).all() and not out.any()
    assert not layer.backward(np.ones_like(x)).any()


def test_masks_come_from_numcnns_seeded_generator():
    x = x_without_zeros((8, 8))
    numcnn.manual_seed(11)
    first = nn.Dropout(0.5)(x)
    numcnn.manual_seed(11)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x), first)
    assert not np.array_equal(nn.Dropout(0.5)(x), first)


@pytest.mark.parametrize("make", [lambda: SeededDropout(0.3), lambda: SeededDropout2d(0.5),
                                  lambda: nn.Dropout(0.0), lambda: nn.Dropout(0.5).eval()])
def test_numerical_gradients_with_a_fixed_mask(make):
    check_layer_gradients(make(), x_without_zeros((3, 4, 2, 2)))


def test_inplace_writes_into_the_input():
    x = x_without_zeros((4, 5)).astype(np.float32)
    original = x.copy()
    out = nn.Dropout(0.5, inplace=True)(x)
    assert out is x
    kept = x != 0
    np.testing.assert_allclose(x[kept], 2 * original[kept])


def test_functional_forms_and_dtypes():
    x = x_without_zeros((4, 5)).astype(np.float32)
    assert F.dropout(x, 0.5).dtype == np.float32
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False), x)
    np.testing.assert_array_equal(F.dropout2d(x[:, :, None, None], 0.5, training=False),
                                  x[:, :, None, None])


def test_errors():
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but "
                                         "got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="between 0 and 1, but got -0.1"):
        F.dropout(np.ones(3), -0.1)
    with pytest.raises(ShapeError, match=r"Dropout2d: expected a 4-D input \(n, c, h, w\) or a "
                                         r"3-D input \(n, c, l\), got shape \(2, 3\)"):
        nn.Dropout2d()(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"Dropout2d: .*got shape \(2, 3\)"):
        nn.Dropout2d().output_shape((2, 3))


def test_attributes_follow_pytorch():
    layer = nn.Dropout2d(0.25)
    assert layer.p == 0.25 and layer.inplace is False
    assert repr(nn.Dropout()) == repr(torch.nn.Dropout())
