"""What a site keeps between calls of the engine: optimizer states, step, RNG, accountant.

Weights are not here: they live in the model (and, for shared groups, come from the server).
Saved as a directory: `state.pt` (torch tensors, loaded with weights_only=True) and
`accountant.json` (the DP history, human-readable), each written atomically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedsynth.atomic import atomic_write_bytes
from fedsynth.privacy.accountant import PrivacyAccountant

STATE_FILE = "state.pt"
ACCOUNTANT_FILE = "accountant.json"


@dataclass
class LocalState:
    """A site's resumable training state.

    step: global step counter of the run (drives the learning-rate schedule).
    optimizers: player -> torch optimizer state_dict.
    rng_state: state of the torch.Generator behind sampling, target labels and DP noise.
    accountant: the DP history, or None for a site that trains without DP.
    stop_reason: why the last call stopped early (privacy budget), else None.
    """

    step: int
    rng_state: torch.Tensor
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    accountant: PrivacyAccountant | None = None
    stop_reason: str | None = None

    @classmethod
    def fresh(cls, seed: int, accountant: PrivacyAccountant | None) -> LocalState:
        """The state before the first step of a run."""
        return cls(
            step=0, rng_state=torch.Generator().manual_seed(seed).get_state(), accountant=accountant
        )

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        buffer = io.BytesIO()
        torch.save(
            {
                "step": self.step,
                "rng_state": self.rng_state,
                "optimizers": self.optimizers,
                "stop_reason": self.stop_reason,
            },
            buffer,
        )
        atomic_write_bytes(directory / STATE_FILE, buffer.getvalue())
        if self.accountant is not None:
            self.accountant.save(directory / ACCOUNTANT_FILE)
        else:
            (directory / ACCOUNTANT_FILE).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path) -> LocalState:
        directory = Path(directory)
        path = directory / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no training state at {path}")
        saved = torch.load(path, weights_only=True)
        accountant_path = directory / ACCOUNTANT_FILE
        accountant = PrivacyAccountant.load(accountant_path) if accountant_path.is_file() else None
        return cls(
            step=int(saved["step"]),
            rng_state=saved["rng_state"],
            optimizers=saved["optimizers"],
            accountant=accountant,
            stop_reason=saved["stop_reason"],
        )
