"""BatchNorm1d / BatchNorm2d against PyTorch over several steps, a loop reference, gradients."""

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


def torch_twin(layer, dtype):
    """The torch layer of the same class and options, holding the same (random) affine weights."""
    cls = getattr(torch.nn, type(layer).__name__)
    t_layer = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                  affine=layer.affine, track_running_stats=layer.track_running_stats)
    t_layer.to(torch.float64 if dtype == np.float64 else torch.float32)
    if layer.affine:
        rng = np.random.default_rng(5)
        layer.weight.data = rng.uniform(0.5, 1.5, layer.num_features).astype(dtype)
        layer.bias.data = rng.standard_normal(layer.num_features).astype(dtype)
        with torch.no_grad():
            t_layer.weight.copy_(torch.tensor(layer.weight.data))
            t_layer.bias.copy_(torch.tensor(layer.bias.data))
    return t_layer


def step_both(layer, t_layer, x, grad, dtype):
    """One forward + backward of both layers; compare outputs, gradients and buffers."""
    layer.zero_grad()
    out = layer(x)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_layer.zero_grad()
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.dtype == dtype and grad_x.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
    if layer.affine:
        np.testing.assert_allclose(layer.weight.grad, t_layer.weight.grad.numpy(), **tol(dtype))
        np.testing.assert_allclose(layer.bias.grad, t_layer.bias.grad.numpy(), **tol(dtype))
    t_state = t_layer.state_dict()
    assert list(layer.state_dict()) == list(t_state)
    for name, value in layer.state_dict().items():
        assert value.dtype == t_state[name].numpy().dtype, name
        np.testing.assert_allclose(value, t_state[name].numpy(), **tol(dtype), err_msg=name)


@SETTINGS
@given(kind=st.sampled_from(["1d-2", "1d-3", "2d"]), n=st.integers(2, 5), c=st.integers(1, 4),
       spatial=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]),
       momentum=st.sampled_from([0.1, 0.6, None]), affine=st.booleans(),
       track=st.booleans(), seed=st.integers(0, 2**16))
def test_batchnorm_matches_pytorch_over_training_steps_and_eval(kind, n, c, spatial, dtype,
                                                               momentum, affine, track, seed):
    rng = np.random.default_rng(seed)
    shape = {"1d-2": (n, c), "1d-3": (n, c, spatial), "2d": (n, c, spatial, spatial + 1)}[kind]
    cls = nn.BatchNorm2d if kind == "2d" else nn.BatchNorm1d
    layer = cls(c, momentum=momentum, affine=affine, track_running_stats=track).to(dtype)
    t_layer = torch_twin(layer, dtype)
    for step in range(3):                      # running statistics accumulate over the steps
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        grad = rng.standard_normal(shape).astype(dtype)
        step_both(layer, t_layer, x, grad, dtype)
    layer.eval()
    t_layer.eval()
    x = rng.standard_normal(shape).astype(dtype)
    step_both(layer, t_layer, x, rng.standard_normal(shape).astype(dtype), dtype)


def batch_norm_loops(x, weight, bias, eps):
    """Training-mode batch norm, one channel at a time, statistics over every other axis."""
    out = np.empty_like(x)
    for ch in range(x.shape[1]):
        values = x[:, ch]
        mean = values.mean()
        var = ((values - mean) ** 2).mean()
        out[:, ch] = (values - mean) / np.sqrt(var + eps) * weight[ch] + bias[ch]
    return out


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_fast_path_matches_the_loop_reference(shape):
    x = np.random.default_rng(0).standard_normal(shape) * 3 + 1
    layer = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3).double()
    layer.weight.data = np.array([0.5, 1.0, 2.0])
    layer.bias.data = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(layer(x), batch_norm_loops(x, layer.weight.data, layer.bias.data,
                                                          1e-5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("affine, track", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
def test_numerical_gradients(train, affine, track, shape):
    rng = np.random.default_rng(1)
    layer = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(
        shape[1], affine=affine, track_running_stats=track)
    layer.double()
    if affine:
        layer.weight.data = rng.uniform(0.5, 1.5, shape[1])
        layer.bias.data = rng.standard_normal(shape[1])
    if track:
        layer.running_mean[...] = rng.standard_normal(shape[1])
        layer.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(train)
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1)


def test_running_statistics_use_the_unbiased_variance_and_count_batches():
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    layer = nn.BatchNorm2d(2)
    layer(x)
    values = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(layer.running_mean, 0.1 * values.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * values.var(axis=1, ddof=1),
                               rtol=1e-5)
    assert layer.num_batches_tracked.shape == () and layer.num_batches_tracked.dtype == np.int64
    layer(x)
    assert int(layer.num_batches_tracked) == 2
    layer.eval()
    layer(x)
    assert int(layer.num_batches_tracked) == 2


def test_momentum_none_is_a_cumulative_average():
    rng = np.random.default_rng(0)
    layer = nn.BatchNorm1d(3, momentum=None).double()
    batches = [rng.standard_normal((6, 3)) * (i + 1) + i for i in range(4)]
    for batch in batches:
        layer(batch)
    np.testing.assert_allclose(layer.running_mean, np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-12)


def test_eval_uses_running_stats_unless_they_are_not_tracked():
    x = np.random.default_rng(0).standard_normal((8, 3)) * 4 + 2
    layer = nn.BatchNorm1d(3).double().eval()
    np.testing.assert_allclose(layer(x), x / np.sqrt(1 + 1e-5), rtol=1e-12)   # mean 0, var 1
    untracked = nn.BatchNorm1d(3, track_running_stats=False).double().eval()
    out = untracked(x)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    assert untracked.running_mean is None and list(untracked.state_dict()) == ["weight", "bias"]


def test_loading_a_pytorch_state_dict_gives_pytorchs_eval_outputs():
    torch.manual_seed(0)
    t_layer = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        for _ in range(3):
            t_layer(torch.randn(5, 4, 3, 3) * 2 + 1)
    t_layer.weight.data.uniform_(0.5, 1.5)
    t_layer.eval()
    layer = nn.BatchNorm2d(4)
    layer.load_state_dict({k: v.numpy() for k, v in t_layer.state_dict().items()})
    layer.eval()
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x), t_layer(torch.tensor(x)).detach().numpy(),
                               **tol(np.float32))
    assert int(layer.num_batches_tracked) == 3


