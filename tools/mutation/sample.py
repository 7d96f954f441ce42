"""Keep a seeded random sample of a cosmic-ray session's mutants; mark the rest skipped.

    python tools/mutation/sample.py SESSION.sqlite --size 80 --seed 9
    python tools/mutation/sample.py SESSION.sqlite --more 40 --seed 10   # a second batch

Before sampling, mutants inside type annotations are marked skipped: every module here starts
with ``from __future__ import annotations``, so an annotation is never evaluated and such a
mutant is equivalent by construction (the seam's first run found 4 of its 14 survivors there).
Prints the counts, so the published sample can be stated exactly. Uses cosmic-ray's own WorkDB
(cosmic-ray 8.7.0), as its bundled filters do.
"""

from __future__ import annotations

import argparse
import ast
import random
import sqlite3
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions (line, column) of every annotation in the module at ``path``."""
    tree = ast.parse(path.read_text())
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes.append(node.returns)
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg,
                        args.kwarg]:
                if arg is not None:
                    nodes.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset))
            for n in nodes if n is not None]


def in_annotation(spec, spans) -> bool:
    start, end = tuple(spec.start_pos), tuple(spec.end_pos)
    return any(lo <= start and end <= hi for lo, hi in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session")
    parser.add_argument("--size", type=int, help="mutants to keep")
    parser.add_argument("--more", type=int, help="after a run: this many more of the skipped "
                        "mutants (annotations still left out) made pending again")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    if args.more is not None:
        return more(args.session, args.more, args.seed)
    with use_db(args.session, WorkDB.Mode.open) as db:
        items = sorted(db.pending_work_items, key=lambda item: item.job_id)
        spans = {}
        annotated, candidates = [], []
        for item in items:
            path = Path(item.mutations[0].module_path)
            if path not in spans:
                spans[path] = annotation_spans(path)
            (annotated if all(in_annotation(m, spans[path]) for m in item.mutations)
             else candidates).append(item)
        keep = {item.job_id for item in
                random.Random(args.seed).sample(candidates, min(args.size, len(candidates)))}
        skipped = [item.job_id for item in items if item.job_id not in keep]
        db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    print(f"{len(items)} mutants: {len(annotated)} in annotations (equivalent), "
          f"{len(candidates)} others, {len(keep)} sampled (seed {args.seed})")


def more(session: str, count: int, seed: int) -> None:
    """Make ``count`` more skipped mutants (none in annotations) pending: a seeded second
    batch that ``cosmic-ray exec`` then runs, the first batch's results kept."""
    with use_db(session, WorkDB.Mode.open) as db:
        outcomes = {job_id: result.worker_outcome for job_id, result in db.results}
        spans = {}
        skipped = []
        for item in sorted(db.work_items, key=lambda item: item.job_id):
            if outcomes.get(item.job_id) != WorkerOutcome.SKIPPED:
                continue
            path = Path(item.mutations[0].module_path)
            if path not in spans:
                spans[path] = annotation_spans(path)
            if not all(in_annotation(m, spans[path]) for m in item.mutations):
                skipped.append(item.job_id)
    chosen = random.Random(seed).sample(skipped, min(count, len(skipped)))
    with sqlite3.connect(session) as connection:
        connection.executemany("delete from work_results where job_id = ?",
                               [(job_id,) for job_id in chosen])
    print(f"{len(chosen)} more of {len(skipped)} skipped mutants made pending (seed {seed})")


if __name__ == "__main__":
    main()
