"""
Per-module mutation scores from the last ``mutmut run`` (docs/testing.md).

    mutmut run --max-children 2 && python tests/mutation_scores.py

A timeout counts as killed: the mutant made the tests hang (an endless
loop), and mutmut stopped it.  Survivors are listed with ``mutmut results``
and shown with ``mutmut show NAME``.
"""

from __future__ import annotations

import collections
import glob
import json
import sys

from mutmut.__main__ import status_by_exit_code


def main() -> int:
    rows = []
    for meta in sorted(glob.glob("mutants/cwtx/**/*.py.meta", recursive=True)):
        exits = json.load(open(meta))["exit_code_by_key"].values()
        counts = collections.Counter(status_by_exit_code[code] for code in exits)
        caught = counts["killed"] + counts["timeout"]
        total = sum(counts.values())
        module = meta.removeprefix("mutants/").removesuffix(".meta")
        rows.append((module, caught, total, counts))
    if not rows:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 1
    print(f"{'module':32} {'killed':>7} {'total':>6} {'score':>6}  other")
    for module, caught, total, counts in rows:
        other = {k: v for k, v in counts.items() if k not in ("killed", "timeout") and v}
        print(f"{module:32} {caught:7} {total:6} {caught / total:6.1%}  {other or ''}")
    caught = sum(r[1] for r in rows)
    total = sum(r[2] for r in rows)
    print(f"{'all':32} {caught:7} {total:6} {caught / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
