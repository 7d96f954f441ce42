"""GELU, SiLU, ELU, Softplus, Hardswish and PReLU against PyTorch, at extreme inputs, and by
float64 numerical gradients."""

import numpy as np
import pytest
import torch

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, tol

# (numcnn layer, the torch layer with the same arguments)
CASES = [
    (lambda: nn.GELU(), lambda: torch.nn.GELU()),
    (lambda: nn.GELU(approximate="tanh"), lambda: torch.nn.GELU(approximate="tanh")),
    (lambda: nn.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: nn.ELU(), lambda: torch.nn.ELU()),
    (lambda: nn.ELU(alpha=0.3), lambda: torch.nn.ELU(alpha=0.3)),
    (lambda: nn.Softplus(), lambda: torch.nn.Softplus()),
    (lambda: nn.Softplus(beta=2.5, threshold=3.0), lambda: torch.nn.Softplus(2.5, 3.0)),
    (lambda: nn.Hardswish(), lambda: torch.nn.Hardswish()),
    (lambda: nn.PReLU(), lambda: torch.nn.PReLU()),
    (lambda: nn.PReLU(3, init=0.1), lambda: torch.nn.PReLU(3, init=0.1)),
]
IDS = ["gelu", "gelu-tanh", "silu", "elu", "elu-0.3", "softplus", "softplus-beta", "hardswish",
       "prelu", "prelu-3"]


def run_both(make, make_torch, x, dtype, seed=0):
    layer, t_layer = make().to(dtype), make_torch().to(torch.float64 if dtype == np.float64
                                                       else torch.float32)
    if isinstance(layer, nn.PReLU):      # a random slope per channel, the same in both
        layer.weight.data = np.random.default_rng(seed).uniform(-0.5, 0.5, layer.weight.shape
                                                                ).astype(dtype)
        with torch.no_grad():
            t_layer.weight.copy_(torch.tensor(layer.weight.data))
    grad = np.random.default_rng(seed + 1).standard_normal(x.shape).astype(dtype)
    out = layer(x)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.dtype == dtype and grad_x.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
    for name, param in layer.named_parameters():
        np.testing.assert_allclose(param.grad, dict(t_layer.named_parameters())[name].grad,
                                   **tol(dtype))


@pytest.mark.parametrize("make, make_torch", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_matches_pytorch_on_random_inputs(make, make_torch, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = [(2, 3, 4, 5), (5, 3), (4, 3, 7)][seed]
    x = (rng.standard_normal(shape) * rng.choice([1, 4])).astype(dtype)
    x.flat[:4] = [-3.0, 3.0, 0.0, 2.5]             # the kinks of Hardswish and ReLU-like ones
    run_both(make, make_torch, x, dtype, seed)


@pytest.mark.parametrize("make, make_torch", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_extreme_inputs(make, make_torch, dtype):
    big = 1e30 if dtype == np.float32 else 1e300
    x = np.array([[-big, -1e4, -100.0, 100.0, 1e4, big]] * 3, dtype=dtype).T.copy()  # (6, 3)
    layer = make().to(dtype)
    out = layer(x)
    grad = layer.backward(np.ones_like(x))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    # every one of these tends to the identity for large positive x, with slope 1
    np.testing.assert_allclose(out[-3:], x[-3:], rtol=1e-6)
    np.testing.assert_allclose(grad[-3:], 1, rtol=1e-6)
    if not isinstance(layer, (nn.ELU, nn.PReLU)):   # ... and to 0 (slope 0) for large negative x
        np.testing.assert_allclose(out[:3], 0, atol=1e-30)
        np.testing.assert_allclose(grad[:3], 0, atol=1e-30)
    if isinstance(layer, nn.ELU):
        np.testing.assert_allclose(out[:3], -layer.alpha)


@pytest.mark.parametrize("make, make_torch", CASES, ids=IDS)
def test_numerical_gradients(make, make_torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 3)) * 3
    layer = make()
    if isinstance(layer, nn.PReLU):
        layer.weight.data = rng.uniform(-0.5, 0.5, layer.weight.shape).astype(np.float32)
    # keep away from the kinks, where the two one-sided derivatives differ
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01
    x[np.abs(x) < 1e-3] += 0.01
    check_layer_gradients(layer, x, rtol=1e-6, atol=1e-7)


def test_functional_forms_match_the_layers():
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(F.gelu(x, approximate="tanh"), nn.GELU("tanh")(x))
    np.testing.assert_array_equal(F.softplus(x, 2.0, 1.0), nn.Softplus(2.0, 1.0).double()(x))
    out, cache = F.elu_forward(x, 0.5)
    np.testing.assert_array_equal(out, F.elu(x, 0.5))
    np.testing.assert_allclose(F.elu_backward(np.ones_like(x), cache),
                               np.where(x > 0, 1, 0.5 * np.exp(x)))


def test_pytorch_defaults_and_errors():
    assert nn.PReLU().weight.data.tolist() == [0.25]
    assert nn.PReLU(4).weight.shape == (4,)
    assert nn.PReLU(4).weight.dtype == np.float32
    with pytest.raises(ShapeError, match="num_parameters"):
        nn.PReLU(4)(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ShapeError, match="num_parameters"):
        nn.PReLU(4).output_shape((2, 3, 5))
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


@pytest.mark.parametrize("shape", [(7,), (3, 5, 5)])
def test_prelu_per_channel_unbatched_follows_pytorch(shape):
    """PyTorch's channel axis is axis 1 for any rank >= 2 (so (C, H, W) uses H); 1-D is one
    channel."""
    num = 1 if len(shape) == 1 else shape[1]
    x = np.random.default_rng(0).standard_normal(shape)
    run_both(lambda: nn.PReLU(num), lambda: torch.nn.PReLU(num), x, np.float64)


def test_exact_gelu_without_scipy_uses_the_standard_library(monkeypatch):
    """The fallback erfc (math.erfc per element) gives the same numbers as PyTorch."""
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    x = np.random.default_rng(0).standard_normal((4, 5)) * 3
    run_both(lambda: nn.GELU(), lambda: torch.nn.GELU(), x, np.float64)
