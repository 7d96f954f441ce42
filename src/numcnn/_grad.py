"""Gradient mode: whether layers keep what their backward pass needs.

Inside ``with numcnn.no_grad():`` layers keep no cache (inference uses less memory and time);
calling ``backward`` afterwards raises a clear error.
"""

import contextlib

_enabled = True


def is_grad_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def no_grad():
    """Context manager that turns off caching for backward, like ``torch.no_grad``."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous
