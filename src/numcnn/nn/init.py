"""PyTorch's default initialisations, drawn from numcnn's seeded generator.

Under :func:`shapes_only` no array is allocated: every initial value is a read-only zero
broadcast to its shape (no memory, nothing drawn from the generator), so that a model can be
built just to know its shapes and parameter counts (``numcnn summary``) or to check a file's
tensors against its architecture before any weight is allocated (``numcnn.io.load``).
"""

from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager

import numpy as np

from .._random import get_rng
from .._text import a
from ..errors import AllocationError

_SHAPES_ONLY = contextvars.ContextVar("numcnn_shapes_only", default=False)


@contextmanager
def shapes_only():
    """Within the block, layers built get placeholder parameters and buffers: read-only zeros
    broadcast to their shapes, which take no memory."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def is_shapes_only() -> bool:
    return _SHAPES_ONLY.get()


def placeholder(shape, dtype=np.float32) -> np.ndarray:
    """A read-only array of zeros of ``shape`` that takes no memory (a broadcast scalar)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def is_placeholder(array) -> bool:
    array = np.asarray(array)
    return array.size > 1 and not array.flags.writeable and not any(array.strides)


def _allocate(make, shape, dtype) -> np.ndarray:
    """``make()``, or an AllocationError naming the shape and size the machine cannot hold."""
    try:
        return make()
    except (MemoryError, ValueError) as error:
        if isinstance(error, ValueError) and "too big" not in str(error):
            raise
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        size = math.prod(shape) * np.dtype(dtype).itemsize
        raise AllocationError(f"cannot allocate {a(np.dtype(dtype).name)} array of shape {shape} "
                              f"({size:,} bytes): expected a size this machine can hold"
                              ) from None


def zeros(shape, dtype=np.float32) -> np.ndarray:
    if is_shapes_only():
        return placeholder(shape, dtype)
    return _allocate(lambda: np.zeros(shape, dtype=dtype), shape, dtype)


def ones(shape, dtype=np.float32) -> np.ndarray:
    if is_shapes_only():
        return placeholder(shape, dtype)
    return _allocate(lambda: np.ones(shape, dtype=dtype), shape, dtype)


def uniform(shape, bound: float, dtype=np.float32) -> np.ndarray:
    """Samples of U(-bound, bound) (an AllocationError when they cannot be held)."""
    if is_shapes_only():
        return placeholder(shape, dtype)
    return _allocate(lambda: get_rng().uniform(-bound, bound, size=shape).astype(dtype),
                     shape, dtype)


def default_weight(shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """``kaiming_uniform_(w, a=sqrt(5))`` as PyTorch's Conv and Linear layers do.

    gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    """
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def default_bias(shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch's Conv and Linear layers do."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)
