"""What every benchmark shares: the machine description and the JSON result format
(docs/architecture.md §8): {"machine", "command", "date", "figures": {name: number}}."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


def reproducing_command(argv: list[str]) -> str:
    """The command that reproduces a result, as a reader would type it from the repository
    root: the script relative to the root, `--out` dropped (the result's own place is
    results/NAME.json), and any other path under the temp directory shown as `DIR`.

    Args:
        argv: `sys.argv` of the benchmark.

    Returns:
        e.g. "python benchmarks/private_finetune.py --work DIR".
    """
    script = Path(argv[0]).resolve()
    words = [str(script.relative_to(REPO)) if script.is_relative_to(REPO) else argv[0]]
    temp = Path(tempfile.gettempdir()).resolve()
    rest = iter(argv[1:])
    for word in rest:
        name, eq, value = word.partition("=")
        if name == "--out":
            if not eq:
                next(rest, None)
            continue
        if Path(word).is_absolute() and Path(word).resolve().is_relative_to(temp):
            word = "DIR"
        elif eq and Path(value).is_absolute() and Path(value).resolve().is_relative_to(temp):
            word = f"{name}=DIR"
        words.append(word)
    return " ".join(["python", *words])


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default results/NAME.json)")
    return p


def write_result(name: str, figures: dict[str, float], out: Path | None = None) -> Path:
    """Write benchmarks/results/NAME.json (or `out`) and print the figures."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": machine(),
        "command": reproducing_command(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "figures": {k: round(float(v), 4) for k, v in figures.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    for k, v in doc["figures"].items():
        print(f"{k:>48s}  {v}")
    return path


def training_benchmark_args(description: str) -> argparse.Namespace:
    """The arguments of a benchmark that trains models (--quick, --out, --threads), with torch
    set to that many threads and Flower's, fedsynth's and torch's chatter kept down."""
    import logging
    import warnings

    from fedsynth.cli import quiet_flower

    p = parser(description)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_flower()
    warnings.filterwarnings("ignore", category=UserWarning)
    return args


class Stopwatch:
    """`with watch("name"):` prints the block's start and wall time; `seconds` holds them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        print(f"--- {name}", flush=True)
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"--- {name}: {self.seconds[name]:.0f} s", flush=True)


def phantom_segmenters(root: Path, layout: str, train: dict, targets, steps: int):
    """One MONAI segmenter per target contrast on the phantom's real labelled training slices
    (`root`: the phantom's directory, `layout`: its cache's layout)."""
    import numpy as np

    from fedsynth.evaluation.labels import label_scheme
    from fedsynth.evaluation.segmentation import SegmenterConfig
    from fedsynth.evaluation.suite import train_segmenters

    targets = list(targets)
    values: set[int] = set()
    for target in targets:
        labels = train[target].labels
        assert labels is not None, "the phantom writes label maps"
        values |= set(np.unique(labels).tolist())
    scheme = label_scheme(root, layout, values)
    return train_segmenters(train, targets, scheme, SegmenterConfig(steps=steps))
