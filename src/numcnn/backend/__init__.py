"""numcnn's backend: the one seam between the NumPy reference code and the compiled kernels.

Everything that decides *how* an op is computed lives here, each thing in one place:

    _lib.py      loading the compiled kernels: the best instruction-set variant the CPU runs
                 (baseline, AVX2, AVX-512), ``available()``, ``variant()``
    switch.py    ``use_kernels(flag)`` and ``enabled()``: per thread (a context variable)
    policy.py    which implementation runs for which shapes (the one place that decides);
                 every functional op records the answer in its cache as ``cache["impl"]``
    layout.py    the CHWN layout (activations whose memory is ``(C, H, W, N)``): the one
                 predicate ``is_chwn`` and the conversions
    blas.py      ``matmul``, the one matrix-product helper, and the rule that holds NumPy's
                 BLAS to one thread while numcnn's float32 kernels run (thread-safe)
    kernels.py   the ctypes bindings of ``_kernels.c``

The NumPy code and its maths stay in :mod:`numcnn.functional`, readable, as the reference the
tests hold the kernels to. ``docs/architecture.md`` shows the layers of the package and which
kernel runs where.
"""

from . import kernels, layout, policy  # noqa: F401
from ._lib import VECTOR_FLOATS, available, load_error, variant  # noqa: F401
from .blas import blas_one_thread, matmul  # noqa: F401
from .layout import is_chwn  # noqa: F401
from .switch import enabled, use_kernels  # noqa: F401

__all__ = ["available", "variant", "load_error", "enabled", "use_kernels", "matmul",
           "blas_one_thread", "is_chwn", "kernels", "layout", "policy", "VECTOR_FLOATS"]
