"""numcnn tunes glibc's malloc on import so that freed activations are reused (numcnn._memory)."""

import ctypes
import sys

import pytest

from numcnn._memory import tune_malloc


def _has_glibc_mallopt() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and _has_glibc_mallopt()),
                    reason="mallopt is glibc's (Linux)")
def test_thresholds_are_set_on_linux(monkeypatch):
    monkeypatch.delenv("NUMCNN_MALLOC_TUNING", raising=False)
    assert tune_malloc() is True


def test_the_environment_switch_keeps_the_system_defaults(monkeypatch):
    monkeypatch.setenv("NUMCNN_MALLOC_TUNING", "0")
    assert tune_malloc() is False
