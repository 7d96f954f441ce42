"""The one sliding-window module (numcnn.functional._windows): its output-size formulas against
the output shapes PyTorch computes (conv2d with even and uneven padding, conv1d, max and
average pooling with ceil_mode both ways, transposed convolution with output_padding), its
errors for an input too small, and its window views against plain indexing."""

import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import ShapeError
from numcnn.functional import _windows as W

SIZES = range(1, 9)


def torch_shape(op, *args, **kwargs):
    """The output shape PyTorch gives, or None where PyTorch refuses (output too small)."""
    try:
        return tuple(op(*args, **kwargs).shape)
    except (RuntimeError, ValueError):
        return None


def test_conv2d_output_size_matches_pytorch_over_a_grid():
    checked = 0
    for size, k, s, p, d in itertools.product(SIZES, (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        x = torch.zeros(1, 1, size, 3 * d + 2)  # the width always fits: the height is tested
        weight = torch.zeros(1, 1, k, 1)
        expected = torch_shape(TF.conv2d, x, weight, stride=(s, 1), padding=(p, 0),
                               dilation=(d, 1))
        if expected is None:
            assert W.out_size(size, k, s, p, p, d) < 1
            with pytest.raises(ShapeError, match="along the height"):
                F.conv2d(np.zeros(tuple(x.shape), np.float32),
                         np.zeros((1, 1, k, 1), np.float32), stride=(s, 1), padding=(p, 0),
                         dilation=(d, 1))
        else:
            assert W.out_size(size, k, s, p, p, d) == expected[2]
            got = F.conv2d(np.zeros(tuple(x.shape), np.float32),
                           np.zeros((1, 1, k, 1), np.float32), stride=(s, 1), padding=(p, 0),
                           dilation=(d, 1)).shape
            assert got == expected
            checked += 1
    assert checked > 400  # most of the grid has an output


@pytest.mark.parametrize("k", [(2, 4), (3, 2), (4, 4)])
def test_uneven_same_padding_gives_pytorchs_shape(k):
    """'same' with an even kernel pads one more at the end: pad_lo != pad_hi in the formula."""
    for h, w in [(1, 1), (5, 6), (7, 2)]:
        expected = tuple(TF.conv2d(torch.zeros(2, 1, h, w), torch.zeros(3, 1, *k),
                                   padding="same").shape)
        pads = W.resolve_padding("same", k, (1, 1), (1, 1))
        assert any(lo != hi for lo, hi in pads)
        assert (2, 3, *W.output_size("conv2d", (2, 1, h, w), k, (1, 1), pads, (1, 1))) == expected
        assert F.conv2d(np.zeros((2, 1, h, w)), np.zeros((3, 1, *k)), padding="same").shape \
            == expected


def test_conv1d_output_size_matches_pytorch():
    for size, k, s, p, d in itertools.product(SIZES, (1, 3, 4), (1, 2), (0, 1), (1, 3)):
        expected = torch_shape(TF.conv1d, torch.zeros(1, 2, size), torch.zeros(1, 2, k),
                               stride=s, padding=p, dilation=d)
        if expected is None:
            with pytest.raises(ShapeError, match=r"conv1d: .* along the length"):
                F.conv1d(np.zeros((1, 2, size)), np.zeros((1, 2, k)), stride=s, padding=p,
                         dilation=d)
        else:
            assert W.output_size("conv1d", (1, 2, size), (k,), (s,), ((p, p),), (d,)) \
                == expected[2:]


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_output_size_matches_pytorch(ceil_mode):
    """PyTorch's pooling_output_shape, ceil rule included (a last window starting in the right
    padding is dropped), over sizes, kernels, strides, paddings (<= k/2) and dilations."""
    for size, k, s, d in itertools.product(SIZES, (1, 2, 3, 4), (1, 2, 3), (1, 2)):
        for p in range(k // 2 + 1):
            x = torch.zeros(1, 1, size, 4)
            expected = torch_shape(TF.max_pool2d, x, (k, 1), stride=(s, 1), padding=(p, 0),
                                   dilation=(d, 1), ceil_mode=ceil_mode)
            args = ((1, 1, size, 4), (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode)
            if expected is None:
                with pytest.raises(ShapeError, match="smaller than the pooling window"):
                    W.pool_output_size("max_pool2d", *args)
            else:
                assert W.out_size(size, k, s, p, p, d, ceil_mode) == expected[2]
                assert W.pool_output_size("max_pool2d", *args) == expected[2:]
                got = F.max_pool2d(np.zeros((1, 1, size, 4)), (k, 1), (s, 1), (p, 0), (d, 1),
                                   ceil_mode)
                assert got.shape == expected


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool2d_output_size_matches_pytorch(ceil_mode):
    for h, w, k, s in itertools.product(SIZES, (3, 5), (2, 3), (1, 2, 3)):
        for p in range(k // 2 + 1):
            expected = torch_shape(TF.avg_pool2d, torch.zeros(2, 3, h, w), k, s, p, ceil_mode)
            if expected is None:
                with pytest.raises(ShapeError, match="smaller than the pooling window"):
                    F.avg_pool2d(np.zeros((2, 3, h, w)), k, s, p, ceil_mode)
            else:
                assert F.avg_pool2d(np.zeros((2, 3, h, w)), k, s, p, ceil_mode).shape == expected
                assert (2, 3, *W.pool_output_size("avg_pool2d", (2, 3, h, w), (k, k), (s, s),
                                                  (p, p), None, ceil_mode)) == expected


def test_ceil_mode_changes_the_size_where_pytorch_does():
    """The grid above would pass with ceil_mode ignored only if no case differed: check that
    ceil_mode changes some sizes and that the drop-the-last-window rule is exercised."""
    rounded_up = dropped = 0
    for size, k, s, p in itertools.product(range(1, 12), (2, 3), (2, 3), (0, 1)):
        floor_out, ceil_out = (W.out_size(size, k, s, p, p, 1, mode) for mode in (False, True))
        rounded_up += ceil_out > floor_out
        span = size + 2 * p - (k - 1) - 1
        dropped += ceil_out < -(-span // s) + 1
    assert rounded_up > 10 and dropped > 0


def test_conv_transpose2d_output_size_matches_pytorch():
    for size, k, s, p, d in itertools.product((1, 2, 5), (1, 2, 3), (1, 2, 3), (0, 1, 2),
                                              (1, 2)):
        for extra in range(max(s, d)):
            x = torch.zeros(1, 2, size, 3)
            weight = torch.zeros(2, 1, k, 1)
            expected = torch_shape(TF.conv_transpose2d, x, weight, stride=(s, 1),
                                   padding=(p, 0), output_padding=(extra, 0), dilation=(d, 1))
            call = (np.zeros((1, 2, size, 3)), np.zeros((2, 1, k, 1)))
            kwargs = dict(stride=(s, 1), padding=(p, 0), output_padding=(extra, 0),
                          dilation=(d, 1))
            if expected is None:
                with pytest.raises(ShapeError, match="the padding is too large"):
                    F.conv_transpose2d(*call, **kwargs)
            else:
                assert W.transposed_out_size(size, k, s, p, p, d, extra) == expected[2]
                assert F.conv_transpose2d(*call, **kwargs).shape == expected


def test_max_unpool2d_output_size_matches_pytorch():
    for h, k, s, p in itertools.product((1, 2, 4), (2, 3), (1, 2, 3), (0, 1)):
        x = torch.zeros(1, 1, h, 2)
        indices = torch.zeros(1, 1, h, 2, dtype=torch.int64)
        expected = tuple(TF.max_unpool2d(x, indices, k, s, p).shape)
        args = (np.zeros((1, 1, h, 2)), np.zeros((1, 1, h, 2), np.int64), k, s, p)
        if 0 in expected:  # PyTorch returns an empty plane, which cannot hold the indices
            with pytest.raises(ShapeError, match="the padding is too large"):
                F.max_unpool2d(*args)
        else:
            assert F.max_unpool2d(*args).shape == expected


# -- errors for an input too small ---------------------------------------------------------------
def test_too_small_input_errors_name_the_layer_axis_sizes_and_formula():
    with pytest.raises(ShapeError, match=re.escape(
            "Conv2d: the kernel (size 5, dilation 1) does not fit the padded input along the "
            "width for input of shape (1, 1, 8, 3): out = floor((in + 2*pad - dilation*(k-1) - 1)"
            " / stride) + 1 = floor((3 + 2*0 - 1*(5-1) - 1) / 1) + 1 = -1, but it must be at "
            "least 1")):
        nn.Conv2d(1, 1, 5)(np.zeros((1, 1, 8, 3), np.float32))
    # uneven padding ('same' with an even kernel) spells both sides
    message = W.formula(2, 4, 1, 1, 2, 1)
    assert message.endswith("floor((2 + 1 + 2 - 1*(4-1) - 1) / 1) + 1 = 2")
    assert "pad_lo + pad_hi" in message
    with pytest.raises(ShapeError, match=re.escape(
            "MaxPool2d: input of shape (1, 1, 1, 4) is smaller than the pooling window "
            "(kernel_size=(3, 3), stride=(2, 2), padding=(0, 0), dilation=(1, 1), "
            "ceil_mode=True); along the height: out = ceil((in + 2*pad - dilation*(k-1) - 1) "
            "/ stride) + 1 = ceil((1 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 0")):
        nn.MaxPool2d(3, 2, ceil_mode=True)(np.zeros((1, 1, 1, 4), np.float32))
    assert torch_shape(TF.max_pool2d, torch.zeros(1, 1, 1, 4), 3, 2, ceil_mode=True) is None
    with pytest.raises(ShapeError, match=re.escape(
            "max_pool1d: input of shape (2, 3, 2) is shorter than the pooling window "
            "(kernel_size=3, stride=3, padding=0, dilation=1); along the length: out = "
            "floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1 = "
            "floor((2 + 2*0 - 1*(3-1) - 1) / 3) + 1 = 0")):
        F.max_pool1d(np.zeros((2, 3, 2)), 3)
    with pytest.raises(ShapeError, match=re.escape(
            "ConvTranspose2d: the padding is too large for input of shape (1, 1, 5, 1) along "
            "the width: out = (in - 1)*stride - 2*pad + dilation*(k-1) + output_padding + 1 = "
            "(1 - 1)*1 - 2*2 + 1*(3-1) + 0 + 1 = -1, but it must be at least 1")):
        nn.ConvTranspose2d(1, 1, 3, padding=(0, 2))(np.zeros((1, 1, 5, 1)))
    # before the one module, max_unpool2d's own copy of the formula let a negative size reach
    # np.zeros (a raw ValueError); PyTorch refuses it too
    with pytest.raises((RuntimeError, ValueError)):
        TF.max_unpool2d(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.int64),
                        2, 1, 2)
    with pytest.raises(ShapeError, match=r"max_unpool2d: the padding is too large .* height"):
        F.max_unpool2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), 2, 1, 2)


def test_pool_output_size_refuses_a_wrong_number_of_axes():
    with pytest.raises(ShapeError, match=r"avg_pool2d: expected a 4-D input \(N, C, H, W\), got "
                                         r"shape \(3, 5, 5\)"):
        W.pool_output_size("avg_pool2d", (3, 5, 5), (2, 2), (2, 2), (0, 0))
    with pytest.raises(ShapeError, match=r"expected a 3-D input \(N, C, L\)"):
        F.pool1d_output_size("MaxPool1d", (1, 3, 5, 5), 2, 2, 0)


# -- window views ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,stride,dilation", [((2, 3), (1, 1), (1, 1)),
                                                    ((3, 2), (2, 3), (1, 2)),
                                                    ((1, 1), (3, 2), (1, 1))])
def test_window_views_match_plain_indexing(kernel, stride, dilation):
    rng = np.random.default_rng(0)
    xp = rng.standard_normal((2, 3, 9, 10))
    out_hw = tuple(W.out_size(size, k, s, 0, 0, d)
                   for size, k, s, d in zip(xp.shape[2:], kernel, stride, dilation))
    expected = np.empty((2, 3, *kernel, *out_hw))
    for i, j, y, x in itertools.product(range(kernel[0]), range(kernel[1]), range(out_hw[0]),
                                        range(out_hw[1])):
        expected[:, :, i, j, y, x] = xp[:, :, y * stride[0] + i * dilation[0],
                                        x * stride[1] + j * dilation[1]]
    np.testing.assert_array_equal(W.windows(xp, kernel, stride, dilation, out_hw), expected)
    rows_p = np.ascontiguousarray(xp.transpose(1, 2, 3, 0))  # CHWN, C-contiguous
    np.testing.assert_array_equal(W.windows_chwn(rows_p, kernel, stride, dilation, out_hw),
                                  expected)
    strided = xp.transpose(1, 2, 3, 0)  # CHWN axes, NCHW memory: the as_strided path
    np.testing.assert_array_equal(W.windows_chwn(strided, kernel, stride, dilation, out_hw),
                                  expected)
    assert not W.windows_chwn(rows_p, kernel, stride, dilation, out_hw).flags.writeable


def test_blocks_view_matches_plain_indexing():
    x = np.arange(2 * 3 * 7 * 8, dtype=np.float64).reshape(2, 3, 7, 8)
    for kernel in [(2, 2), (3, 2), (7, 8)]:
        out_hw = (7 // kernel[0], 8 // kernel[1])
        assert W.is_blocks(x.shape, kernel, kernel, (0, 0), (1, 1), out_hw)
        view = W.blocks(x, kernel, out_hw)
        for y, i, q, j in itertools.product(range(out_hw[0]), range(kernel[0]),
                                            range(out_hw[1]), range(kernel[1])):
            np.testing.assert_array_equal(view[:, :, y, i, q, j],
                                          x[:, :, y * kernel[0] + i, q * kernel[1] + j])
    assert not W.is_blocks(x.shape, (2, 2), (1, 1), (0, 0), (1, 1), (6, 7))
    assert not W.is_blocks(x.shape, (2, 2), (2, 2), (1, 0), (1, 1), (4, 4))
    assert not W.is_blocks(x.shape, (2, 2), (2, 2), (0, 0), (1, 2), (3, 3))


def test_window_pads_cover_every_window_of_ceil_mode():
    for size, k, s, p, d in itertools.product(SIZES, (2, 3), (1, 2, 3), (0, 1), (1, 2)):
        out = W.out_size(size, k, s, p, p, d, ceil_mode=True)
        if out < 1:
            continue
        lo, hi = W.window_pads(size, k, s, p, d, out)
        assert lo == p and hi >= p
        assert (out - 1) * s + d * (k - 1) + 1 <= size + lo + hi  # the last window fits
        assert hi == p or (out - 1) * s + d * (k - 1) + 1 == size + lo + hi  # no more than that


def test_explain_shows_the_formulas_of_this_module_with_the_sizes_pytorch_gives():
    """numcnn explain writes each layer's output size with this module's formula: its numbers
    agree with the shapes PyTorch's layers give (uneven 'same' padding, ceil_mode, transposed)."""
    model = nn.Sequential(nn.Conv2d(1, 2, (2, 4), padding="same"),
                          nn.MaxPool2d(3, stride=2, ceil_mode=True),
                          nn.ConvTranspose2d(2, 1, 3, stride=2, output_padding=1))
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 2, (2, 4), padding="same"),
                                    torch.nn.MaxPool2d(3, stride=2, ceil_mode=True),
                                    torch.nn.ConvTranspose2d(2, 1, 3, stride=2, output_padding=1))
    rows = model.explain((1, 6, 9), batch_size=2, measure=False).rows
    x = torch.zeros(2, 1, 6, 9)
    for row, layer in zip(rows, reference):
        x = layer(x)
        lines = row["output_size"]
        assert [int(line.rsplit("= ", 1)[1]) for line in lines] == list(x.shape[2:])
    assert "pad_lo + pad_hi" in rows[0]["output_size"][1]  # (1, 2) along the width
    assert rows[1]["output_size"][0].startswith("height: out = ceil(")


