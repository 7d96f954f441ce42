"""The one matrix-product helper, and the rule that keeps NumPy's BLAS off the kernels' cores.

OpenBLAS's threads, once woken by a product, spin on the cores for a while waiting for the next
one; numcnn's OpenMP kernels starting then find every core busy (a ``convnet-bn`` training step
measured 45 ms instead of 10, the linear layer's products waking them). So numcnn's own float32
products (the precision its kernels run in) go through :func:`matmul`, which holds the BLAS to
one thread while the kernels are on and wakes none. Outside these products the BLAS keeps its
threads, for numcnn's float64 code and for everyone else's. ``NUMCNN_BLAS_THREADS=keep`` turns
the rule off.

Thread safety. The BLAS's thread count belongs to the process, so the rule counts the products
in flight across all threads under a lock: the first to start sets one thread, the last to end
restores the count it found. (While one thread is inside, another thread's BLAS products run on
one thread too; none runs with a count left behind.)
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .switch import enabled

_lock = threading.Lock()
_controllers_found: list | None = None  # threadpoolctl's controllers of the BLAS, on first use
_open = 0                                # blocks open, over all threads
_saved: list = []                        # (controller, threads) to restore when the last closes


def _controllers() -> list:
    global _controllers_found
    if _controllers_found is None:
        found = []
        if os.environ.get("NUMCNN_BLAS_THREADS") != "keep":
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # an install without it: the kernels share the cores
                pass
            else:
                found = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        _controllers_found = found
    return _controllers_found


class _OneBlasThread:
    """The BLAS on one thread inside the block (the first block open sets it, the last to close
    restores it, whichever threads they are in)."""

    __slots__ = ()

    def __enter__(self):
        global _open, _saved
        with _lock:
            if _open == 0:
                _saved = [(lib, lib.get_num_threads()) for lib in _controllers()]
                for lib, threads in _saved:
                    if threads != 1:
                        lib.set_num_threads(1)
            _open += 1
        return self

    def __exit__(self, *exc_info) -> None:
        global _open
        with _lock:
            _open -= 1
            if _open == 0:
                for lib, threads in _saved:
                    if threads != 1:
                        lib.set_num_threads(threads)


class _NoLimit:
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None


_NO_LIMIT = _NoLimit()


def blas_one_thread(dtype):
    """``with blas_one_thread(x.dtype): ...``: float32 BLAS products inside run on one BLAS
    thread while the kernels are on (see the module docstring); otherwise does nothing."""
    if not (dtype == np.float32 and enabled() and _controllers()):
        return _NO_LIMIT
    return _OneBlasThread()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` (``np.matmul``, batched over leading axes, into ``out`` if given), under the
    BLAS-thread rule. Every matrix product numcnn makes goes through here."""
    with blas_one_thread(np.result_type(a, b)):
        return np.matmul(a, b, out=out)
