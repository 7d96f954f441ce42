"""Print docs/reliability.md's table from a fuzz-suite report.

    NUMCNN_FUZZ_REPORT=/tmp/fuzz.json python -m pytest -q tests/test_fuzz_layers.py \\
        tests/test_fuzz_files.py tests/test_fuzz_cli.py tests/test_run_folder.py
    python tools/reliability_table.py /tmp/fuzz.json

Each row is one kind of case and one outcome, with the number of cases the suite ran; an
outcome "raw <Exception>" would be a failure (the suite fails on it).
"""

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    report = json.loads(open(path).read())
    by_kind = defaultdict(dict)
    for row in report["cases"]:
        by_kind[row["kind"]][row["outcome"]] = row["cases"]
    total = sum(row["cases"] for row in report["cases"])
    print("| kind of case | cases | outcomes |")
    print("|---|---:|---|")
    for kind in sorted(by_kind):
        outcomes = by_kind[kind]
        text = ", ".join(f"{outcome}: {count}" for outcome, count in sorted(outcomes.items()))
        print(f"| {kind} | {sum(outcomes.values())} | {text} |")
    print(f"| **all** | **{total}** | |")
    if report.get("measures"):
        print()
        for name, value in sorted(report["measures"].items()):
            print(f"- {name}: {value}")


if __name__ == "__main__":
    main(sys.argv[1])
