"""Grouped and depthwise convolutions, and a stride along the width with dilation, on the
compiled kernels: forward, input gradient and weight gradient against PyTorch and against
numcnn's NumPy path, over a grid of groups, channel multipliers, kernels, strides, paddings,
dilations and batch sizes, under each CPU variant the machine runs (``NUMCNN_CPU`` in a
subprocess, as tests/test_backend.py does). Every case asserts the implementation the policy
recorded, so that a silent fall back to NumPy fails."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from numcnn import backend
from numcnn import functional as F
from numcnn.backend import policy

needs_kernels = pytest.mark.skipif(not backend.available(),
                                   reason="the compiled kernels were not built")


def expected_impl(c, groups, n, out_w, stride, dilation):
    """What the policy must choose for a float32 convolution with the kernels on."""
    if groups > 1:
        return policy.KERNELS_DEPTHWISE if c == groups else policy.KERNELS_GROUPED
    if out_w * n < policy.MIN_ROW:
        return policy.KERNELS_SHORT_ROWS
    return policy.KERNELS if stride[1] == 1 else policy.KERNELS_STRIDED


def check_case(rng, n, c, hw, groups, multiplier, kernel, stride, padding, dilation):
    """One convolution: numcnn's kernels against PyTorch (output, input, weight and bias
    gradients) and against numcnn's NumPy path; the recorded implementation checked."""
    oc = groups * multiplier if c == groups else 2 * groups * multiplier
    x = rng.standard_normal((n, c, *hw)).astype(np.float32)
    if n > 1:  # as a convolution hands it on: CHWN memory
        x = x.transpose(1, 2, 3, 0).copy().transpose(3, 0, 1, 2)
    wshape = (oc, c // groups, *kernel)
    w = (rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    s2, d2 = (stride, stride) if isinstance(stride, int) else stride, (
        (dilation, dilation) if isinstance(dilation, int) else dilation)
    want = expected_impl(c, groups, n, y.shape[3], s2, d2)
    assert cache["impl"] == want, (cache["impl"], want)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(g, cache)
    with backend.use_kernels(False):
        y_np, cache_np = F.conv2d_forward(x, w, b, stride, padding, dilation, groups)
        assert cache_np["impl"] == policy.NUMPY
        gx_np, gw_np, gb_np = F.conv2d_backward(g, cache_np)
    xt, wt, bt = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (x, w, b))
    yt = TF.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    yt.backward(torch.tensor(g))
    for name, got, numpy_got, ref in (("y", y, y_np, yt), ("grad x", gx, gx_np, xt.grad),
                                      ("grad w", gw, gw_np, wt.grad),
                                      ("grad b", gb, gb_np, bt.grad)):
        ref = ref.detach().numpy()
        atol = 2e-5 * max(1.0, float(np.abs(ref).max()))
        where = f"{name}: n={n} c={c} groups={groups} x{multiplier} k={kernel} " \
                f"stride={stride} padding={padding} dilation={dilation} ({cache['impl']})"
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=atol, err_msg=where)
        np.testing.assert_allclose(got, numpy_got, rtol=1e-4, atol=atol, err_msg=where)


def grid():
    """The cases of the variant grid: groups 2, 4 and C (depthwise), channel multipliers 1 and
    2, kernels 1x1, 3x3, 5x5 and (3, 2) (uneven 'same' padding), strides 1, 2, (2, 1), (1, 2),
    paddings 0, 1, 'same', dilations 1 and 2, every combination once, at batch 1, 3 or 64 in
    turn (64: partial register blocks and whole rows); then depthwise at batch 20 (vectors of
    the batch that overlap) and grouped or one group with a stride along the width (read
    directly), groups of 12 output channels, and a stride along the width with dilation for
    one group."""
    batches = (1, 3, 64)
    count = 0
    for groups in (2, 4, 8):
        for multiplier in (1, 2):
            for kernel in ((1, 1), (3, 3), (5, 5), (3, 2)):
                for stride in (1, 2, (2, 1), (1, 2)):
                    for padding in (0, 1, "same"):
                        if padding == "same" and stride != 1:
                            continue  # PyTorch refuses it
                        for dilation in (1, 2):
                            if padding == 0 and dilation * (kernel[0] - 1) >= 9:
                                continue  # the kernel does not fit the 9x10 input
                            count += 1
                            yield (batches[count % 3], 8, (9, 10), groups, multiplier, kernel,
                                   stride, padding, dilation)
    for stride in ((1, 2), 2, (2, 3)):  # depthwise, the batch not a whole number of vectors
        for dilation in (1, 2, 3):
            yield 20, 8, (11, 12), 8, 2, (3, 3), stride, 1, dilation
    for groups in (1, 2):  # read directly along a strided width, the batch not whole vectors
        for stride, kernel, dilation in ((2, (3, 3), 1), ((1, 2), (5, 5), 1), (2, (3, 3), 3)):
            yield 20, 8, (11, 12), groups, 2, kernel, stride, 1, dilation
    for n in (1, 3, 64):  # 12 output channels a group: a full and a partial register block
        for stride in (1, 2, (1, 2)):  # inside each group (blocks of 4 or 8)
            yield n, 12, (9, 10), 3, 6, (3, 3), stride, 1, 1
    for stride in ((1, 2), 2, 3):  # one group, a stride along the width with dilation
        for dilation in (2, 3, (1, 2), (2, 1)):
            yield 16, 3, (12, 13), 1, 2, (3, 3), stride, 1, dilation
    for stride in (2, (1, 2), (2, 3)):  # read directly, forward and weight gradient
        yield 64, 3, (12, 13), 1, 2, (3, 3), stride, 1, 1


