"""Unbatched input: a layer that takes ``(N, *)`` also takes one sample ``(*)``, as PyTorch.

:func:`accepts_unbatched` wraps a layer class's ``forward``, ``backward`` and ``output_shape``:
an input with one axis fewer than the batched rank gets a batch axis of 1 before the batched
code runs, and loses it after (the output, the input gradient, the output shape). Nothing else
changes, so the batched path stays the one tested implementation.
"""

from __future__ import annotations

import functools

import numpy as np


def accepts_unbatched(batched_ndim: int):
    """Class decorator: let ``cls`` take inputs of ``batched_ndim - 1`` axes as one sample.

    ``backward_params`` needs no wrapper: every layer's goes through ``self.backward`` or does
    nothing.
    """
    def decorate(cls):
        forward, backward, output_shape = cls.forward, cls.backward, cls.output_shape

        @functools.wraps(forward)
        def forward_any(self, x, *args, **kwargs):
            x = np.asarray(x)
            single = x.ndim == batched_ndim - 1
            object.__setattr__(self, "_unbatched", single)
            if not single:
                return forward(self, x, *args, **kwargs)
            out = forward(self, x[None], *args, **kwargs)
            if isinstance(out, tuple):                 # (out, indices) of return_indices
                return tuple(part[0] for part in out)
            return out[0]

        @functools.wraps(backward)
        def backward_any(self, grad_out, *args, **kwargs):
            if not self.__dict__.get("_unbatched"):
                return backward(self, grad_out, *args, **kwargs)
            grad = backward(self, np.asarray(grad_out)[None], *args, **kwargs)
            return None if grad is None else grad[0]

        @functools.wraps(output_shape)
        def output_shape_any(self, input_shape):
            shape = tuple(input_shape)
            if len(shape) == batched_ndim - 1:
                return tuple(output_shape(self, (1, *shape))[1:])
            return output_shape(self, shape)

        cls.forward, cls.backward, cls.output_shape = forward_any, backward_any, output_shape_any
        cls._batched_ndim = batched_ndim
        return cls
    return decorate
