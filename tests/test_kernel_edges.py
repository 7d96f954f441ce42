"""Kernel-path edges that mutation testing of backend/kernels.py found untested
(docs/architecture.md, "Mutation testing"): the input gradient's zero frame with a dilation of 3
along the height, the default padding of the blocked NCHW -> CHWN copy, and that the
short-rows kernel (a single image's rows end to end) never reads past the end of its input.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from numcnn import backend
from numcnn import functional as F
from numcnn.backend import kernels, layout, policy

pytestmark = pytest.mark.skipif(not backend.available(), reason="compiled kernels not built")


@pytest.mark.parametrize("dilation, padding", [((3, 1), (2, 1)), ((3, 1), (6, 1)),
                                               ((1, 3), (1, 0)), ((3, 4), (6, 8))])
def test_kernel_input_gradient_with_a_dilation_of_3_or_more(dilation, padding):
    """The stride-1 input gradient is the forward kernel on the gradient in a zero frame of
    ``(h + (kh-1)*dh, w + (kw-1)*dw)``; with dilations of 1 and 2 a frame of the wrong size
    (``(kh-1) + dh``) still happens to fit, with 3 it does not. With a padding of
    ``(kh-1)*dh`` the gradient's first row is the frame's first row, so a read one row past a
    channel's frame meets the next channel's gradient, not zeros."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 3, 13, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, 1, padding, dilation)
    assert cache["impl"] == policy.KERNELS
    grad_out = rng.standard_normal(y.shape).astype(np.float32)
    grad_x, grad_w, _ = F.conv2d_backward(grad_out, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = TF.conv2d(xt, wt, None, 1, padding, dilation)
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_w, wt.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_blocked_chwn_copy_pads_nothing_by_default():
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(kernels.to_chwn(x), layout.to_chwn(x))
    np.testing.assert_array_equal(kernels.to_chwn(x), x.transpose(1, 2, 3, 0))


GUARD_PAGE_SCRIPT = textwrap.dedent("""
    import ctypes, mmap
    import numpy as np
    from numcnn.backend import kernels

    def check(n):
        # the input (c, hp, wp, n) ends exactly where a page the process may not read begins
        c, hp, wp, kh, kw, dil = 3, 9, 8, 3, 2, (2, 1)
        count = c * hp * wp * n
        page = mmap.PAGESIZE
        pages = -(-count * 4 // page) + 1
        memory = mmap.mmap(-1, pages * page)
        start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(start + (pages - 1) * page, page, 0) == 0  # PROT_NONE
        offset = (pages - 1) * page - count * 4
        rows_p = np.frombuffer(memory, np.float32, count, offset).reshape(c, hp, wp, n)
        rng = np.random.default_rng(0)
        rows_p[...] = rng.standard_normal(rows_p.shape)
        weight = rng.standard_normal((4, c, kh, kw)).astype(np.float32)
        out_hw = (hp - dil[0] * (kh - 1), wp - dil[1] * (kw - 1))
        got = kernels.conv_forward_flat(rows_p, weight, None, dil, out_hw)
        x = np.ascontiguousarray(rows_p.transpose(3, 0, 1, 2))
        want = np.zeros((4, *out_hw, n), np.float32)
        for i in range(kh):
            for j in range(kw):
                top, left = i * dil[0], j * dil[1]
                patch = x[:, :, top:top + out_hw[0], left:left + out_hw[1]]
                want += np.einsum("oc,ncpq->opqn", weight[:, :, i, j], patch)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)

    for n in (1, 2):  # a single image, and two (rows still short)
        check(n)
    print("ok")
""")


def test_short_rows_kernel_never_reads_past_the_end_of_its_input():
    """conv_forward_flat lays a single image's rows end to end; its last output must end the
    row, so that the last tap's read is the input's last number. The input is placed right
    before a page the process may not read (mprotect): a read past its end crashes the child."""
    result = subprocess.run([sys.executable, "-c", GUARD_PAGE_SCRIPT], capture_output=True,
                            check=False, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "ok"
