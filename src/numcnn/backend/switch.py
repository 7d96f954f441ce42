"""The switch between the compiled kernels and the NumPy reference, per thread and task.

``use_kernels`` is a context variable (:mod:`contextvars`), like PyTorch's thread-local grad
mode: ``with use_kernels(False):`` in one thread (or asyncio task) leaves every other one as it
was.
"""

from __future__ import annotations

import contextlib
import contextvars

from ._lib import LIB

_kernels_on = contextvars.ContextVar("numcnn_use_kernels", default=LIB is not None)


def enabled() -> bool:
    """True if ops in this thread use the compiled kernels where they apply."""
    return _kernels_on.get()


@contextlib.contextmanager
def use_kernels(flag: bool):
    """``with use_kernels(False):`` runs the NumPy reference path in this thread (``True``: the
    kernels, where available). Restores the previous setting on exit."""
    token = _kernels_on.set(bool(flag) and LIB is not None)
    try:
        yield
    finally:
        _kernels_on.reset(token)
