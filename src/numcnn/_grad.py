"""Gradient mode: whether layers keep what their backward pass needs.

Inside ``with numcnn.no_grad():`` layers keep no cache (inference uses less memory and time);
calling ``backward`` afterwards raises a clear error. Like PyTorch's grad mode the setting is
local to the thread (a context variable, so an asyncio task too): ``no_grad`` in one thread
leaves every other thread's layers keeping their caches.
"""

import contextlib
import contextvars

_enabled = contextvars.ContextVar("numcnn_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """True unless inside ``numcnn.no_grad()`` in this thread."""
    return _enabled.get()


@contextlib.contextmanager
def no_grad():
    """Context manager that turns off caching for backward in this thread, like
    ``torch.no_grad``."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)
