"""Activations against PyTorch, numerical gradients, stability for huge inputs."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, tol

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64])

# (numcnn layer factory, the same function in torch)
ELEMENTWISE = {
    "relu": (nn.ReLU, torch.relu),
    "leaky_relu": (nn.LeakyReLU, torch.nn.functional.leaky_relu),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "tanh": (nn.Tanh, torch.tanh),
    "gaussian": (nn.Gaussian, lambda t: torch.exp(-t ** 2)),
}


def away_from_zero(x):
    """Keep values off the kink of ReLU-like functions, where one-sided differences disagree."""
    return x + np.where(x >= 0, 0.1, -0.1).astype(x.dtype)


def compare_with_torch(layer, torch_fn, x, dtype):
    """Forward and backward (random upstream gradient) of ``layer`` against ``torch_fn``."""
    grad = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    grad_copy = grad.copy()
    out = layer(x)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_out = torch_fn(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.dtype == dtype and grad_x.dtype == dtype
    assert out.shape == x.shape and grad_x.shape == x.shape
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
    np.testing.assert_array_equal(grad, grad_copy)       # backward leaves grad_out alone


@SETTINGS
@given(name=st.sampled_from(sorted(ELEMENTWISE)), shape=shapes, dtype=dtypes,
       seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 3.0, 30.0]))
def test_elementwise_matches_pytorch(name, shape, dtype, seed, scale):
    make, torch_fn = ELEMENTWISE[name]
    x = away_from_zero(np.random.default_rng(seed).standard_normal(shape).astype(dtype) * scale)
    compare_with_torch(make(), torch_fn, x, dtype)


@SETTINGS
@given(slope=st.sampled_from([0.0, 0.01, 0.2, 1.0, 1.5, -0.3]), shape=shapes, dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_leaky_relu_any_slope_matches_pytorch(slope, shape, dtype, seed):
    x = away_from_zero(np.random.default_rng(seed).standard_normal(shape).astype(dtype))
    compare_with_torch(nn.LeakyReLU(slope), lambda t: torch.nn.functional.leaky_relu(t, slope),
                       x, dtype)


@SETTINGS
@given(shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16), log=st.booleans(),
       data=st.data())
def test_softmax_and_log_softmax_match_pytorch(shape, dtype, seed, log, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype) * 5
    layer = nn.LogSoftmax(dim) if log else nn.Softmax(dim)
    fn = torch.log_softmax if log else torch.softmax
    compare_with_torch(layer, lambda t: fn(t, dim), x, dtype)


@pytest.mark.parametrize("make", [nn.ReLU, lambda: nn.LeakyReLU(0.1), lambda: nn.LeakyReLU(-0.5),
                                  nn.Sigmoid, nn.Tanh, nn.Gaussian, lambda: nn.Softmax(1),
                                  lambda: nn.LogSoftmax(-1), lambda: nn.Softmax(0)])
def test_numerical_gradients(make):
    x = away_from_zero(np.random.default_rng(0).standard_normal((3, 4, 2)))
    check_layer_gradients(make(), x)


def test_gaussian_is_exp_of_minus_x_squared_with_its_derivative():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    layer = nn.Gaussian()
    np.testing.assert_allclose(layer(x), np.exp(-x ** 2), rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), -2 * x * np.exp(-x ** 2),
                               rtol=1e-15)


def test_sigmoid_has_the_right_sign():
    # One course text writes 1 / (1 + exp(x)); the sigmoid rises: sigmoid(2) > 1/2.
    np.testing.assert_allclose(F.sigmoid(np.array([2.0, -2.0])),
                               [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))], rtol=1e-15)


HUGE = [-1000.0, -100.0, -88.8, -20.0, -1e-3, 0.0, 1e-3, 20.0, 88.8, 100.0, 1000.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gaussian", "softmax", "log_softmax"])
def test_huge_inputs_give_no_overflow_and_no_nan(name, dtype):
    x = np.array([HUGE, HUGE[::-1]], dtype=dtype)
    layer = {"softmax": lambda: nn.Softmax(1), "log_softmax": lambda: nn.LogSoftmax(1)}.get(
        name, ELEMENTWISE.get(name, (None,))[0])()
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        out = layer(x)
        grad = layer.backward(np.ones_like(x))
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    torch_fn = {"softmax": lambda t: torch.softmax(t, 1),
                "log_softmax": lambda t: torch.log_softmax(t, 1)}.get(name, ELEMENTWISE.get(
                    name, (None, None))[1])
    expected = torch_fn(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_sigmoid_tails_are_accurate_to_rounding():
    x = np.array([-700.0, -50.0, -30.0, 30.0])
    exact = np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))
    np.testing.assert_allclose(F.sigmoid(x), exact, rtol=1e-15)
    assert F.sigmoid(np.float32([-80.0]))[0] > 0       # the tanh form would round this to 0


def test_relu_and_leaky_relu_inplace_write_into_the_input():
    x = np.array([-2.0, -0.5, 1.0, 3.0], dtype=np.float32)
    layer = nn.ReLU(inplace=True)
    out = layer(x)
    assert out is x and np.array_equal(x, [0, 0, 1, 3])
    np.testing.assert_array_equal(layer.backward(np.ones(4, np.float32)), [0, 0, 1, 1])
    x = np.array([-2.0, -0.5, 1.0, 3.0], dtype=np.float32)
    layer = nn.LeakyReLU(0.5, inplace=True)
    assert layer(x) is x
    np.testing.assert_allclose(x, [-1.0, -0.25, 1.0, 3.0])
    np.testing.assert_allclose(layer.backward(np.ones(4, np.float32)), [0.5, 0.5, 1, 1])
    with pytest.raises(ValueError, match="inplace=True needs a non-negative negative_slope"):
        nn.LeakyReLU(-0.1, inplace=True)(np.ones(2))


def test_relu_gradient_at_zero_is_zero_as_in_pytorch():
    layer = nn.ReLU()
    layer(np.zeros(3))
    np.testing.assert_array_equal(layer.backward(np.ones(3)), np.zeros(3))


def test_softmax_without_dim_follows_pytorchs_implicit_rule_and_warns():
    for shape, axis in [((5,), 0), ((2, 5), 1), ((2, 3, 4), 0), ((2, 3, 4, 5), 1)]:
        x = np.random.default_rng(0).standard_normal(shape)
        with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
            out = nn.Softmax()(x)
        np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = torch.nn.Softmax()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_softmax_dim_out_of_range_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"softmax: dim 2 is out of range for a 2-D input"):
        nn.Softmax(dim=2)(np.zeros((2, 3)))


def test_attributes_and_repr_follow_pytorch():
    assert nn.LeakyReLU().negative_slope == 0.01 and nn.ReLU().inplace is False
    assert nn.Softmax(dim=1).dim == 1 and nn.LogSoftmax(dim=0).dim == 0
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert nn.Tanh().output_shape((2, 3, 4)) == (2, 3, 4)


def test_float32_stays_float32_and_functional_forms_agree():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for fn, fwd in [(F.relu, F.relu_forward), (F.sigmoid, F.sigmoid_forward),
                    (F.tanh, F.tanh_forward), (F.gaussian, F.gaussian_forward)]:
        assert fn(x).dtype == np.float32
        np.testing.assert_array_equal(fn(x), fwd(x)[0])
    assert F.leaky_relu(x, 0.1).dtype == np.float32 and F.softmax(x, 1).dtype == np.float32
