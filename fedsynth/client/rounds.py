"""A site's log of the rounds it trained, which makes training a round idempotent.

When the server dies after a site trained a round but before that round's checkpoint was
written, the resumed run sends the same round again: the same global weights under the same
configuration. Training it again would spend privacy budget twice for one round and push the
site's step counter (and learning-rate schedule) past the run's end; instead the site answers
with the reply it already computed — re-sending a released update costs no privacy.

`rounds.jsonl` in the state directory holds one line per trained round: the digest of what
was asked (run + received tensors), the step counter after it, and the metrics
replied. The line is appended after the model, optimizer and accountant are saved, so a crash
before it makes the site train the round again (at worst counting ε once more, never less).

`timings.jsonl` beside it is the site's profiling log, one line per handled message: phase,
server round, process id, wall-clock start and end of the ClientApp call and the seconds spent
in the training engine. It never leaves the site — training time depends on DP's secret
Poisson batch sizes — and lets a benchmark split a round into site compute and Flower's
overhead without touching the code it measures (benchmarks/federation.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS_FILE = "rounds.jsonl"
TIMINGS_FILE = "timings.jsonl"


def instruction_digest(run: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a train instruction: the run it belongs to (its run directory, the same
    after a resume) and its tensors (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(run.encode())
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of tensors alone: lets a test match a site's input to a server checkpoint."""
    return instruction_digest("", arrays)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines log (a torn last line from a crash is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append_line(path: Path, row: Mapping[str, Any]) -> None:
    torn = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("a") as fh:
        fh.write(("\n" if torn else "") + json.dumps(dict(row)) + "\n")


def read_rounds(state_dir: Path) -> list[dict[str, Any]]:
    return _read_lines(Path(state_dir) / ROUNDS_FILE)


def append_round(state_dir: Path, row: Mapping[str, Any]) -> None:
    _append_line(Path(state_dir) / ROUNDS_FILE, row)


def read_timings(state_dir: Path) -> list[dict[str, Any]]:
    return _read_lines(Path(state_dir) / TIMINGS_FILE)


def append_timing(state_dir: Path, row: Mapping[str, Any]) -> None:
    _append_line(Path(state_dir) / TIMINGS_FILE, row)
