"""Convolution layers and functions against PyTorch, a naive loop reference and the course texts."""

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numcnn
from numcnn import functional as F
from numcnn import nn
from numcnn.errors import DTypeError, NumcnnError, ShapeError
from numcnn.functional import conv as conv_module
from numcnn.functional.signal import convolve, correlate
from tests.helpers import check_layer_gradients, tol

HYPOTHESIS = settings(max_examples=30, deadline=None,
                      suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
DTYPES = [np.float32, np.float64]


# -- naive loop references (one output pixel, one tap at a time) ----------------------------------
def naive_pads(padding, kernel, dilation):
    """((top, bottom), (left, right)) for an int pair or 'valid' / 'same' / 'full', by hand."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "full":
        return tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
    if padding == "same":  # PyTorch: the odd pixel of the total goes to the end
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                     for k, d in zip(kernel, dilation))
    return tuple((p, p) for p in padding)


def naive_conv2d(x, w, b, stride, pads, dilation, groups):
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = pads
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, oc, oh, ow))
    for s in range(n):
        for o in range(oc):
            g = o // (oc // groups)
            for p in range(oh):
                for q in range(ow):
                    total = 0.0 if b is None else b[o]
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                total += (w[o, ci, i, j] * xp[s, g * cg + ci, p * stride[0] +
                                          i * dilation[0], q * stride[1] + j * dilation[1]])
                    y[s, o, p, q] = total
    return y


def naive_conv2d_grads(grad_out, x, w, stride, pads, dilation, groups):
    """Input and weight gradients by sending each output gradient back along each tap."""
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = pads
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    grad_xp, grad_w = np.zeros_like(xp), np.zeros(w.shape)
    for s, o, p, q in np.ndindex(*grad_out.shape):
        g = o // (oc // groups)
        for ci, i, j in np.ndindex(cg, kh, kw):
            row, col = p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]
            grad_xp[s, g * cg + ci, row, col] += w[o, ci, i, j] * grad_out[s, o, p, q]
            grad_w[o, ci, i, j] += xp[s, g * cg + ci, row, col] * grad_out[s, o, p, q]
    return grad_xp[:, :, pt:pt + h, pl:pl + wd], grad_w


def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Each input pixel scatters its kernel into the output (then the padding is cropped)."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = cin // groups
    full_h = (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + output_padding[0]
    full_w = (wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + output_padding[1]
    y = np.zeros((n, cog * groups, full_h, full_w))
    for s, ci, p, q in np.ndindex(*x.shape):
        g = ci // cig
        for co, i, j in np.ndindex(cog, kh, kw):
            y[s, g * cog + co, p * stride[0] + i * dilation[0],
              q * stride[1] + j * dilation[1]] += x[s, ci, p, q] * w[ci, co, i, j]
    y = y[:, :, padding[0]:full_h - padding[0], padding[1]:full_w - padding[1]]
    return y if b is None else y + b[:, None, None]


# -- random configurations -----------------------------------------------------------------------
@st.composite
def conv_configs(draw, max_hw=8):
    depthwise = draw(st.booleans())
    if depthwise:
        c = draw(st.integers(1, 4))
        groups, cg, oc = c, 1, c * draw(st.integers(1, 2))
    else:
        groups = draw(st.sampled_from([1, 1, 2, 3]))
        cg = draw(st.integers(1, 3))
        c, oc = cg * groups, draw(st.integers(1, 3)) * groups
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.sampled_from(["valid", "same", "full"]),
                             st.tuples(st.integers(0, 2), st.integers(0, 2))))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    pads = naive_pads(padding, kernel, dilation)
    for size, k, d, (lo, hi) in zip((h, w), kernel, dilation, pads):
        assume(size + lo + hi - d * (k - 1) >= 1)
    return dict(n=n, c=c, oc=oc, groups=groups, kernel=kernel, stride=stride, dilation=dilation,
                padding=padding, pads=pads, h=h, w=w, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from(DTYPES)))


def random_arrays(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["n"], cfg["c"], cfg["h"], cfg["w"])).astype(cfg["dtype"])
    w = rng.standard_normal((cfg["oc"], cfg["c"] // cfg["groups"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["oc"]) if cfg["bias"] else None
    return x, w.astype(cfg["dtype"]), None if b is None else b.astype(cfg["dtype"])


def torch_padding(padding, pads):
    """PyTorch has no 'full': give it the explicit (symmetric) amount."""
    return tuple(lo for lo, _ in pads) if padding == "full" else padding


def torch_grads(fn, grad_out, *arrays):
    tensors = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), [None if t is None else t.grad.numpy() for t in tensors]


def assert_close(actual, expected, dtype, what=""):
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {dtype}"
    np.testing.assert_allclose(actual, expected, **tol(dtype), err_msg=what)


# -- functional conv2d against PyTorch ------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@HYPOTHESIS
@given(conv_configs())
def test_conv2d_forward_and_backward_match_pytorch(cfg):
    x, w, b = random_arrays(cfg)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    y, cache = F.conv2d_forward(x, w, b, *args)
    grad_out = np.random.default_rng(1).standard_normal(y.shape).astype(cfg["dtype"])
    grad_x, grad_w, grad_b = F.conv2d_backward(grad_out, cache)

    t_args = (cfg["stride"], torch_padding(cfg["padding"], cfg["pads"]), cfg["dilation"],
              cfg["groups"])
    t_y, (t_gx, t_gw, t_gb) = torch_grads(lambda x, w, b: TF.conv2d(x, w, b, *t_args),
                                          grad_out, x, w, b)
    assert_close(y, t_y, cfg["dtype"], "output")
    assert_close(grad_x, t_gx, cfg["dtype"], "grad x")
    assert_close(grad_w, t_gw, cfg["dtype"], "grad weight")
    if b is None:
        assert grad_b is None
    else:
        assert_close(grad_b, t_gb, cfg["dtype"], "grad bias")
    np.testing.assert_allclose(F.conv2d(x, w, b, *args), y)


@settings(max_examples=25, deadline=None)
@given(conv_configs(max_hw=6))
def test_conv2d_fast_path_equals_naive_loops(cfg):
    cfg["dtype"] = np.float64
    x, w, b = random_arrays(cfg)
    args = (cfg["stride"], cfg["pads"], cfg["dilation"], cfg["groups"])
    y, cache = F.conv2d_forward(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"],
                                cfg["groups"])
    np.testing.assert_allclose(y, naive_conv2d(x, w, b, *args), rtol=1e-10, atol=1e-10)
    grad_out = np.random.default_rng(1).standard_normal(y.shape)
    grad_x, grad_w, _ = F.conv2d_backward(grad_out, cache)
    naive_gx, naive_gw = naive_conv2d_grads(grad_out, x, w, *args)
    np.testing.assert_allclose(grad_x, naive_gx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_w, naive_gw, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_and_grouped_conv2d_match_pytorch_on_a_larger_batch(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 6, 12, 10)).astype(dtype)
    weights = [(rng.standard_normal((6, 1, 3, 3)), 6), (rng.standard_normal((12, 1, 3, 3)), 6),
               (rng.standard_normal((4, 3, 5, 3)), 2)]
    for w, groups in weights:  # depthwise with 1 and 2 kernels per channel; 2 groups
        w = w.astype(dtype)
        y, cache = F.conv2d_forward(x, w, None, 1, 1, 1, groups)
        grad_out = rng.standard_normal(y.shape).astype(dtype)
        t_y, (t_gx, t_gw) = torch_grads(lambda x, w: TF.conv2d(x, w, None, 1, 1, 1, groups),
                                        grad_out, x, w)
        grad_x, grad_w, _ = F.conv2d_backward(grad_out, cache)
        assert_close(y, t_y, dtype, "output")
        assert_close(grad_x, t_gx, dtype, "grad x")
        assert_close(grad_w, t_gw, dtype, "grad weight")


@pytest.mark.parametrize("block_bytes, keep_cols_bytes", [(1, 0), (3000, 0), (1 << 30, 0),
                                                           (1, 1 << 30)])
def test_columns_built_in_blocks_of_output_rows_give_the_same_result(monkeypatch, block_bytes,
                                                                     keep_cols_bytes):
    """The im2col matrix is built a few output rows at a time (or whole, and kept for the
    backward pass); every choice is exact."""
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(conv_module, "KEEP_COLS_BYTES", keep_cols_bytes)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 2))
    args = ((2, 1), 2, (2, 1), 2)  # stride, padding, dilation, groups
    y, cache = F.conv2d_forward(x, w, None, *args)
    grad_out = rng.standard_normal(y.shape)
    t_y, (t_gx, t_gw) = torch_grads(lambda x, w: TF.conv2d(x, w, None, *args), grad_out, x, w)
    for got, want in zip((y, *F.conv2d_backward(grad_out, cache)[:2]), (t_y, t_gx, t_gw)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    w_t = rng.standard_normal((4, 3, 3, 2))
    t_args = ((2, 1), 1, (1, 0), 2, (2, 1))  # stride, padding, output_padding, groups, dilation
    y, cache = F.conv_transpose2d_forward(x, w_t, None, *t_args)
    grad_out = rng.standard_normal(y.shape)
    t_y, (t_gx, t_gw) = torch_grads(lambda x, w: TF.conv_transpose2d(x, w, None, *t_args),
                                    grad_out, x, w_t)
    for got, want in zip((y, *F.conv_transpose2d_backward(grad_out, cache)[:2]),
                         (t_y, t_gx, t_gw)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_float32_stays_float32_and_input_is_cast_to_the_weight_dtype():
    rng = np.random.default_rng(0)
    w32 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    x64 = rng.standard_normal((1, 3, 5, 5))
    y, cache = F.conv2d_forward(x64, w32, np.zeros(2, np.float32))
    assert y.dtype == np.float32
    grads = F.conv2d_backward(np.ones(y.shape), cache)  # a float64 gradient is not upcast
    assert all(g.dtype == np.float32 for g in grads)
    assert F.conv2d(x64.astype(np.uint8), w32.astype(np.float64)).dtype == np.float64


# -- conv1d and conv_transpose2d against PyTorch -------------------------------------------------
@HYPOTHESIS
@given(st.data())
def test_conv1d_matches_pytorch(data):
    groups = data.draw(st.sampled_from([1, 2]))
    c, oc = groups * data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 3))
    k, dilation = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    padding = data.draw(st.sampled_from([0, 1, 3, "valid", "same", "full"]))
    stride = 1 if padding == "same" else data.draw(st.integers(1, 3))
    pad = dilation * (k - 1) if padding == "full" else (padding if isinstance(padding, int) else 0)
    length = data.draw(st.integers(max(1, dilation * (k - 1) + 1 - 2 * pad), 12))
    dtype = data.draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c, length)).astype(dtype)
    w = rng.standard_normal((oc, c // groups, k)).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype) if data.draw(st.booleans()) else None
    y, cache = F.conv1d_forward(x, w, b, stride, padding, dilation, groups)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    t_pad = pad if padding == "full" else padding
    t_y, t_grads = torch_grads(lambda x, w, b: TF.conv1d(x, w, b, stride, t_pad, dilation, groups),
                               grad_out, x, w, b)
    assert_close(y, t_y, dtype, "output")
    for name, got, want in zip(["x", "weight", "bias"], F.conv1d_backward(grad_out, cache),
                               t_grads):
        if want is None:
            assert got is None
        else:
            assert_close(got, want, dtype, f"grad {name}")


@st.composite
def transpose_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    for size, k, s, d, p, op in zip((h, w), kernel, stride, dilation, padding, output_padding):
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout, groups=groups, kernel=kernel,
                stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                h=h, w=w, bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)))


@HYPOTHESIS
@given(transpose_configs())
def test_conv_transpose2d_matches_pytorch_and_the_naive_scatter(cfg):
    dtype, rng = cfg["dtype"], np.random.default_rng(0)
    x = rng.standard_normal((cfg["n"], cfg["cin"], cfg["h"], cfg["w"])).astype(dtype)
    w = rng.standard_normal((cfg["cin"], cfg["cout"] // cfg["groups"], *cfg["kernel"]))
    w = w.astype(dtype)
    b = rng.standard_normal(cfg["cout"]).astype(dtype) if cfg["bias"] else None
    args = (cfg["stride"], cfg["padding"], cfg["output_padding"], cfg["groups"], cfg["dilation"])
    y, cache = F.conv_transpose2d_forward(x, w, b, *args)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    t_y, t_grads = torch_grads(lambda x, w, b: TF.conv_transpose2d(x, w, b, *args),
                               grad_out, x, w, b)
    assert_close(y, t_y, dtype, "output")
    for name, got, want in zip(["x", "weight", "bias"],
                               F.conv_transpose2d_backward(grad_out, cache), t_grads):
        if want is None:
            assert got is None
        else:
            assert_close(got, want, dtype, f"grad {name}")
    naive = naive_conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                                   None if b is None else b.astype(np.float64), cfg["stride"],
                                   cfg["padding"], cfg["output_padding"], cfg["dilation"],
                                   cfg["groups"])
    np.testing.assert_allclose(y, naive, **tol(dtype))


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(x), y> == <x, conv_transpose2d(y)> for the same weight, stride, padding."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6, 3, 2))  # conv2d: 6 -> 4 channels; transposed: 4 -> 6
    x = rng.standard_normal((2, 6, 9, 8))
    y = F.conv2d(x, w, stride=2, padding=1, dilation=(1, 2))
    v = rng.standard_normal(y.shape)
    back = F.conv_transpose2d(v, w, stride=2, padding=1, output_padding=(0, 1), dilation=(1, 2))
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(y * v), np.sum(x * back), rtol=1e-12)


# -- layers against PyTorch -----------------------------------------------------------------------
def copy_torch_params(layer, t_layer, dtype):
    layer.to(dtype)
    state = {k: v.detach().numpy() for k, v in t_layer.state_dict().items()}
    layer.load_state_dict(state)
    return t_layer.to(torch.float64 if dtype == np.float64 else torch.float32)


def compare_layer(layer, t_layer, x, dtype):
    t_layer = copy_torch_params(layer, t_layer, dtype)
    y = layer(x)
    grad_out = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    t_x = torch.tensor(x, requires_grad=True)
    t_y = t_layer(t_x)
    t_y.backward(torch.tensor(grad_out))
    assert_close(y, t_y.detach().numpy(), dtype, "output")
    assert layer.output_shape(x.shape) == y.shape
    layer.zero_grad()
    assert_close(layer.backward(grad_out), t_x.grad.numpy(), dtype, "grad x")
    t_params = dict(t_layer.named_parameters())
    for name, param in layer.named_parameters():
        assert_close(param.grad, t_params[name].grad.numpy(), dtype, f"grad {name}")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@HYPOTHESIS
@given(st.data())
def test_conv2d_layer_with_every_padding_mode_matches_pytorch(data):
    mode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    kernel = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = data.draw(st.one_of(st.sampled_from(["valid", "same"]),
                                  st.tuples(st.integers(0, 2), st.integers(0, 2))))
    stride = 1 if padding == "same" else data.draw(st.integers(1, 2))
    groups = data.draw(st.sampled_from([1, 2]))
    c, oc = 2 * data.draw(st.integers(1, 2)), 2 * data.draw(st.integers(1, 2))
    h, w = data.draw(st.integers(3, 8)), data.draw(st.integers(3, 8))
    pads = naive_pads(padding, kernel, dilation)
    for size, k, d, (lo, hi) in zip((h, w), kernel, dilation, pads):
        assume(size + lo + hi - d * (k - 1) >= 1 and max(lo, hi) < size)
    bias, dtype = data.draw(st.booleans()), data.draw(st.sampled_from(DTYPES))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias,
                  padding_mode=mode)
    layer = nn.Conv2d(c, oc, kernel, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, c, h, w)).astype(dtype)
    compare_layer(layer, torch.nn.Conv2d(c, oc, kernel, **kwargs), x, dtype)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [2, "same"])
def test_conv1d_layer_matches_pytorch(mode, padding):
    kwargs = dict(padding=padding, dilation=2, groups=2, padding_mode=mode)
    x = np.random.default_rng(0).standard_normal((3, 4, 9))
    compare_layer(nn.Conv1d(4, 6, 4, **kwargs), torch.nn.Conv1d(4, 6, 4, **kwargs), x, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_layer_matches_pytorch(dtype):
    kwargs = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2))
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 4)).astype(dtype)
    compare_layer(nn.ConvTranspose2d(4, 6, 3, **kwargs),
                  torch.nn.ConvTranspose2d(4, 6, 3, **kwargs), x, dtype)


def test_separable_conv2d_equals_pytorch_depthwise_then_pointwise():
    layer = nn.SeparableConv2d(3, 5, 3, stride=2, padding=1, depth_multiplier=2,
                               padding_mode="reflect")
    t_layer = torch.nn.Sequential()
    t_layer.add_module("depthwise", torch.nn.Conv2d(3, 6, 3, 2, 1, groups=3, bias=False,
                                                    padding_mode="reflect"))
    t_layer.add_module("pointwise", torch.nn.Conv2d(6, 5, 1))
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    compare_layer(layer, t_layer, x, np.float64)


def test_conv2d_layer_float32_by_default_and_accumulates_gradients():
    layer = nn.Conv2d(2, 3, 3, padding=1)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))  # float64 in, float32 out
    y = layer(x)
    assert y.dtype == np.float32
    grad_x = layer.backward(np.ones_like(y))
    assert grad_x.dtype == np.float32
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(np.ones_like(y))
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-6)
    with numcnn.no_grad():
        layer(x)
    with pytest.raises(NumcnnError, match="without a forward pass"):
        layer.backward(np.ones_like(y))


# -- numerical gradient checks (float64 central differences) --------------------------------------
@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), (2, 2, 5, 5)),
    (lambda: nn.Conv2d(2, 2, (2, 3), padding="same", dilation=(2, 1),
                       padding_mode="reflect"), (1, 2, 5, 6)),
    (lambda: nn.Conv2d(3, 2, 3, padding=(1, 2), padding_mode="circular", bias=False),
     (1, 3, 4, 4)),
    (lambda: nn.Conv2d(2, 2, 2, stride=(1, 2), padding=1, padding_mode="replicate"), (2, 2, 4, 5)),
    (lambda: nn.Conv1d(2, 4, 3, padding="same", dilation=2, padding_mode="circular",
                       groups=2), (2, 2, 7)),
    (lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 2, 3, 3)),
    (lambda: nn.SeparableConv2d(2, 3, 3, padding=1, depth_multiplier=2), (1, 2, 4, 4)),
])
def test_numerical_gradients(layer, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer_gradients(layer(), x)


# -- worked examples ------------------------------------------------------------------------------
def test_course_example_4x4_padding_1_stride_2():
    x = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=np.float64)
    k = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1]], dtype=np.float64)
    y = F.conv2d(x[None, None], k[None, None], padding=1, stride=2)[0, 0]
    # By hand: the top kernel row sees padded row -1 or row 1, the bottom row sees row 1 or 3;
    # at (0, 0) only x[1, 1] = 1 is hit; at (0, 1) x[1, 1] + x[1, 3] = 2; at (1, 0) x[1, 1] +
    # x[3, 1] = 2; at (1, 1) x[1, 1] + x[1, 3] + x[3, 1] + x[3, 3] = 4. Text 03 states
    # [[1, 3], [2, 5]], but its window sums count taps of the kernel's zero row (and its
    # padded matrix is shifted); PyTorch agrees with the hand computation.
    np.testing.assert_array_equal(y, [[1, 2], [2, 4]])
    expected = TF.conv2d(torch.tensor(x)[None, None], torch.tensor(k)[None, None], padding=1,
                         stride=2)
    np.testing.assert_array_equal(y, expected[0, 0].numpy())


def test_three_2x2_filters_stride_1_padding_1_give_3x5x5():
    layer = nn.Conv2d(1, 3, kernel_size=2, stride=1, padding=1)
    assert layer.output_shape((1, 1, 4, 4)) == (1, 3, 5, 5)
    assert layer(np.ones((1, 1, 4, 4))).shape == (1, 3, 5, 5)


def test_alexnet_first_layer_maps_224_to_55():
    layer = nn.Conv2d(3, 48, kernel_size=11, stride=4, padding=2)
    assert layer.output_shape((1, 3, 224, 224)) == (1, 48, 55, 55)  # floor((224+4-11)/4)+1
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = layer(x)
    assert y.shape == (1, 48, 55, 55)
    t_y = TF.conv2d(torch.tensor(x), torch.tensor(layer.weight.data),
                    torch.tensor(layer.bias.data), stride=4, padding=2)
    np.testing.assert_allclose(y, t_y.numpy(), rtol=1e-4, atol=1e-4)


def test_input_gradient_is_full_convolution_with_the_rotated_kernel():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 6, 7)), rng.standard_normal((1, 1, 3, 2))
    y, cache = F.conv2d_forward(x, w)
    grad_out = rng.standard_normal(y.shape)
    grad_x, grad_w, _ = F.conv2d_backward(grad_out, cache)
    g, kernel = grad_out[0, 0], w[0, 0]
    rotated = np.rot90(kernel, 2)
    np.testing.assert_allclose(grad_x[0, 0], correlate(g, rotated, "full"), rtol=1e-12)
    np.testing.assert_allclose(grad_x[0, 0], convolve(g, kernel, "full"), rtol=1e-12)
    # and the weight gradient is the valid correlation of the input with grad_out
    np.testing.assert_allclose(grad_w[0, 0], correlate(x[0, 0], g, "valid"), rtol=1e-12)
    # the forward pass is a valid correlation (a CNN's "convolution")
    np.testing.assert_allclose(y[0, 0], correlate(x[0, 0], kernel, "valid"), rtol=1e-12)


def test_multichannel_padded_input_gradient_is_a_sum_of_full_convolutions():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    y, cache = F.conv2d_forward(x, w, padding=1)
    grad_out = rng.standard_normal(y.shape)
    grad_x = F.conv2d_backward(grad_out, cache)[0]
    for ci in range(2):
        full = sum(convolve(grad_out[0, o], w[o, ci], "full") for o in range(3))
        np.testing.assert_allclose(grad_x[0, ci], full[1:-1, 1:-1], rtol=1e-12)  # crop padding


def test_separable_conv2d_saves_parameters_and_summary_shows_both_parts():
    separable = nn.SeparableConv2d(16, 32, 3, padding=1)
    normal = nn.Conv2d(16, 32, 3, padding=1)
    assert separable.depthwise.weight.shape == (16, 1, 3, 3)
    assert separable.pointwise.weight.shape == (32, 16, 1, 1)
    assert separable.num_parameters() == 16 * 9 + 16 * 32 + 32 == 688
    assert normal.num_parameters() == 16 * 32 * 9 + 32 == 4640
    assert separable.bias is separable.pointwise.bias
    assert list(separable.state_dict()) == ["depthwise.weight", "pointwise.weight",
                                            "pointwise.bias"]
    text = nn.Sequential(separable, nn.ReLU()).summary((16, 8, 8), print_fn=None)
    assert "0.depthwise (Conv2d)" in text and "0.pointwise (Conv2d)" in text
    assert "144" in text and "544" in text and "Total params: 688" in text
    assert separable.output_shape((2, 16, 8, 8)) == (2, 32, 8, 8)


# -- construction: attributes, init ---------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs", [
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1,
                     dilation=(1, 2), groups=2, bias=False, padding_mode="reflect")),
    (nn.Conv2d, dict(in_channels=1, out_channels=2, kernel_size=3, padding="same")),
    (nn.Conv1d, dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1,
                     dilation=2, groups=2, padding_mode="circular")),
    (nn.ConvTranspose2d, dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1,
                              output_padding=1, groups=2, bias=False, dilation=1)),
    (nn.SeparableConv2d, dict(in_channels=3, out_channels=8, kernel_size=5, stride=1,
                              padding=2, dilation=1, bias=True, padding_mode="replicate",
                              depth_multiplier=2)),
])
def test_every_constructor_argument_is_kept_and_rebuilds_the_layer(cls, kwargs):
    layer = cls(**kwargs)
    rebuilt_kwargs = {}
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        assert name in layer.__dict__, name
        value = getattr(layer, name)
        if name == "bias":
            assert value is None or isinstance(value, nn.Parameter)
            value = value is not None
        elif name in ("kernel_size", "stride", "dilation", "output_padding") or (
                name == "padding" and not isinstance(value, str)):
            assert isinstance(value, tuple), name
        rebuilt_kwargs[name] = value
    rebuilt = cls(**rebuilt_kwargs)
    assert repr(rebuilt) == repr(layer)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in layer.parameters()]


@pytest.mark.parametrize("layer, weight_shape, fan_in", [
    (lambda: nn.Conv2d(16, 32, 5), (32, 16, 5, 5), 16 * 25),
    (lambda: nn.Conv2d(8, 16, (3, 5), groups=4), (16, 2, 3, 5), 2 * 15),
    (lambda: nn.Conv1d(6, 9, 7, groups=3), (9, 2, 7), 2 * 7),
    (lambda: nn.ConvTranspose2d(16, 32, 4, groups=2), (16, 16, 4, 4), 16 * 16),
])
def test_weight_shape_and_pytorch_default_init(layer, weight_shape, fan_in):
    layer = layer()
    bound = 1 / math.sqrt(fan_in)
    assert layer.weight.shape == weight_shape
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.95 * bound  # uniform over the whole interval
    assert abs(layer.weight.data.mean()) < 0.1 * bound
    assert np.abs(layer.bias.data).max() <= bound
    numcnn.manual_seed(0)
    again = type(layer)(*[getattr(layer, name) for name in ("in_channels", "out_channels",
                                                             "kernel_size")],
                        groups=layer.groups)
    np.testing.assert_array_equal(again.weight.data, layer.weight.data)  # seeded


# -- errors ---------------------------------------------------------------------------------------
def test_wrong_channel_count_names_layer_and_shapes():
    with pytest.raises(ShapeError, match=r"Conv2d: expected input of shape \(N, 3, H, W\), "
                                         r"got \(2, 4, 8, 8\)"):
        nn.Conv2d(3, 8, 3)(np.zeros((2, 4, 8, 8)))
    with pytest.raises(ShapeError, match=r"Conv1d: expected input of shape \(N, 2, L\), "
                                         r"got \(1, 3, 9\)"):
        nn.Conv1d(2, 4, 3).output_shape((1, 3, 9))
    with pytest.raises(ShapeError, match=r"ConvTranspose2d: expected input of shape "
                                         r"\(N, 4, H, W\), got \(1, 2, 3, 3\)"):
        nn.ConvTranspose2d(4, 2, 3)(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ShapeError, match=r"conv2d: expected input of shape \(N, 6, H, W\) "
                                         r"\(weight \(4, 3, 3, 3\) with groups=2\), got "
                                         r"\(1, 3, 5, 5\)"):
        F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3, 3)), groups=2)
    with pytest.raises(ShapeError, match=r"SeparableConv2d \(depthwise\): Conv2d: expected "
                                         r"input of shape \(N, 3, H, W\)"):
        nn.SeparableConv2d(3, 4, 3)(np.zeros((1, 5, 6, 6)))


def test_wrong_number_of_axes():
    with pytest.raises(ShapeError, match=r"Conv2d: expected a 4-D input \(N, 3, H, W\), got "
                                         r"shape \(8, 8\)"):
        nn.Conv2d(3, 8, 3)(np.zeros((8, 8)))       # (3, 8, 8) is one image: test_unbatched.py
    with pytest.raises(ShapeError, match=r"Conv1d: expected a 3-D input \(N, 2, L\), got shape "
                                         r"\(1, 2, 3, 9\)"):
        nn.Conv1d(2, 4, 3)(np.zeros((1, 2, 3, 9)))
    with pytest.raises(ShapeError, match=r"conv1d: expected a 3-D weight"):
        F.conv1d(np.zeros((1, 2, 9)), np.zeros((4, 2, 3, 3)))


def test_kernel_larger_than_padded_input_shows_the_formula():
    with pytest.raises(ShapeError, match=r"Conv2d: the kernel \(size 5, dilation 1\) does not "
                                         r"fit the padded input along the height for input of "
                                         r"shape \(1, 1, 3, 8\): out = floor\(\(in \+ 2\*pad - "
                                         r"dilation\*\(k-1\) - 1\) / stride\) \+ 1 = "
                                         r"floor\(\(3 \+ 2\*0 - 1\*\(5-1\) - 1\) / 1\) \+ 1 = -1"):
        nn.Conv2d(1, 1, 5).output_shape((1, 1, 3, 8))
    with pytest.raises(ShapeError, match=r"along the width .* floor\(\(2 \+ 2\*1 - 2\*\(3-1\) - "
                                         r"1\) / 2\) \+ 1 = 0"):
        nn.Conv2d(1, 1, 3, stride=2, padding=1, dilation=2)(np.zeros((1, 1, 9, 2)))
    with pytest.raises(ShapeError, match=r"conv1d: .* along the length .* = 0"):
        F.conv1d(np.zeros((1, 1, 2)), np.zeros((1, 1, 3)))
    with pytest.raises(ShapeError, match=r"layer 1 \(Conv2d\): Conv2d: the kernel"):
        nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)).output_shape((1, 1, 4, 4))


def test_transposed_output_too_small_shows_its_formula():
    with pytest.raises(ShapeError, match=r"ConvTranspose2d: the padding is too large .* "
                                         r"\(1 - 1\)\*1 - 2\*2 \+ 1\*\(3-1\) \+ 0 \+ 1 = -1"):
        nn.ConvTranspose2d(1, 1, 3, padding=2).output_shape((1, 1, 1, 5))


def test_padding_mode_limits_like_pytorch():
    with pytest.raises(ShapeError, match=r"Conv2d: padding_mode='reflect' needs a padding "
                                         r"smaller than the input along the height, got padding "
                                         r"\(3, 3\) for input of shape \(1, 1, 3, 8\)"):
        nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect")(np.zeros((1, 1, 3, 8)))
    with pytest.raises(ShapeError, match=r"padding_mode='circular' needs a padding at most"):
        nn.Conv2d(1, 1, 3, padding=4, padding_mode="circular").output_shape((1, 1, 8, 3))
    nn.Conv2d(1, 1, 3, padding=3, padding_mode="circular").output_shape((1, 1, 3, 3))  # allowed
    nn.Conv2d(1, 1, 3, padding=5, padding_mode="replicate").output_shape((1, 1, 2, 2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(3\) must be divisible by "
                                         r"groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups"):
        nn.Conv1d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match=r"padding='same' is not supported for strided"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"padding_mode must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"kernel_size must be positive"):
        nn.Conv2d(1, 1, (3, 0))
    with pytest.raises(ValueError, match=r"output_padding must be non-negative and smaller than "
                                         r"either stride or dilation"):
        nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"only padding_mode='zeros'"):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"depth_multiplier must be a positive int"):
        nn.SeparableConv2d(1, 1, 3, depth_multiplier=0)


def test_bad_inputs_to_the_functions():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((4, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"conv2d: expected a bias of shape \(4,\), got \(3,\)"):
        F.conv2d(x, w, np.zeros(3))
    with pytest.raises(DTypeError, match=r"conv2d: expected a float32 or float64 weight"):
        F.conv2d(x, w.astype(int))
    with pytest.raises(DTypeError, match=r"conv2d: expected a real-valued input, got dtype"):
        F.conv2d(x.astype(complex), w)
    with pytest.raises(ValueError, match=r"conv2d: stride must be positive"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match=r"conv_transpose2d: padding must be an int"):
        F.conv_transpose2d(x, np.zeros((2, 1, 3, 3)), padding="same")
    y, cache = F.conv2d_forward(x, w)
    with pytest.raises(ShapeError, match=r"conv2d backward: expected grad_out of shape "
                                         r"\(1, 4, 3, 3\) \(the output's\), got \(1, 4, 3, 2\)"):
        F.conv2d_backward(np.zeros((1, 4, 3, 2)), cache)
    layer = nn.Conv1d(2, 3, 3)
    layer(np.zeros((1, 2, 6)))
    with pytest.raises(ShapeError, match=r"Conv1d backward: expected grad_out of shape "
                                         r"\(1, 3, 4\) \(the output's\), got \(1, 3, 1, 4\)"):
        layer.backward(np.zeros((1, 3, 1, 4)))


def test_an_empty_batch_gives_an_empty_output_as_in_pytorch():
    for layer, t_layer, shape in [
            (nn.Conv2d(2, 3, 3, padding=1), torch.nn.Conv2d(2, 3, 3, padding=1), (0, 2, 5, 5)),
            (nn.ConvTranspose2d(2, 3, 3, stride=2), torch.nn.ConvTranspose2d(2, 3, 3, stride=2),
             (0, 2, 5, 5)),
            (nn.Conv1d(2, 3, 3), torch.nn.Conv1d(2, 3, 3), (0, 2, 5))]:
        y = layer(np.zeros(shape, np.float32))
        assert y.shape == tuple(t_layer(torch.zeros(shape)).shape) == layer.output_shape(shape)
        assert layer.backward(y).shape == shape
        assert not layer.weight.grad.any()
