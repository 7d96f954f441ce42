"""Loading the compiled kernels: the best variant this CPU runs, or none.

``setup.py`` builds ``numcnn/backend/_kernels.c`` once per instruction-set variant, each as its
own extension module. Here the baseline build is asked what the CPU supports
(``numcnn_cpu_level``: 1 baseline, 2 AVX2 + FMA, 3 AVX-512), and the highest variant that the
CPU supports and that was built is loaded with ctypes.

Environment (read once, on import):

    NUMCNN_KERNELS=0            NumPy alone (no variant is loaded)
    NUMCNN_CPU=baseline|avx2|avx512
                                the highest variant to use: forces a lower path, e.g. so that
                                the tests exercise each one (a higher one than the CPU supports
                                is never loaded)
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

from ..errors import NumcnnError

VARIANTS = ("baseline", "avx2", "avx512")  # by level: 1, 2, 3
LOAD_ERROR: Exception | None = None        # why nothing was loaded, when the environment is bad


class KernelLoadError(NumcnnError, ValueError):
    """``NUMCNN_CPU`` names no variant."""


def _library(variant: str):
    """The built variant's shared library, loaded, or None if it was not built (or not here)."""
    spec = importlib.util.find_spec(f"numcnn.backend._kernels_{variant}")
    if spec is None or spec.origin is None:
        return None
    try:
        return ctypes.CDLL(spec.origin)
    except OSError:
        return None


def _cpu_level() -> int:
    """What the CPU runs (1-3), as the baseline build tells; 1 if it is missing."""
    baseline = _library("baseline")
    try:
        function = baseline.numcnn_cpu_level
    except AttributeError:  # no baseline build (or one from another version of the file)
        return 1
    function.argtypes, function.restype = [], ctypes.c_int
    return int(function())


def _cap() -> int:
    cap = os.environ.get("NUMCNN_CPU", "").strip().lower()
    if not cap:
        return len(VARIANTS)
    if cap not in VARIANTS:
        raise KernelLoadError(f"NUMCNN_CPU must be one of {', '.join(VARIANTS)}, got {cap!r}")
    return VARIANTS.index(cap) + 1


def load():
    """``(library, variant)`` of the highest usable variant, or ``(None, None)``.

    An unknown ``NUMCNN_CPU`` (or a ``NUMCNN_KERNELS`` other than 0 or 1) loads nothing (numcnn runs on NumPy): the error is kept in
    :data:`LOAD_ERROR` (:func:`load_error`), and the ``numcnn`` command refuses to run with it
    (one line, exit 2)."""
    global LOAD_ERROR
    switch = os.environ.get("NUMCNN_KERNELS", "1").strip()
    if switch not in ("0", "1"):
        LOAD_ERROR = KernelLoadError(f"NUMCNN_KERNELS must be 0 (NumPy alone) or 1 (the compiled "
                                     f"kernels where built), got {switch!r}")
        return None, None
    if switch == "0":
        return None, None
    try:
        cap = _cap()
    except KernelLoadError as error:
        LOAD_ERROR = error
        return None, None
    level = min(_cpu_level(), cap)
    for variant in reversed(VARIANTS[:level]):
        lib = _library(variant)
        if lib is None:
            continue
        try:
            _declare(lib)
        except AttributeError:  # built from another version of the file
            continue
        # a forked child has none of its parent's OpenMP threads, and GNU OpenMP would wait
        # for them forever: the child's kernels run on one thread
        os.register_at_fork(after_in_child=lambda lib=lib: lib.numcnn_set_max_threads(1))
        return lib, variant
    return None, None


