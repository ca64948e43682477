"""Turn mutmut's results (mutants/**/*.meta) into benchmarks/results/mutation.json.

Only the mutants `targets.txt` names count, per group (privacy, engine, site) and per module
of `fedsynth/privacy/`. Killed counts mutmut's "killed" and "timeout"; survived counts
"survived" and "no tests" (no fast test even runs the mutated function). The score is
killed / (killed + survived); `timeouts_GROUP` says how many kills were timeouts (a limit set
too tight turns survivors into timeouts: read the score with it). Run by `make mutation`
after `mutmut run`; it lives outside `benchmarks/*.py` because it needs mutmut's results,
which `make bench` and the test suite never produce.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import write_result  # noqa: E402

TIMEOUTS = {24, 36, -24, 152, 255}  # mutmut: wall-clock or CPU-time limit (SIGXCPU)
KILLED = {1, 3} | TIMEOUTS  # and: test failure, pytest error
SURVIVED = {0, 5, 33}  # mutmut: tests passed, or no test covers the function


def targets(path: Path = HERE / "targets.txt") -> list[tuple[str, str]]:
    """(group, mutant-name pattern) of every target line."""
    lines = path.read_text().splitlines()
    return [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]


def outcomes(mutants: Path) -> dict[str, int | None]:
    """mutant name -> mutmut exit code (None: not run), over every mutated file."""
    codes: dict[str, int | None] = {}
    for meta in sorted(mutants.rglob("*.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def groups_of(name: str, patterns: list[tuple[str, str]]) -> list[str]:
    """The figure groups a mutant counts in: its target group, and its privacy module."""
    group = next((g for g, p in patterns if fnmatch.fnmatchcase(name, p)), None)
    if group is None:
        return []
    if group == "privacy":
        return [group, f"privacy_{name.split('.')[2]}", "total"]
    return [group, "total"]


def figures(codes: dict[str, int | None], patterns: list[tuple[str, str]]) -> dict[str, float]:
    killed, survived, timeouts, other = Counter(), Counter(), Counter(), Counter()
    for name, code in codes.items():
        for group in groups_of(name, patterns):
            tally = killed if code in KILLED else survived if code in SURVIVED else other
            tally[group] += 1
            timeouts[group] += code in TIMEOUTS
    out: dict[str, float] = {}
    for group in sorted(killed.keys() | survived.keys() | other.keys()):
        k, s = killed[group], survived[group]
        out |= {f"killed_{group}": k, f"survived_{group}": s, f"timeouts_{group}": timeouts[group]}
        if k + s:
            out[f"score_{group}"] = k / (k + s)
        if other[group]:
            out[f"unresolved_{group}"] = other[group]  # not run, suspicious, crashed
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's work folder")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default results/)")
    args = p.parse_args()
    patterns = targets()
    codes = outcomes(args.mutants)
    survivors = sorted(n for n, c in codes.items() if c in SURVIVED and groups_of(n, patterns))
    print("\n".join(["surviving mutants (`mutmut show NAME`):", *survivors]))
    write_result("mutation", figures(codes, patterns), args.out)


if __name__ == "__main__":
    main()
