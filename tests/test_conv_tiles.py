"""The NumPy convolution's tiles and column memory, against PyTorch and the documented rules.

Added after mutation testing (docs/architecture.md, "Mutation testing"): the existing tile test
cut the output into tiles of equal size only, so a wrong length for a shorter last tile went
unseen; the memory rules (a tile's columns take at most ``BLOCK_BYTES``; the whole column matrix
is kept for backward when it takes at most ``KEEP_COLS_BYTES``) had no test at all; and no test
called the ``*_forward`` functions with their default arguments.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import numcnn
from numcnn import backend
from numcnn import functional as F
from numcnn.functional import conv as conv_module


def torch_grads(fn, grad_out, *arrays):
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def tile_sizes(channels, kernel, out_hw, n, block_bytes, monkeypatch):
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", block_bytes)
    return {(r1 - r0) * (q1 - q0)
            for r0, r1, q0, q1 in conv_module._tiles(channels, kernel, out_hw, n, 8)}


# (block_bytes, what it makes of the case below: c=4, 3x2 kernel, 13x13 outputs, n=3, float64,
# 576 bytes of columns per output pixel)
CASES = [(576 * 5, "parts of a row: 5, 5 and 3 pixels"),
         (576 * 13 * 3, "whole rows: 3, 3, 3, 3 and 1 rows")]


@pytest.mark.parametrize("stride", [1, (1, 2)])
@pytest.mark.parametrize("block_bytes, what", CASES)
def test_tiles_with_a_shorter_last_tile_give_pytorchs_results(monkeypatch, block_bytes, what,
                                                              stride):
    """Forward, weight and input gradients of conv2d and conv_transpose2d (the input gradient
    of a convolution) when the last tile of output pixels is shorter than the others, with and
    without a stride along the width (where a tile starting mid-row lands on column q0*sw)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 13, 12 if stride == 1 else 25))
    w = rng.standard_normal((6, 4, 3, 2))
    assert len(tile_sizes(4, (3, 2), (13, 13), 3, block_bytes, monkeypatch)) == 2, what
    monkeypatch.setattr(conv_module, "KEEP_COLS_BYTES", 0)  # the backward rebuilds the tiles
    with backend.use_kernels(False):
        y, cache = F.conv2d_forward(x, w, None, stride, 1)
        assert y.shape[2:] == (13, 13)
        grad_out = rng.standard_normal(y.shape)
        grads = F.conv2d_backward(grad_out, cache)[:2]
    t_y, t_grads = torch_grads(lambda x, w: TF.conv2d(x, w, None, stride, 1), grad_out, x, w)
    for got, want in zip((y, *grads), (t_y, *t_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # transposed: its forward is the tiled input gradient of a (3, 6, 13, 13) gradient
    g = rng.standard_normal((3, 6, 13, 13))
    y, cache = F.conv_transpose2d_forward(g, w, None, stride, 1)
    grad_out = rng.standard_normal(y.shape)
    grads = F.conv_transpose2d_backward(grad_out, cache)[:2]
    t_y, t_grads = torch_grads(lambda g, w: TF.conv_transpose2d(g, w, None, stride, 1),
                               grad_out, g, w)
    for got, want in zip((y, *grads), (t_y, *t_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_tiles_cover_the_output_once_within_block_bytes():
    """Every output pixel in exactly one tile; a tile's columns (channels*kh*kw*n numbers per
    pixel) take at most BLOCK_BYTES unless a single pixel alone takes more."""
    for channels, kernel, out_hw, n, itemsize in itertools.product(
            (1, 16, 512), ((1, 1), (3, 3), (5, 5)), ((1, 1), (7, 9), (56, 56)), (1, 64),
            (4, 8)):
        per_pixel = channels * kernel[0] * kernel[1] * n * itemsize
        covered = np.zeros(out_hw, np.int64)
        for r0, r1, q0, q1 in conv_module._tiles(channels, kernel, out_hw, n, itemsize):
            covered[r0:r1, q0:q1] += 1
            assert (r1 - r0) * (q1 - q0) * per_pixel <= max(conv_module.BLOCK_BYTES, per_pixel)
        assert (covered == 1).all()


def test_the_column_matrix_is_kept_for_backward_when_it_fits_keep_cols_bytes(monkeypatch):
    """In training the NumPy path keeps the whole column matrix, ``(c*kh*kw, oh*ow*n)``, when it
    takes at most KEEP_COLS_BYTES, and rebuilds it in backward otherwise; never under no_grad."""
    x = np.zeros((3, 5, 9, 8))  # float64: the NumPy path
    w = np.zeros((2, 5, 3, 2))
    col_bytes = 5 * 3 * 2 * (7 * 7 * 3) * 8  # c*kh*kw * oh*ow*n * itemsize
    for limit, kept in ((col_bytes, True), (col_bytes - 1, False)):
        monkeypatch.setattr(conv_module, "KEEP_COLS_BYTES", limit)
        _, cache = F.conv2d_forward(x, w)
        assert (cache["cols"] is not None) == kept
        assert (cache["rows_p"] is None) == kept  # the padded input is kept instead
    monkeypatch.undo()
    _, cache = F.conv2d_forward(x, w)
    assert cache["cols"] is not None  # a small layer keeps its columns by default
    with numcnn.no_grad():
        _, cache = F.conv2d_forward(x, w)
    assert cache["cols"] is None


def test_forward_functions_default_to_pytorchs_arguments():
    """``conv2d(x, w)``, ``conv2d_forward(x, w)`` and the others with every optional argument
    left out compute what PyTorch's functions compute with theirs left out."""
    rng = np.random.default_rng(3)
    x2, w2 = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    x1, w1 = rng.standard_normal((2, 3, 9)), rng.standard_normal((4, 3, 2))
    wt = rng.standard_normal((3, 2, 3, 2))
    want_2d = TF.conv2d(torch.tensor(x2), torch.tensor(w2))
    want_1d = TF.conv1d(torch.tensor(x1), torch.tensor(w1))
    want_t = TF.conv_transpose2d(torch.tensor(x2), torch.tensor(wt))
    cases = [(F.conv2d_forward(x2, w2)[0], want_2d), (F.conv2d(x2, w2), want_2d),
             (F.conv1d_forward(x1, w1)[0], want_1d), (F.conv1d(x1, w1), want_1d),
             (F.conv_transpose2d_forward(x2, wt)[0], want_t), (F.conv_transpose2d(x2, wt), want_t)]
    for got, want in cases:
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)
