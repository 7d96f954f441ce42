"""Memory layout: convolutions hand their output on in batch-last memory, ``(c, h, w, n)`` viewed
as NCHW, and every layer must give the same numbers for it as for a contiguous NCHW array; and
training's backward pass may skip the images' gradient (``input_grad=False``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import numcnn
from numcnn import nn
from numcnn.functional import conv as conv_module
from numcnn.backend.layout import is_chwn as is_batch_last, new_map, to_chwn, to_layout


def batch_last_copy(x: np.ndarray) -> np.ndarray:
    """The same values as ``x (n, c, ...)``, in batch-last memory."""
    out = new_map(x.shape, x.dtype, chwn=True)
    out[...] = x
    assert is_batch_last(out) and not out.flags.c_contiguous
    return out


LAYERS = {
    "Conv2d": lambda: nn.Conv2d(3, 4, 3, padding=1),
    "Conv2d-valid": lambda: nn.Conv2d(3, 4, 3),
    "Conv2d-strided-groups": lambda: nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3),
    "Conv2d-reflect": lambda: nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1),
    "BatchNorm2d": lambda: nn.BatchNorm2d(3),
    "ReLU": lambda: nn.ReLU(),
    "LeakyReLU": lambda: nn.LeakyReLU(0.1),
    "Sigmoid": lambda: nn.Sigmoid(),
    "MaxPool2d": lambda: nn.MaxPool2d(2),
    "MaxPool2d-overlapping": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "AvgPool2d": lambda: nn.AvgPool2d(2),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(3),
    "GlobalMaxPool2d": lambda: nn.GlobalMaxPool2d(),
    "Flatten": lambda: nn.Flatten(),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("grad_layout", ["nchw", "batch-last"])
def test_every_layer_gives_the_same_numbers_for_batch_last_memory(name, grad_layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 8, 6))
    results = []
    for layout in ("nchw", "batch-last"):
        numcnn.manual_seed(0)
        layer = LAYERS[name]().double()
        layer.train()
        x_in = x.copy() if layout == "nchw" else batch_last_copy(x)
        y = layer(x_in)
        grad = np.random.default_rng(1).standard_normal(y.shape)
        if grad_layout == "batch-last" and grad.ndim == 4:
            grad = batch_last_copy(grad)
        grad_x = layer.backward(grad)
        results.append((y, grad_x, [p.grad.copy() for p in layer.parameters()]))
    (y0, g0, p0), (y1, g1, p1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-12)
    for a, b in zip(p1, p0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_convolution_output_is_batch_last_and_the_next_one_reads_it_without_a_copy():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    y = conv(np.ones((4, 2, 5, 5), np.float32))
    assert y.shape == (4, 3, 5, 5) and is_batch_last(y)
    rows = to_chwn(y)
    assert np.shares_memory(rows, y)
    np.testing.assert_array_equal(rows, y.transpose(1, 2, 3, 0))
    # what the chain of layers hands back has the layout of what it got
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1))
    out = model(np.ones((4, 2, 6, 6), np.float32))
    assert is_batch_last(out)
    grad_x = model.backward(np.ones(out.shape, np.float32))
    strides = np.moveaxis(grad_x, 0, -1).strides  # a crop (the padding) of batch-last memory
    assert list(strides) == sorted(strides, reverse=True) and strides[-1] == grad_x.itemsize


def test_to_layout_copies_only_when_needed():
    x = np.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    assert to_layout(x, chwn=False) is x
    bl = to_layout(x, chwn=True)
    assert is_batch_last(bl) and to_layout(bl, chwn=True) is bl
    np.testing.assert_array_equal(bl, x)
    np.testing.assert_array_equal(to_layout(bl, chwn=False), x)


def test_a_kept_input_is_not_changed_by_later_writes_to_the_caller_s_array(monkeypatch):
    """Without padding, a batch-last input needs no copy to be convolved; when the columns are
    not kept (over KEEP_COLS_BYTES), the input kept for backward must still be a copy."""
    monkeypatch.setattr(conv_module, "KEEP_COLS_BYTES", 0)
    rng = np.random.default_rng(0)
    x = batch_last_copy(rng.standard_normal((3, 2, 6, 6)))
    conv = nn.Conv2d(2, 4, 3).double()
    y = conv(x)
    grad = rng.standard_normal(y.shape)
    t_x = torch.tensor(np.array(x), requires_grad=True)
    t_w = torch.tensor(conv.weight.data, requires_grad=True)
    torch.nn.functional.conv2d(t_x, t_w).backward(torch.tensor(grad))
    x[...] = 0  # the caller reuses its buffer before the backward pass
    conv.backward(grad)
    np.testing.assert_allclose(conv.weight.grad, t_w.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sequential_backward_without_the_input_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 10, 10))
    grads = []
    for input_grad in (True, False):
        numcnn.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                              nn.Sequential(nn.Flatten(), nn.Linear(300, 2))).double()
        out = model(x)
        returned = model.backward(np.ones(out.shape), input_grad=input_grad)
        assert (returned is None) == (not input_grad)
        grads.append([p.grad.copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_backward_params_of_a_convolution_skips_the_input_gradient(monkeypatch):
    calls = []
    original = conv_module._correlate_backward
    monkeypatch.setattr(conv_module, "_correlate_backward",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    conv = nn.Conv2d(1, 2, 3).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 5, 5))
    out = conv(x)
    assert conv.backward_params(np.ones(out.shape)) is None
    assert calls == []
    full = conv.weight.grad.copy()
    conv.zero_grad()
    conv(x)
    conv.backward(np.ones(out.shape))
    assert calls == [1]
    np.testing.assert_allclose(conv.weight.grad, full, rtol=1e-12)


def test_backward_params_of_a_layer_without_parameters_does_nothing():
    relu = nn.ReLU()
    relu(np.ones((2, 3)))
    assert relu.backward_params(np.ones((2, 3))) is None


def test_backward_params_of_a_separable_convolution_matches_its_full_backward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 7))
    grads = []
    for params_only in (False, True):
        numcnn.manual_seed(0)
        layer = nn.SeparableConv2d(3, 4, 3, padding=1).double()
        out = layer(x)
        if params_only:
            assert layer.backward_params(np.ones(out.shape)) is None
        else:
            layer.backward(np.ones(out.shape))
        grads.append([p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