def _declare(lib) -> None:
    """The C signatures of the kernels (ctypes converts the arguments by them)."""
    ptr, size, double = ctypes.c_void_p, ctypes.c_long, ctypes.c_double
    signatures = {  # name: (argument types, result type)
        "conv_forward_f32": ([ptr, size, size, size, ptr, size, size, size, ptr, ptr, size, size,
                              size, size, size, ctypes.c_int], ctypes.c_int),
        "conv_weight_grad_f32": ([ptr, ptr, size, size, size, size, size, size, ptr, size, size,
                                  size, size, size, ctypes.c_int], ctypes.c_int),
        "conv_forward_grouped_f32": ([ptr, size, size, size, ptr, size, size, size, size, ptr,
                                      ptr, size, size, size, size, size, ctypes.c_int],
                                     ctypes.c_int),
        "conv_weight_grad_grouped_f32": ([ptr, ptr, size, size, size, size, size, size, size,
                                          ptr, size, size, size, size, size, ctypes.c_int],
                                         ctypes.c_int),
        "conv_depthwise_f32": ([ptr, size, size, size, ptr, size, size, size, size, ptr, ptr,
                                size, size, size, size, size], None),
        "conv_depthwise_weight_grad_f32": ([ptr, ptr, size, size, size, size, size, size, size,
                                            ptr, size, size, size, size, size], None),
        "conv_depthwise_strided_f32": ([ptr, size, size, size, ptr, size, size, size, size, ptr,
                                        ptr, size, size, size, size, size, size, size], None),
        "conv_depthwise_strided_weight_grad_f32": ([ptr, ptr, size, size, size, size, size, size,
                                                    size, ptr, size, size, size, size, size, size,
                                                    size], None),
        "conv_depthwise_input_grad_f32": ([ptr, ptr, size, size, size, size, size, ptr, size,
                                           size, size, size, size, size, size, size, size, size,
                                           size, size], ctypes.c_int),
        "conv_forward_grouped_strided_f32": ([ptr, size, size, size, ptr, size, size, size,
                                              size, ptr, ptr, size, size, size, size, size, size,
                                              size], ctypes.c_int),
        "conv_weight_grad_grouped_strided_f32": ([ptr, ptr, size, size, size, size, size, size,
                                                  size, ptr, size, size, size, size, size, size,
                                                  size], ctypes.c_int),
        "conv_forward_small_f32": ([ptr, size, size, size, size, ptr, size, size, size, ptr, ptr,
                                    size, size, size, size, size, size], ctypes.c_int),
        "relu_f32": ([ptr, ptr, size], None),
        "add_f32": ([ptr, ptr, ptr, size], None),
        "to_chwn_f32": ([ptr, size, size, size, size, ptr, size, size, size, size], None),
        "relu_backward_f32": ([ptr, ptr, ptr, size], None),
        "batch_norm_f32": ([ptr, size, size, ptr, ptr, double, ptr, ptr, ptr], None),
        "batch_norm_backward_f32": ([ptr, ptr, size, size, ptr, ptr, ptr, ptr, ptr, ptr], None),
        "batch_norm_eval_f32": ([ptr, size, size, ptr, ptr, ptr, ptr, double, ptr], None),
        "max_pool_f32": ([ptr, size, size, size, size, size, size, ptr, ptr, size, size], None),
        "max_pool_backward_f32": ([ptr, ptr, size, size, size, size, size, size, ptr, size,
                                   size], None),
        "set_max_threads": ([ctypes.c_int], None),
        "vector_floats": ([], ctypes.c_int),
        "cpu_level": ([], ctypes.c_int),
        # inference plans (_plan.c): run(ops, count, input, input strides, output, times)
        "plan_run": ([ptr, size, ptr, ptr, ptr, ptr], ctypes.c_int),
        "plan_block_channels": ([], ctypes.c_int),
        "plan_op_size": ([], size),
        "plan_set_parallel_flops": ([size], None),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, f"numcnn_{name}")
        function.argtypes, function.restype = argtypes, restype


LIB, VARIANT = load()
VECTOR_FLOATS = LIB.numcnn_vector_floats() if LIB is not None else 0  # floats a vector holds


def available() -> bool:
    """True if the compiled kernels were built and loaded (and not turned off by
    ``NUMCNN_KERNELS=0``)."""
    return LIB is not None


def load_error() -> Exception | None:
    """Why no kernels were loaded when the environment asked for something unknown (an
    unknown ``NUMCNN_CPU``), else None."""
    return LOAD_ERROR


def variant() -> str | None:
    """The instruction-set variant loaded: ``'baseline'``, ``'avx2'``, ``'avx512'``, or None."""
    return VARIANT
