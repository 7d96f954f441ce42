"""Hand-written layers for `numcnn check`: one correct, two with a deliberately wrong backward.

    numcnn check examples/my_layers.py:good_model      # PASS
    numcnn check examples/my_layers.py:broken_model    # FAIL, naming layer 1 (SignFlipped)
    numcnn check examples/my_layers.py:Untransposed    # FAIL: the weight gradient
"""

import numpy as np

from numcnn import nn


class MyLinear(nn.Module):
    """y = x @ W^T + b, with its backward written by hand (correct)."""

    input_shape = (6,)

    def __init__(self, features=6):
        super().__init__()
        rng = np.random.default_rng(1)
        self.weight = nn.Parameter(rng.standard_normal((features, features)).astype(np.float32))
        self.bias = nn.Parameter(np.zeros(features, dtype=np.float32))

    def forward(self, x):
        self._keep(x=x)
        return x @ self.weight.data.T + self.bias.data

    def backward(self, grad_out):
        x = self._take()["x"]
        self.weight.grad += grad_out.T @ x        # dL/dW = dL/dy^T @ x
        self.bias.grad += grad_out.sum(axis=0)    # dL/db = sum over the batch
        return grad_out @ self.weight.data        # dL/dx = dL/dy @ W


class Untransposed(MyLinear):
    """The weight gradient with its transpose missing: x^T @ dL/dy instead of dL/dy^T @ x."""

    def backward(self, grad_out):
        x = self._take()["x"]
        self.weight.grad += x.T @ grad_out        # wrong: the transpose of the right answer
        self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ self.weight.data


class MySquare(nn.Module):
    """y = x^2, dL/dx = 2x dL/dy (correct)."""

    def forward(self, x):
        self._keep(x=x)
        return x * x

    def backward(self, grad_out):
        return 2 * self._take()["x"] * grad_out


class SignFlipped(MySquare):
    """y = x^2 with the sign of its gradient flipped: -2x dL/dy."""

    def backward(self, grad_out):
        return -2 * self._take()["x"] * grad_out


def good_model():
    model = nn.Sequential(MyLinear(), MySquare(), nn.Linear(6, 3))
    model.input_shape = (6,)
    return model


def broken_model():
    model = nn.Sequential(MyLinear(), SignFlipped(), nn.Linear(6, 3))
    model.input_shape = (6,)
    return model
