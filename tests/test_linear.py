"""Linear and Flatten against PyTorch, a loop reference, numerical gradients and shape errors."""

import math

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

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
dtypes = st.sampled_from([np.float32, np.float64])


def linear_loops(x, weight, bias):
    """y[i, o] = sum_k x[i, k] * w[o, k] + b[o], one output at a time."""
    n, out_f = x.shape[0], weight.shape[0]
    y = np.zeros((n, out_f))
    for i in range(n):
        for o in range(out_f):
            y[i, o] = sum(x[i, k] * weight[o, k] for k in range(x.shape[1]))
            y[i, o] += 0.0 if bias is None else bias[o]
    return y


def torch_linear_like(layer, dtype):
    """A torch.nn.Linear holding the numcnn layer's weights."""
    t_layer = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    t_layer.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        t_layer.weight.copy_(torch.tensor(layer.weight.data))
        if layer.bias is not None:
            t_layer.bias.copy_(torch.tensor(layer.bias.data))
    return t_layer


@SETTINGS
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       in_f=st.integers(1, 9), out_f=st.integers(1, 9), bias=st.booleans(), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_linear_matches_pytorch(lead, in_f, out_f, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(in_f, out_f, bias=bias).to(dtype)
    t_layer = torch_linear_like(layer, dtype)
    x = rng.standard_normal((*lead, in_f)).astype(dtype)
    grad = rng.standard_normal((*lead, out_f)).astype(dtype)
    out = layer(x)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.shape == (*lead, out_f) == layer.output_shape(x.shape) and out.dtype == dtype
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(layer.weight.grad, t_layer.weight.grad.numpy(), **tol(dtype))
    if bias:
        np.testing.assert_allclose(layer.bias.grad, t_layer.bias.grad.numpy(), **tol(dtype))


def test_linear_matches_the_loop_reference():
    rng = np.random.default_rng(0)
    for bias in (True, False):
        layer = nn.Linear(5, 3, bias=bias).double()
        x = rng.standard_normal((4, 5))
        b = None if layer.bias is None else layer.bias.data
        np.testing.assert_allclose(layer(x), linear_loops(x, layer.weight.data, b), rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_numerical_gradients(bias):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    check_layer_gradients(nn.Linear(4, 3, bias=bias), x)


def test_gradients_accumulate_over_backward_calls():
    layer = nn.Linear(3, 2).double()
    x = np.random.default_rng(0).standard_normal((4, 3))
    grad = np.ones((4, 2))
    for _ in range(2):
        layer(x)
        layer.backward(grad)
    np.testing.assert_allclose(layer.weight.grad, 2 * grad.T @ x, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * grad.sum(axis=0), rtol=1e-12)


def test_default_init_is_pytorchs_uniform_and_seeded():
    numcnn.manual_seed(3)
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = layer.weight.data, layer.bias.data
    assert w.shape == (300, 400) and b.shape == (300,) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has standard deviation a / sqrt(3); 120,000 samples pin it to ~0.3%.
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    numcnn.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(400, 300).weight.data, w)
    assert nn.Linear(4, 2, bias=False).bias is None


def test_attributes_state_dict_and_repr_follow_pytorch():
    layer = nn.Linear(6, 4)
    assert (layer.in_features, layer.out_features) == (6, 4)
    assert list(layer.state_dict()) == list(torch.nn.Linear(6, 4).state_dict())
    assert repr(layer) == "Linear(in_features=6, out_features=4, bias=True)"
    assert layer.num_parameters() == 28


def test_float64_input_is_cast_to_the_layers_float32():
    layer = nn.Linear(3, 2)
    assert layer(np.ones((2, 3))).dtype == np.float32
    assert layer.backward(np.ones((2, 2))).dtype == np.float32


def test_flatten_size_mismatch_says_what_the_layer_before_produces():
    layer = nn.Linear(1568, 10)
    message = (r"^Linear: expected input \(\*, 1568\) \(in_features=1568\), got \(64, 1152\): the "
               r"layer before produces 1152 features per sample$")
    with pytest.raises(ShapeError, match=message):
        layer(np.zeros((64, 1152), dtype=np.float32))
    with pytest.raises(ShapeError, match=message):
        layer.output_shape((64, 1152))
    with pytest.raises(ShapeError, match=r"Linear: expected input \(\*, 1568\).*0-D input"):
        layer(np.float32(1.0))


def test_in_a_sequential_the_mismatch_names_the_layer_index():
    model = nn.Sequential(nn.Flatten(), nn.Linear(1568, 10))
    with pytest.raises(ShapeError, match=r"layer 1 \(Linear\): .*1568.*got \(2, 1152\).*1152 "
                                         r"features per sample"):
        model.output_shape((2, 32, 6, 6))


@SETTINGS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=5).map(tuple), data=st.data())
def test_flatten_matches_pytorch(shape, data):
    ndim = len(shape)
    start = data.draw(st.integers(-ndim, ndim - 1), label="start_dim")
    end = data.draw(st.integers(start % ndim, ndim - 1), label="end_dim")
    end = data.draw(st.sampled_from([end, end - ndim]), label="end_dim sign")
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    layer = nn.Flatten(start, end)
    out = layer(x)
    expected = torch.flatten(torch.tensor(x), start, end).numpy()
    assert out.shape == expected.shape == layer.output_shape(shape)
    np.testing.assert_array_equal(out, expected)
    grad = np.arange(out.size, dtype=np.float32).reshape(out.shape)
    np.testing.assert_array_equal(layer.backward(grad), grad.reshape(shape))


def test_flatten_defaults_keep_the_batch_axis_and_functional_flattens_all():
    x = np.zeros((2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60) and F.flatten(x).shape == (120,)
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    check_layer_gradients(nn.Flatten(), np.random.default_rng(0).standard_normal((2, 3, 2)))


def test_flatten_errors_name_the_dims_and_the_shape():
    with pytest.raises(ShapeError, match=r"Flatten: start_dim=1, end_dim=-1 are out of range for "
                                         r"a 1-D input of shape \(5,\)"):
        nn.Flatten()(np.zeros(5))
    with pytest.raises(ShapeError, match=r"Flatten: start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1).output_shape((2, 3, 4))
