"""Global average and max pooling."""

from __future__ import annotations

import numpy as np

from ._common import _check_grad, _check_map
from .adaptive_pool import adaptive_output_size


# -- global pooling -------------------------------------------------------------------------------
def global_avg_pool2d_forward(x):
    """Global average pooling; returns ``(out, cache)``. See :func:`global_avg_pool2d`."""
    return _global_avg_pool2d_forward("global_avg_pool2d", x)


def _global_avg_pool2d_forward(name, x):
    x = _check_map(x, name)
    adaptive_output_size(name, x.shape, 1)
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).mean(axis=2), dict(x_shape=x.shape, out_shape=(n, c))


def global_avg_pool2d(x) -> np.ndarray:
    r"""Mean over each plane: ``out(n, c) = 1/(H W) \sum_{h, w} x(n, c, h, w)``.

    The same as ``adaptive_avg_pool2d(x, 1)`` flattened to (N, C) (Keras's
    GlobalAveragePooling2D).

    Shape:
        input (N, C, H, W) -> output (N, C).
    """
    return global_avg_pool2d_forward(x)[0]


def global_avg_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Every pixel of a plane gets ``grad_out / (H W)``."""
    grad_out = _check_grad(grad_out, cache, "global_avg_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    grad = np.empty((n, c, h, w), grad_out.dtype)
    grad[...] = (grad_out / (h * w))[:, :, None, None]
    return grad


def global_max_pool2d_forward(x):
    """Global max pooling; returns ``(out, cache)``. See :func:`global_max_pool2d`."""
    return _global_max_pool2d_forward("global_max_pool2d", x)


def _global_max_pool2d_forward(name, x):
    x = _check_map(x, name)
    adaptive_output_size(name, x.shape, 1)
    n, c, h, w = x.shape
    planes = x.reshape(n, c, h * w)
    arg = planes.argmax(axis=2)  # the first maximum, or the first NaN
    out = np.take_along_axis(planes, arg[:, :, None], axis=2)[:, :, 0]
    nan_planes = np.isnan(out)
    if nan_planes.any():  # PyTorch picks the last NaN
        arg[nan_planes] = h * w - 1 - np.isnan(planes[nan_planes][:, ::-1]).argmax(axis=1)
    return out, dict(x_shape=x.shape, out_shape=(n, c), arg=arg)


def global_max_pool2d(x) -> np.ndarray:
    r"""Maximum over each plane: ``out(n, c) = \max_{h, w} x(n, c, h, w)``.

    The same as ``adaptive_max_pool2d(x, 1)`` flattened to (N, C) (Keras's GlobalMaxPooling2D);
    ties and NaN as in :func:`max_pool2d`.

    Shape:
        input (N, C, H, W) -> output (N, C).
    """
    return global_max_pool2d_forward(x)[0]


def global_max_pool2d_backward(grad_out, cache) -> np.ndarray:
    """Each plane's gradient goes to the pixel its maximum came from."""
    grad_out = _check_grad(grad_out, cache, "global_max_pool2d_backward")
    n, c, h, w = cache["x_shape"]
    grad = np.zeros((n, c, h * w), grad_out.dtype)
    np.put_along_axis(grad, cache["arg"][:, :, None], grad_out[:, :, None], axis=2)
    return grad.reshape(n, c, h, w)