GRID_CHECK = r"""
import sys, warnings
import numpy as np
sys.path.insert(0, {tests!r})
warnings.simplefilter("ignore")  # PyTorch's note on 'same' padding with an even kernel
import torch
torch.set_num_threads(1)  # the oracle: its threads spinning on a busy machine cost 5x
from numcnn import backend
from test_grouped_kernels import check_case, grid
assert backend.variant() == {variant!r}, backend.variant()
rng = np.random.default_rng(9)
count = 0
for case in grid():
    check_case(rng, *case)
    count += 1
print("ok", count)
"""


@needs_kernels
@pytest.mark.parametrize("variant,level", [("baseline", 1), ("avx2", 2), ("avx512", 3)])
def test_grouped_depthwise_and_dilated_strided_kernels_match_torch_under_each_variant(variant,
                                                                                       level):
    from numcnn.backend import _lib

    if _lib._cpu_level() < level:
        pytest.skip(f"this CPU cannot run the {variant} variant")
    env = dict(os.environ, NUMCNN_CPU=variant)
    code = GRID_CHECK.format(tests=os.path.dirname(__file__), variant=variant)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
    assert int(out.stdout.split()[1]) == sum(1 for _ in grid())


@needs_kernels
@pytest.mark.parametrize("case", [
    (64, 32, (16, 16), 32, 1, (3, 3), 1, 1, 1),    # MobileNet's depthwise 3x3
    (64, 32, (16, 16), 32, 1, (3, 3), 2, 1, 1),    # ... stride 2, read directly
    (1, 32, (16, 16), 32, 1, (3, 3), 2, 1, 1),     # ... a single image: the width phases
    (64, 32, (8, 8), 8, 1, (3, 3), 1, 1, 1),       # ResNeXt-like groups of 4 channels
    (1, 16, (9, 11), 4, 2, (3, 2), 1, "same", 1),  # a single image, uneven 'same' padding
    (64, 3, (12, 12), 1, 2, (3, 3), 2, 2, 2),      # one group, stride 2, dilation 2
])
def test_named_cases_match_torch_and_numpy(case):
    check_case(np.random.default_rng(0), *case)


@needs_kernels
def test_depthwise_policy_answers():
    """The policy's answers: the kernels for float32 with groups, NumPy for float64 or with
    the kernels off; a stride along the width with dilation on the kernels."""
    rows_p = np.zeros((8, 10, 10, 64), np.float32)
    dw = np.zeros((8, 1, 3, 3), np.float32)
    grouped = np.zeros((8, 2, 3, 3), np.float32)
    assert policy.conv2d(rows_p, dw, 8, (1, 1), (8, 8)) == policy.KERNELS_DEPTHWISE
    assert policy.conv2d(rows_p, grouped, 4, (2, 2), (4, 4), (2, 2)) == policy.KERNELS_GROUPED
    assert policy.conv2d(rows_p, np.zeros((8, 8, 3, 3), np.float32), 1, (1, 2), (8, 4),
                         (2, 2)) == policy.KERNELS_STRIDED
    assert policy.conv2d(rows_p.astype(np.float64), dw.astype(np.float64), 8, (1, 1),
                         (8, 8)) == policy.NUMPY
    with backend.use_kernels(False):
        assert policy.conv2d(rows_p, dw, 8, (1, 1), (8, 8)) == policy.NUMPY
    assert policy.depthwise_direct_stride(backend.VECTOR_FLOATS)
    assert not policy.depthwise_direct_stride(backend.VECTOR_FLOATS - 1)


def test_float64_grouped_convolutions_stay_on_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 7, 7))
    w = rng.standard_normal((6, 1, 3, 3))
    y, cache = F.conv2d_forward(x, w, None, 1, 1, 1, 6)
    assert cache["impl"] == policy.NUMPY
    ref = TF.conv2d(torch.tensor(x), torch.tensor(w), None, 1, 1, 1, 6).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


@needs_kernels
def test_depthwise_conv1d_on_the_kernels_matches_torch():
    """conv1d goes through conv2d: a depthwise 1-D convolution with a stride takes the
    depthwise kernels too."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 6, 40)).astype(np.float32)
    w = rng.standard_normal((12, 1, 5)).astype(np.float32)
    y, cache = F.conv1d_forward(x, w, None, 2, 2, 1, 6)
    assert cache["impl"] == policy.KERNELS_DEPTHWISE
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, _ = F.conv1d_backward(g, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = TF.conv1d(xt, wt, None, 2, 2, 1, 6)
    yt.backward(torch.tensor(g))
    for got, ref in ((y, yt), (gx, xt.grad), (gw, wt.grad)):
        ref = ref.detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5 * max(1, np.abs(ref).max()))
