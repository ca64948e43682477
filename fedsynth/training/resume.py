"""A resume point for long public training runs (the foundation model trains for hours, across
sessions): the model's weights and the engine's `LocalState` in one file, written atomically
every few steps, so a killed job loses at most those steps and continues exactly where an
uninterrupted run would be (same batches, labels and learning rate).

For training without DP only: a resume point holds no accountant, and a private run's state
lives at its site (`fedsynth.client.state_dir`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from fedsynth.atomic import atomic_write_bytes
from fedsynth.models import SynthesisModel
from fedsynth.training.state import LocalState

log = logging.getLogger(__name__)

LOCATION_KEYS = ("data.root", "data.cache-dir")
"""Flat keys that say where data lives, not what it is: a run moved to another directory (or
another session's checkout) resumes all the same."""


def run_key(flat: Mapping[str, object]) -> str:
    """Digest of a run's flat config without its `LOCATION_KEYS`: what must agree to resume."""
    kept = {k: v for k, v in flat.items() if k not in LOCATION_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ResumePoint:
    """The file at `path` that run `key` saves to and resumes from.

    A file of another run is refused (ValueError naming both keys) rather than silently
    continued or overwritten: a changed step budget or recipe is another run.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key

    def load(self, model: SynthesisModel) -> LocalState | None:
        """Load the saved weights into `model` and return the saved state (None: no file)."""
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, weights_only=True)
        if saved.get("key") != self.key:
            raise ValueError(
                f"{self.path} is the resume point of run {saved.get('key')!r}, not of this "
                f"run {self.key!r} (the config differs); delete it or choose another --resume"
            )
        model.load_state_dict(saved["model"], strict=True)
        state = LocalState.from_bytes(saved["state"], accountant=None)
        log.info("resuming %s at step %d", self.path, state.step)
        return state

    def save(self, model: SynthesisModel, state: LocalState) -> None:
        """Replace the file with the current weights and state (atomically)."""
        if state.accountant is not None:
            raise ValueError(
                "a resume point is for training without DP; this state has an accountant"
            )
        buffer = io.BytesIO()
        torch.save(
            {"key": self.key, "model": model.state_dict(), "state": state.to_bytes()}, buffer
        )
        atomic_write_bytes(self.path, buffer.getvalue())
