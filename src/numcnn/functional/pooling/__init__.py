"""Pooling over NCHW maps: max, average, power-average (L_p), adaptive and global pooling.

Notation (as in :mod:`._windows`): ``n, c`` batch and channels; ``h, w`` input height and width;
``kh, kw`` kernel; ``sh, sw`` stride; ``ph, pw`` padding; ``dh, dw`` dilation; ``oh, ow`` output.

A pooling window slides as a convolution kernel does, so the output size is PyTorch's::

    out = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1

and with ``ceil_mode=True`` the floor becomes a ceiling, except that a last window starting in
the right padding is dropped. ``padding`` may be at most half the kernel size (as in PyTorch):
max pooling pads with ``-inf``, average pooling with zeros.

Which input a max-pool output comes from (its index, and where its gradient goes) is chosen as
PyTorch's CPU kernels choose it: the window is scanned row by row and a value must be strictly
greater than the maximum so far to replace it, so among tied maxima the first in scan order wins;
a window holding NaN has maximum NaN and its winner is the *last* NaN; a window of nothing but
``-inf`` picks its first position inside the input. ``split_ties=True`` instead divides the
gradient evenly among all tied maxima of a window.

One module per family: ``max_pool`` (with its three strategies, chosen by
:func:`numcnn.backend.policy.max_pool` and recorded as ``cache["impl"]``: the compiled kernel,
NumPy over non-overlapping blocks, NumPy over any windows), ``avg_pool``, ``lp_pool``,
``adaptive_pool``, ``global_pool``; ``_common`` holds the argument checks and gradient checks
they share. Output sizes (``pool2d_output_size``), the ceil-mode padding and the window and block
views are the one sliding-window module's, :mod:`numcnn.functional._windows`.

Every operation ``op`` comes as ``op(...)`` (the output, same signature as
``torch.nn.functional.op``), ``op_forward(...) -> (output, cache)`` and
``op_backward(grad_out, cache) -> grad_input``.
"""

from .._windows import pool_output_size as pool2d_output_size  # noqa: F401
from .adaptive_pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,  # noqa: F401
                            adaptive_avg_pool2d_forward, adaptive_max_pool2d,
                            adaptive_max_pool2d_backward, adaptive_max_pool2d_forward,
                            adaptive_output_size)
from .avg_pool import avg_pool2d, avg_pool2d_backward, avg_pool2d_forward  # noqa: F401
from .global_pool import (global_avg_pool2d, global_avg_pool2d_backward,  # noqa: F401
                          global_avg_pool2d_forward, global_max_pool2d,
                          global_max_pool2d_backward, global_max_pool2d_forward)
from .lp_pool import lp_pool2d, lp_pool2d_backward, lp_pool2d_forward  # noqa: F401
from .max_pool import max_pool2d, max_pool2d_backward, max_pool2d_forward  # noqa: F401

__all__ = [
    "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_forward", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_forward", "lp_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_forward", "global_avg_pool2d_backward",
    "global_max_pool2d", "global_max_pool2d_forward", "global_max_pool2d_backward",
    "pool2d_output_size", "adaptive_output_size",
]
