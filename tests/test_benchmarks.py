"""Every benchmark runs in --quick mode and writes the JSON format of docs/architecture.md §8.

The quick runs only prove that each script works end to end, not its timings, so they run
two at a time (longest first, one thread each): about half the suite's wall time otherwise.
Each run has its own Flower SuperLink on free ports and its own Ray instance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")
# Measured --quick wall times (s, idle 2-core machine) order the queue: longest first.
LONGEST_FIRST = (
    "foundation", "pairs", "private_finetune", "privacy", "federation", "unified", "quality"
)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """script stem -> (exit code, stderr tail, JSON path) of every `--quick` run."""
    out = tmp_path_factory.mktemp("bench")
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    rank = {stem: i for i, stem in enumerate(LONGEST_FIRST)}
    order = sorted(SCRIPTS, key=lambda p: rank.get(p.stem, len(rank)))

    def run(script: Path) -> tuple[str, tuple[int, str, Path]]:
        path = out / f"{script.stem}.json"
        done = subprocess.run(
            [sys.executable, str(script), "--quick", "--out", str(path)],
            cwd=BENCH,
            timeout=1500,
            capture_output=True,
            text=True,
            env=env,
        )
        return script.stem, (done.returncode, done.stderr[-4000:], path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, order))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_quick(script: Path, quick_runs: dict[str, tuple[int, str, Path]]) -> None:
    code, stderr, out = quick_runs[script.stem]
    assert code == 0, f"{script.name} --quick failed:\n{stderr}"
    doc = json.loads(out.read_text())
    assert {"machine", "command", "date", "figures"} <= set(doc)
    assert doc["machine"]["cores"] >= 1
    # what a reader types from the repository root: no temporary --out path recorded
    assert doc["command"] == f"python benchmarks/{script.name} --quick"
    assert doc["figures"] and all(isinstance(v, (int, float)) for v in doc["figures"].values())
