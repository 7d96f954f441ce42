"""PyTorch's default initialisations, drawn from numcnn's seeded generator."""

from __future__ import annotations

import math

import numpy as np

from .._random import get_rng


def uniform(shape, bound: float, dtype=np.float32) -> np.ndarray:
    """Samples of U(-bound, bound)."""
    return get_rng().uniform(-bound, bound, size=shape).astype(dtype)


def default_weight(shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """``kaiming_uniform_(w, a=sqrt(5))`` as PyTorch's Conv and Linear layers do.

    gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    """
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def default_bias(shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch's Conv and Linear layers do."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)
