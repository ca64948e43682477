"""Memory of this process and every process below it (the SuperLink, Flower's simulation
process, Ray's GCS, raylet and workers), from /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fedsynth.deploy.processes import descendants


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) if it is gone."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except (OSError, ValueError):
        return 0, 0


def tree_memory() -> tuple[float, float, int]:
    """(Σ RSS MB, Σ PSS MB, processes) of this process and all its descendants."""
    pids = [os.getpid(), *descendants(os.getpid())]
    mem = [_memory_kb(p) for p in pids]
    return sum(m[0] for m in mem) / 1024, sum(m[1] for m in mem) / 1024, len(pids)


class MemorySampler(threading.Thread):
    """Peak Σ RSS / Σ PSS / process count of the process tree, sampled every `interval` s."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_rss = self.peak_pss = 0.0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, pss, n = tree_memory()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, n)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