def test_output_sizes_default_to_floor_as_pytorch():
    """Left out, ceil_mode is False and dilation 1, as in PyTorch's pooling."""
    for h, k, s in [(5, 2, 2), (8, 3, 2), (6, 4, 3)]:
        expected = tuple(TF.max_pool2d(torch.zeros(1, 1, h, h), k, s).shape[2:])
        assert expected != tuple(TF.max_pool2d(torch.zeros(1, 1, h, h), k, s,
                                               ceil_mode=True).shape[2:])
        assert F.pool2d_output_size("MaxPool2d", (1, 1, h, h), (k, k), (s, s), (0, 0)) == expected
        assert W.pool_output_size("MaxPool2d", (1, 1, h, h), (k, k), (s, s), (0, 0)) == expected
        assert F.pool1d_output_size("MaxPool1d", (1, 1, h), k, s, 0) == expected[0]
        assert W.out_size(h, k, s, 0, 0, 1) == expected[0]


def test_string_paddings_built_at_run_time_work_as_the_literals():
    """'valid', 'same' and 'full' read from a config are strings built at run time, not the
    interned literals: compared by value, they give what the numeric paddings give in PyTorch."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    full = (2 * (3 - 1), 2 * (2 - 1))  # dilation*(k-1) on each side, dilation 2
    cases = {"valid": dict(padding=0), "full": dict(padding=full)}
    for name, torch_args in cases.items():
        padding = "".join(list(name))  # a new string object
        got = F.conv2d(x, w, padding=padding, dilation=2)
        want = TF.conv2d(torch.tensor(x), torch.tensor(w), dilation=2, **torch_args)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)
    same = "".join(list("same"))
    np.testing.assert_allclose(F.conv2d(x, w, padding=same),
                               TF.conv2d(torch.tensor(x), torch.tensor(w), padding="same").numpy(),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad2d_backward_is_the_adjoint_of_pad2d_for_any_pads(mode):
    """<pad2d(x), g> = <x, pad2d_backward(g)> for every padding, uneven ones included (the
    ops only ever pad more at the end; the functions take any pads)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 6))
    for pads in [((1, 1), (1, 0)), ((0, 2), (3, 1)), ((2, 0), (0, 0)), ((0, 0), (0, 0))]:
        padded = W.pad2d(x, pads, mode)
        g = rng.standard_normal(padded.shape)
        grad = W.pad2d_backward(g, pads, mode)
        assert grad.shape == x.shape
        assert np.isclose(np.sum(padded * g), np.sum(x * grad), rtol=1e-12)
