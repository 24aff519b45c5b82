#!/usr/bin/env python3
"""Mutation score per module: mutmut mutates src/parla/stages/planning.py, stages/selection.py
and tokens/orpheus.py ([tool.mutmut] in pyproject.toml) and runs their fast unit tests
(test_planning.py, test_selection.py, test_orpheus.py) against every mutant.

Reported per module: mutants, killed (a test failed), survived (every test passed), the other
outcomes mutmut gives (no tests, timeout, suspicious, skipped, not checked), and the score,
killed / (mutants - no tests - skipped - not checked). A timeout counts as survived: nothing
failed. ``--survivors`` lists the survivors by name; ``mutmut show NAME`` prints one's diff.

Usage: python benchmarks/mutation.py [--no-run] [--max-children N] [--survivors]
Run from the repository root; needs the test extra (mutmut). mutmut copies the package into
mutants/ (ignored by git) and keeps its results there, so --no-run reports the last run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter, defaultdict

UNCOUNTED = ("no tests", "skipped", "not checked")


def results() -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} from ``mutmut results --all true``."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         check=True, capture_output=True, text=True).stdout
    by_module: dict[str, dict[str, str]] = defaultdict(dict)
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            by_module[name.rsplit(".", 1)[0]][name] = status
    return dict(by_module)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="report the last run only")
    parser.add_argument("--max-children", type=int, default=None, help="mutmut's workers")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args()
    if not args.no_run:
        command = [sys.executable, "-m", "mutmut", "run"]
        if args.max_children:
            command += ["--max-children", str(args.max_children)]
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
    by_module = results()
    if not by_module:
        print("no mutmut results: run without --no-run first", file=sys.stderr)
        return 1
    print(f"{'module':<24} {'mutants':>7} {'killed':>6} {'survived':>8} {'other':>5} "
          f"{'score':>6}")
    for module, statuses in sorted(by_module.items()):
        counts = Counter(statuses.values())
        counted = len(statuses) - sum(counts[s] for s in UNCOUNTED)
        other = len(statuses) - counts["killed"] - counts["survived"]
        score = f"{100 * counts['killed'] / counted:5.1f}%" if counted else "   n/a"
        print(f"{module:<24} {len(statuses):>7} {counts['killed']:>6} {counts['survived']:>8} "
              f"{other:>5} {score:>6}")
        details = {s: n for s, n in counts.items() if s not in ("killed", "survived")}
        if details:
            print(f"{'':<24} other: {', '.join(f'{n} {s}' for s, n in sorted(details.items()))}")
        if args.survivors:
            for name, status in sorted(statuses.items()):
                if status not in ("killed", *UNCOUNTED):
                    print(f"    {status}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
