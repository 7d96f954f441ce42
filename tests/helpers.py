"""Shared test utilities: numerical gradients (central differences) and PyTorch conversion."""

from __future__ import annotations

import numpy as np
import torch


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f(x) / d x by central differences, where f returns a scalar; x is perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        saved = flat_x[i]
        flat_x[i] = saved + eps
        plus = f()
        flat_x[i] = saved - eps
        minus = f()
        flat_x[i] = saved
        flat_g[i] = (plus - minus) / (2 * eps)
    return grad


def check_layer_gradients(layer, x: np.ndarray, rtol: float = 1e-6, atol: float = 1e-8,
                          seed: int = 0) -> None:
    """Float64 gradient check of a layer: input gradient and every parameter's gradient.

    The scalar is ``sum(forward(x) * r)`` for a fixed random ``r``, so ``r`` is the upstream
    gradient handed to ``backward``.
    """
    layer.double()
    x = np.array(x, dtype=np.float64)
    r = np.random.default_rng(seed).standard_normal(layer(x).shape)

    def loss():
        return float(np.sum(layer(x) * r))

    layer.zero_grad()
    layer(x)
    grad_x = layer.backward(r.copy())
    np.testing.assert_allclose(grad_x, numerical_grad(loss, x), rtol=rtol, atol=atol,
                               err_msg="input gradient")
    for name, param in layer.named_parameters():
        analytic = param.grad.copy()
        np.testing.assert_allclose(analytic, numerical_grad(loss, param.data), rtol=rtol,
                                   atol=atol, err_msg=f"gradient of {name}")


def to_torch(x: np.ndarray, requires_grad: bool = True) -> torch.Tensor:
    return torch.tensor(np.asarray(x), requires_grad=requires_grad)


def tol(dtype) -> dict:
    """Agreement asked of float64 (~1e-10) and float32 (~1e-4 relative)."""
    if np.dtype(dtype) == np.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=1e-4, atol=1e-5)
