"""Keep freed activation memory in the process instead of handing it back to the system.

A training step allocates and frees the same few arrays of 1-20 MB again and again (activations,
gradients, im2col columns). glibc's ``malloc`` serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB
at start, raised on the fly up to the largest block freed so far) with a fresh ``mmap``, and gives
free memory at the top of the heap back above ``M_TRIM_THRESHOLD``: every new array then costs a
page fault per 4 KiB page, which the benchmark measured as a quarter of a ``convnet-bn`` training
step (1,290 images/s against 1,677 with the settings below, same peak memory).

So numcnn can raise both thresholds (``mallopt``), the way a caching allocator reuses freed
blocks: arrays up to ``MMAP_THRESHOLD`` then come from the heap and freed memory is kept for
reuse, up to ``TRIM_THRESHOLD``. That changes the allocator of the whole process, so it is
never done on import: ``numcnn train`` (and the other CLI commands) and ``bench/bench.py`` opt
in, and a program embedding numcnn calls ``numcnn.tune_malloc()`` if it wants the same. Set
``NUMCNN_MALLOC_TUNING=0`` in the environment to keep the system's defaults even then.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1   # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds; True if they were set, False where not
    (not Linux, a C library without ``mallopt``, or ``NUMCNN_MALLOC_TUNING=0``)."""
    if not sys.platform.startswith("linux") or os.environ.get("NUMCNN_MALLOC_TUNING") == "0":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
