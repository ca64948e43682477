"""A federated run's directory: the resolved config, one checkpoint per round, metrics as
JSON lines, sample grids, the final report.

    config.json                      flat FedsynthConfig (what `resume` reads back)
    checkpoints/round-0003.safetensors   full model (shared tensors from the aggregate)
    checkpoints/round-0003.json          round, config digest, metrics (human-readable)
    metrics.jsonl                    one line per round
    samples/round-0003.png           real source / synthetic / real target
    report.md, figures/              the final report
    status.json                      "running", "complete" or "failed" (with the reason)

Checkpoints are written atomically, each round to its own file, so a failed or interrupted
round never touches a good checkpoint; resume picks the newest round whose files are complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.atomic import atomic_write_bytes
from fedsynth.config import FedsynthConfig
from fedsynth.data.config import PreprocessConfig
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

_ROUND = re.compile(r"^round-(\d{4,})\.safetensors$")
log = logging.getLogger(__name__)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.figures = self.path / "figures"
        self.metrics_file = self.path / "metrics.jsonl"

    def discard_previous(self) -> None:
        """Before a fresh (not resumed) run: remove an earlier run in this directory, whose
        checkpoints, metrics, status and site state would otherwise pass for this run's.
        A non-empty directory that is not a run directory is refused, never deleted."""
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if not (self.path / "config.json").is_file():
            raise FileExistsError(
                f"{self.path}: not empty and not a fedsynth run directory (no config.json); "
                "choose another federation.run-dir"
            )
        log.warning(
            "%s: replacing the previous run there (status %s)", self.path, self.status()["status"]
        )
        shutil.rmtree(self.path)

    def create(self, cfg: FedsynthConfig) -> None:
        for d in (self.path, self.checkpoints, self.samples, self.figures):
            d.mkdir(parents=True, exist_ok=True)
        _atomic_text(self.path / "config.json", json.dumps(cfg.to_flat(), indent=2))
        self.set_status("running")

    def set_status(self, status: str, reason: str = "") -> None:
        """What became of the run — Flower may exit 0 after a failed round (SecAgg+ halting),
        so the run directory says it plainly."""
        _atomic_text(self.path / "status.json", json.dumps({"status": status, "reason": reason}))

    def status(self) -> dict[str, str]:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.is_file() else {"status": "unknown"}

    def flat_config(self) -> dict[str, Any]:
        """The run's settings as saved (flat keys), for a command that adds its own on top."""
        path = self.path / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{self.path}: not a fedsynth run directory (no config.json)")
        return json.loads(path.read_text())

    def config(self) -> FedsynthConfig:
        return FedsynthConfig.from_flat(self.flat_config())

    def checkpoint_path(self, server_round: int) -> Path:
        return self.checkpoints / f"round-{server_round:04d}.safetensors"

    def save_round(
        self,
        server_round: int,
        model: SynthesisModel,
        preprocess: PreprocessConfig,
        config_digest: str,
        shared: dict[str, np.ndarray],
        metrics: dict[str, Any],
    ) -> Path:
        """The full model with the aggregated shared tensors, as this round's checkpoint.

        Args:
            server_round: the run's round (numbered across resumes).
            model: the server's model (its non-shared tensors are the initial ones).
            preprocess: the preprocessing its slices came from.
            config_digest: `FedsynthConfig.digest()` of the run.
            shared: the aggregated shared tensors.
            metrics: what the round's JSON holds besides round and digest.

        Returns:
            The checkpoint's path.
        """
        state = model.state_with(shared)
        meta = {
            "round": server_round,
            "config_digest": config_digest,
            "shared_keys": sorted(shared),
            "metrics": metrics,
        }
        path = save_checkpoint(self.checkpoint_path(server_round), model, preprocess, meta, state)
        _atomic_text(
            path.with_suffix(".json"),
            json.dumps({k: v for k, v in meta.items() if k != "shared_keys"}, indent=2),
        )
        return path

    def last_round(self) -> int:
        """The newest round with a checkpoint that loads (0 if none)."""
        rounds = sorted(
            (
                int(m.group(1))
                for p in self.checkpoints.glob("round-*.safetensors")
                if (m := _ROUND.match(p.name))
            ),
            reverse=True,
        )
        for r in rounds:
            try:
                load_checkpoint(self.checkpoint_path(r))
            except CheckpointError:
                continue
            return r
        return 0

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """Every complete line (one being written right now, without its newline, is not)."""
        if not self.metrics_file.is_file():
            return []
        text = self.metrics_file.read_text()
        lines = text.splitlines()[: text.count("\n")]
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, last_round: int) -> None:
        """Drop lines of rounds after `last_round` (a round that never checkpointed)."""
        rows = [r for r in self.metrics() if r["round"] <= last_round]
        _atomic_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))
