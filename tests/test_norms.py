"""LayerNorm, GroupNorm and InstanceNorm2d against PyTorch (several training steps, then eval),
by float64 numerical gradients, and their errors."""

import numpy as np
import pytest
import torch

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, tol


def torch_dtype(dtype):
    """The oracle runs in float64 whatever numcnn's dtype: PyTorch's own float32 gradients lose
    digits to cancellation on tiny groups (two values), numcnn accumulates in float64."""
    return torch.float64


def twin_params(layer, t_layer, dtype, seed):
    """Random affine parameters, the same in both layers."""
    rng = np.random.default_rng(seed)
    for name, param in layer.named_parameters():
        param.data = rng.uniform(0.5, 1.5, param.shape).astype(dtype) if name == "weight" else \
            rng.standard_normal(param.shape).astype(dtype)
        with torch.no_grad():
            getattr(t_layer, name).copy_(torch.tensor(param.data, dtype=torch.float64))


def step_both(layer, t_layer, x, grad, dtype):
    layer.zero_grad()
    t_layer.zero_grad()
    out = layer(x)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad, dtype=torch.float64))
    assert out.dtype == dtype and grad_x.dtype == dtype and out.shape == x.shape
    assert layer.output_shape(x.shape) == x.shape
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
    t_params = dict(t_layer.named_parameters())
    for name, param in layer.named_parameters():
        np.testing.assert_allclose(param.grad, t_params[name].grad.numpy(), **tol(dtype),
                                   err_msg=name)
    t_state = t_layer.state_dict()
    assert list(layer.state_dict()) == list(t_state)
    for name, value in layer.state_dict().items():
        np.testing.assert_allclose(value, t_state[name].numpy(), **tol(dtype), err_msg=name)


def run_steps(layer, t_layer, shape, dtype, seed, steps=3):
    rng = np.random.default_rng(seed)
    twin_params(layer, t_layer, dtype, seed)
    for step in range(steps):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        step_both(layer, t_layer, x, rng.standard_normal(shape).astype(dtype), dtype)
    layer.eval()
    t_layer.eval()
    x = rng.standard_normal(shape).astype(dtype)
    step_both(layer, t_layer, x, rng.standard_normal(shape).astype(dtype), dtype)


GRID = [(dtype, seed) for dtype in (np.float32, np.float64) for seed in range(4)]


@pytest.mark.parametrize("dtype, seed", GRID)
def test_layer_norm_matches_pytorch(dtype, seed):
    rng = np.random.default_rng(seed)
    shape = [(3, 5), (2, 3, 4), (2, 3, 4, 5), (4, 6)][seed]
    k = int(rng.integers(1, len(shape) + 1))
    normalized = shape[len(shape) - k:]
    affine, bias = bool(rng.integers(2)), bool(rng.integers(2))
    eps = float(rng.choice([1e-5, 1e-3]))
    layer = nn.LayerNorm(normalized, eps=eps, elementwise_affine=affine, bias=bias).to(dtype)
    t_layer = torch.nn.LayerNorm(normalized, eps=eps, elementwise_affine=affine, bias=bias)
    run_steps(layer, t_layer.to(torch_dtype(dtype)), shape, dtype, seed)


@pytest.mark.parametrize("dtype, seed", GRID)
def test_group_norm_matches_pytorch(dtype, seed):
    rng = np.random.default_rng(seed)
    c = int(rng.choice([2, 4, 6]))
    groups = int(rng.choice([g for g in (1, 2, 3, 6) if c % g == 0]))
    shape = [(2, c), (3, c, 5), (2, c, 3, 4), (1, c, 2, 2, 3)][seed]
    affine = bool(rng.integers(2))
    layer = nn.GroupNorm(groups, c, affine=affine).to(dtype)
    t_layer = torch.nn.GroupNorm(groups, c, affine=affine).to(torch_dtype(dtype))
    run_steps(layer, t_layer, shape, dtype, seed)


@pytest.mark.parametrize("dtype, seed", GRID)
@pytest.mark.parametrize("affine, track", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_instance_norm_matches_pytorch(dtype, seed, affine, track):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 4))
    shape = [(2, c, 3, 4), (c, 4, 3), (3, c, 2, 2), (1, c, 5, 1)][seed]
    momentum = [0.1, 0.5, None, 0.1][seed]
    layer = nn.InstanceNorm2d(c, momentum=momentum, affine=affine,
                              track_running_stats=track).to(dtype)
    t_layer = torch.nn.InstanceNorm2d(c, momentum=momentum, affine=affine,
                                      track_running_stats=track).to(torch_dtype(dtype))
    run_steps(layer, t_layer, shape, dtype, seed)


@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.LayerNorm((3, 4)), (2, 3, 4)),
    (lambda: nn.LayerNorm(4, elementwise_affine=False), (3, 4)),
    (lambda: nn.GroupNorm(2, 4), (2, 4, 3)),
    (lambda: nn.GroupNorm(1, 3, affine=False), (2, 3, 2, 2)),
    (lambda: nn.InstanceNorm2d(2, affine=True), (2, 2, 3, 2)),
    (lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True).eval(), (2, 2, 3, 2)),
])
def test_numerical_gradients(layer, shape):
    rng = np.random.default_rng(0)
    layer = layer()
    for name, param in layer.named_parameters():
        param.data = rng.uniform(0.5, 1.5, param.shape) if name == "weight" else \
            rng.standard_normal(param.shape)
    if getattr(layer, "running_mean", None) is not None:
        layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
        layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1)


def test_pytorch_defaults_names_and_init():
    ln = nn.LayerNorm([2, 3])
    assert ln.normalized_shape == (2, 3) and ln.eps == 1e-5
    assert ln.weight.data.tolist() == [[1] * 3] * 2 and ln.weight.dtype == np.float32
    assert list(ln.state_dict()) == ["weight", "bias"]
    assert nn.LayerNorm(3, bias=False).bias is None
    gn = nn.GroupNorm(2, 4)
    assert list(gn.state_dict()) == list(torch.nn.GroupNorm(2, 4).state_dict())
    inorm = nn.InstanceNorm2d(3)
    assert not inorm.affine and not inorm.track_running_stats and inorm.momentum == 0.1
    assert list(nn.InstanceNorm2d(3, affine=True, track_running_stats=True).state_dict()) == \
        list(torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=True).state_dict())


def test_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ShapeError, match="normalized_shape"):
        nn.LayerNorm(5)(np.zeros((2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 4, \*\)"):
        nn.GroupNorm(2, 4)(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ShapeError, match="more than 1 spatial element"):
        nn.InstanceNorm2d(2)(np.zeros((2, 2, 1, 1), np.float32))
    with pytest.raises(ShapeError, match="4-D input"):
        nn.InstanceNorm2d(2).output_shape((2, 2))


def test_stable_for_constant_and_huge_inputs():
    x = np.full((2, 4, 3, 3), 1e6, dtype=np.float32)
    for layer in (nn.LayerNorm((4, 3, 3)), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4)):
        out = layer(x)
        grad = layer.backward(np.ones_like(x))
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(out, 0, atol=1e-6)
    y = F.layer_norm(np.array([[1e30, -1e30, 0.0]], dtype=np.float32), 3)
    np.testing.assert_allclose(y, [[1.2247449, -1.2247449, 0]], rtol=1e-6)
