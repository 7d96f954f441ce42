"""Shared fixtures.

Tests that need real MNIST read it from ``$NUMCNN_TEST_MNIST`` or, by default, from
``../shared/data/mnist.npz`` beside the repository (the team's machines have it there; `.ci/run`
sets the variable). The package itself never reads that path.
"""

import os
from pathlib import Path

import numpy as np
import pytest

import numcnn

REPO = Path(__file__).resolve().parent.parent


def mnist_file() -> Path | None:
    candidates = [os.environ.get("NUMCNN_TEST_MNIST"), REPO.parent / "shared" / "data" / "mnist.npz"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = mnist_file()
    if path is None:
        pytest.skip("real MNIST not found: set NUMCNN_TEST_MNIST to an mnist.npz")
    return path


@pytest.fixture(scope="session")
def mnist_small(mnist_path):
    """The first 2,000 training and 500 test images of real MNIST, as uint8 arrays."""
    with np.load(mnist_path) as data:
        return (data["x_train"][:2000], data["y_train"][:2000],
                data["x_test"][:500], data["y_test"][:500])


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same numcnn random state."""
    numcnn.manual_seed(0)
    yield


def pytest_sessionfinish(session, exitstatus):
    """With NUMCNN_FUZZ_REPORT set, write the fuzz suite's case counts (tests/fuzzing.py) there."""
    target = os.environ.get("NUMCNN_FUZZ_REPORT")
    if not target:
        return
    import json
    import sys

    fuzzing = sys.modules.get("tests.fuzzing") or sys.modules.get("fuzzing")
    if fuzzing is None:
        return
    rows = [{"kind": kind, "outcome": outcome, "cases": count}
            for (kind, outcome), count in sorted(fuzzing.OUTCOMES.items())]
    report = {"cases": rows, "measures": fuzzing.MEASURES}
    Path(target).write_text(json.dumps(report, indent=1) + "\n")
