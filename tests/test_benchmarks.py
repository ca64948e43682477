"""Every benchmark runs in --quick mode and writes the JSON format of docs/architecture.md §8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_quick(script: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{script.stem}.json"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        cwd=BENCH, timeout=1500, capture_output=True, text=True,
    )
    assert done.returncode == 0, f"{script.name} --quick failed:\n{done.stderr[-4000:]}"
    doc = json.loads(out.read_text())
    assert {"machine", "command", "date", "figures"} <= set(doc)
    assert doc["machine"]["cores"] >= 1
    # what a reader types from the repository root: no temporary --out path recorded
    assert doc["command"] == f"python benchmarks/{script.name} --quick"
    assert doc["figures"] and all(isinstance(v, (int, float)) for v in doc["figures"].values())
