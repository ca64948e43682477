"""A site's state directory: the one owner of every file a hospital keeps between rounds.

    model.safetensors   the full local model (discriminators when not shared, local norm
                        layers, the last generators)
    state.pt            optimizers, step counter, RNG state (torch, weights_only)
    accountant.json     the DP history (plain JSON, what `fedsynth privacy check` reads)
    rounds.jsonl        the rounds it trained (replays make rounds idempotent)
    timings.jsonl       its profiling log: when each message was handled, seconds in the
                        training engine (timing depends on DP's secret Poisson batches)
    noise-seed.secret   the secret seed of its DP sampling and noise
    cache/              the slice cache of its own dataset (deployment)

Nothing here leaves the site. The directory is owner-only (0700) and the secret and the RNG
state are owner-only files (0600): whoever reads them can regenerate the site's DP noise.
Modelled on `fedsynth.server.run_dir.RunDirectory`, the server's counterpart; Flower-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from fedsynth.atomic import atomic_write_bytes
from fedsynth.data.config import PreprocessConfig
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import save_checkpoint
from fedsynth.privacy.secret import draw_seed
from fedsynth.training.state import LocalState

SITES_FOLDER = "sites"
"""Simulated sites keep their state under `<run dir>/sites/<site>` unless told otherwise."""


class SiteStateDir:
    """Paths and atomic reads/writes of one site's private state."""

    MODEL = "model.safetensors"
    STATE = "state.pt"
    ACCOUNTANT = "accountant.json"
    ROUNDS = "rounds.jsonl"
    TIMINGS = "timings.jsonl"
    SECRET = "noise-seed.secret"
    CACHE = "cache"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of_site(cls, site: str, root: Path | None, run_dir: Path) -> SiteStateDir:
        """`root/site`, or `run_dir/sites/site` when no root is configured (simulation)."""
        return cls(Path(root if root is not None else Path(run_dir) / SITES_FOLDER) / site)

    @property
    def model_file(self) -> Path:
        return self.path / self.MODEL

    @property
    def accountant_file(self) -> Path:
        return self.path / self.ACCOUNTANT

    @property
    def rounds_file(self) -> Path:
        return self.path / self.ROUNDS

    @property
    def cache_dir(self) -> Path:
        return self.path / self.CACHE

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    # --- model and training state -------------------------------------------------------

    def load_model(self, model: SynthesisModel) -> bool:
        """Load the saved local model into `model`; False when there is none yet."""
        if not self.model_file.is_file():
            return False
        model.load_state_dict(load_file(str(self.model_file)), strict=True)
        return True

    def has_state(self) -> bool:
        return (self.path / self.STATE).is_file()

    def load_state(self) -> LocalState | None:
        """The saved training state (None before the first round)."""
        if not self.has_state():
            return None
        return LocalState.from_files(self.path / self.STATE, self.accountant_file)

    def save(self, model: SynthesisModel, preprocess: PreprocessConfig, state: LocalState) -> None:
        """Model, then training state and accountant, each written atomically."""
        self.create()
        save_checkpoint(self.model_file, model, preprocess)
        _write_private(self.path / self.STATE, state.to_bytes())
        if state.accountant is not None:
            state.accountant.save(self.accountant_file)
        else:
            self.accountant_file.unlink(missing_ok=True)

    # --- the secret behind the DP noise ---------------------------------------------------

    def secret_seed(self) -> int:
        """The site's secret seed, drawn from the OS's secure random source the first time
        and kept (0600) so a restarted site continues the same random streams."""
        path = self.path / self.SECRET
        if not path.is_file():
            self.create()
            _write_private(path, str(draw_seed()).encode())
        try:
            return int(path.read_text().strip())
        except ValueError as err:
            raise ValueError(f"{path}: not a seed written by fedsynth ({err})") from err

    # --- rounds and timings logs --------------------------------------------------------

    def rounds(self) -> list[dict[str, Any]]:
        return _read_lines(self.rounds_file)

    def append_round(self, row: Mapping[str, Any]) -> None:
        _append_line(self.rounds_file, row)

    def timings(self) -> list[dict[str, Any]]:
        """One line per handled message: phase, server round, process id, wall-clock start
        and end of the ClientApp call, seconds in the training engine — a benchmark's view
        of where a round's time goes (benchmarks/federation.py), kept at the site."""
        return _read_lines(self.path / self.TIMINGS)

    def append_timing(self, row: Mapping[str, Any]) -> None:
        self.create()
        _append_line(self.path / self.TIMINGS, row)


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


def _write_private(path: Path, data: bytes) -> None:
    """Atomically write an owner-only file (0600 from its first byte)."""
    atomic_write_bytes(path, data, mode=0o600)
