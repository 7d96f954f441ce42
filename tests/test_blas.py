"""The BLAS-thread rule of numcnn.backend.blas, from a known starting thread count.

Added after mutation testing (docs/architecture.md, "Mutation testing"): the thread-safety test
in test_backend.py compares the count after with the count before, but earlier tests in the same
process may already have left the BLAS on one thread, and then a rule that never restores the
count passes it. Here the count is set to 2 first (threadpoolctl), so a rule that forgets to
restore it, or restores it too early, is seen.
"""

import numpy as np
import pytest

from numcnn import backend
from numcnn.backend import blas

threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.skipif(not backend.available(), reason="compiled kernels not built")


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != [2] * len(blas_threads()) or not blas_threads():
            pytest.skip("the BLAS cannot be given 2 threads here")
        yield


def test_float32_products_hold_the_blas_to_one_thread_and_give_its_count_back(two_blas_threads):
    with blas.blas_one_thread(np.dtype(np.float32)):
        assert set(blas_threads()) == {1}
        with blas.blas_one_thread(np.dtype(np.float32)):  # nested: the inner block's end restores nothing
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}
    assert set(blas_threads()) == {2}
    a = np.ones((64, 64), np.float32)
    np.testing.assert_array_equal(backend.matmul(a, a), a @ a)
    assert set(blas_threads()) == {2}  # every product gives the count back, not only the first
    backend.matmul(a, a)
    assert set(blas_threads()) == {2}


def test_the_rule_leaves_float64_products_and_the_kernels_off_alone(two_blas_threads):
    with blas.blas_one_thread(np.dtype(np.float64)):  # a dtype, as matmul passes
        assert set(blas_threads()) == {2}
    with backend.use_kernels(False), blas.blas_one_thread(np.dtype(np.float32)):
        assert set(blas_threads()) == {2}


def test_without_threadpoolctl_the_rule_does_nothing_and_products_still_run(monkeypatch):
    """threadpoolctl is a dependency, but an install without it must still multiply (the
    kernels then share the cores with the BLAS), not fail on the first float32 product."""
    monkeypatch.setattr(blas, "_controllers_found", None)  # forget the controllers found
    monkeypatch.setitem(__import__("sys").modules, "threadpoolctl", None)  # import fails
    assert blas._controllers() == []
    a = np.ones((8, 8), np.float32)
    np.testing.assert_array_equal(backend.matmul(a, a), a @ a)
