"""What the fuzz suite (tests/test_fuzz_*.py) shares: one case runs, and ends in a correct result
or a NumcnnError whose message names what was expected and what came; every case is counted by
kind and outcome, so docs/reliability.md's table is measured (``NUMCNN_FUZZ_REPORT=file.json``
makes the test session write the counts there; ``tools/reliability_table.py`` prints the table).
"""

from __future__ import annotations

import re
from collections import Counter

from numcnn.errors import NumcnnError

OUTCOMES: Counter = Counter()  # (kind, outcome) -> cases

# A clear message says what was expected and what came: these words (or a comparison) appear.
_CLEAR = re.compile(r"expected|must|got|should|needs|cannot|not|only|refused|too|no |missing|"
                    r"unknown|exceeds|more than|at most|holds|range|invalid|smaller|larger|empty|"
                    r"differ|fit|exceed", re.I)


def record(kind: str, outcome: str) -> None:
    OUTCOMES[(kind, outcome)] += 1


def check_case(kind: str, run, check=None):
    """Run ``run()``: a result is passed to ``check`` (which asserts it is right) and counted
    ``"result"``; a NumcnnError must be one clear line and is counted ``"clear error"``; any
    other exception fails the test (and is counted, so a failing suite shows it)."""
    try:
        value = run()
    except NumcnnError as error:
        message = str(error)
        assert message and _CLEAR.search(message), f"unclear message: {message!r}"
        record(kind, "clear error")
        return error
    except Exception as error:  # noqa: BLE001 - that is what the suite looks for
        record(kind, f"raw {type(error).__name__}")
        raise AssertionError(f"{kind}: raw {type(error).__name__}: {error}") from error
    if check is not None:
        check(value)
    record(kind, "result")
    return value