def test_float32_with_a_large_offset_stays_accurate():
    # The variance is taken about the mean (two passes), not as E[x^2] - E[x]^2.
    x = (np.random.default_rng(0).standard_normal((64, 3, 16, 16)) + 100).astype(np.float32)
    layer = nn.BatchNorm2d(3)
    t_layer = torch.nn.BatchNorm2d(3)
    grad = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    step_both(layer, t_layer, x, grad, np.float32)


def test_input_dtype_follows_the_parameters():
    layer = nn.BatchNorm2d(2)
    assert layer(np.ones((2, 2, 2, 2))).dtype == np.float32
    assert layer.backward(np.ones((2, 2, 2, 2))).dtype == np.float32


def test_shape_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ShapeError, match=r"BatchNorm2d: expected a 4-D input \(N, C, H, W\), got "
                                         r"a 2-D input of shape \(8, 16\)"):
        nn.BatchNorm2d(16)(np.zeros((8, 16)))
    with pytest.raises(ShapeError, match=r"BatchNorm2d: expected 16 channels \(num_features=16\), "
                                         r"got input of shape \(8, 3, 4, 4\) with 3 channels"):
        nn.BatchNorm2d(16).output_shape((8, 3, 4, 4))
    with pytest.raises(ShapeError, match=r"BatchNorm1d: expected a 2-D input \(N, C\) or a 3-D "
                                         r"input \(N, C, L\), got a 4-D input"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ShapeError, match=r"expected more than 1 value per channel when training, "
                                         r"got input shape \(1, 3\)"):
        nn.BatchNorm1d(3)(np.zeros((1, 3)))
    with pytest.raises(ShapeError, match=r"batch_norm: weight should have shape \(3,\)"):
        F.batch_norm(np.zeros((2, 3)), weight=np.ones(4), training=True)


def test_attributes_and_defaults_follow_pytorch():
    layer = nn.BatchNorm2d(6)
    t_layer = torch.nn.BatchNorm2d(6)
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
        assert getattr(layer, name) == getattr(t_layer, name), name
    for name, value in t_layer.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[name], value.numpy())
    assert nn.BatchNorm1d(3, affine=False).weight is None
    assert repr(layer) == ("BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, "
                           "track_running_stats=True)")


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_slices_and_channel_planes(monkeypatch, training, affine):
    # the element-wise passes walk the batch in cache-sized slices and, from a few samples on,
    # broadcast per-channel values as (c, m) planes; tiny slices force several slices of
    # uneven size (7 samples in slices of 2) on a small input, checked against PyTorch
    from numcnn.functional import normalization
    monkeypatch.setattr(normalization, "_SLICE_BYTES", 2 * 3 * 20 * 8)
    assert len(normalization._batch_slices(np.zeros((7, 3, 20)))) == 4
    rng = np.random.default_rng(3)
    layer = nn.BatchNorm2d(3, affine=affine).double()
    t_layer = torch_twin(layer, np.float64).double()
    layer.running_mean[...] = t_layer.running_mean.numpy()[...] = rng.standard_normal(3)
    layer.running_var[...] = t_layer.running_var.numpy()[...] = rng.uniform(0.5, 2.0, 3)
    layer.train(training)
    t_layer.train(training)
    x = rng.standard_normal((7, 3, 4, 5)) * 2 + 1
    step_both(layer, t_layer, x, rng.standard_normal(x.shape), np.float64)
