"""What a site keeps between calls of the engine: optimizer states, step, RNG, accountant.

Weights are not here: they live in the model (and, for shared groups, come from the server).
Serialised as two blobs: torch tensors (`to_bytes`, loaded with weights_only=True) and the
accountant's JSON history; where they are stored is the caller's business
(`fedsynth.client.state_dir.SiteStateDir` at a site).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedsynth.privacy.accountant import PrivacyAccountant


@dataclass
class LocalState:
    """A site's resumable training state.

    step: global step counter of the run (drives the learning-rate schedule).
    optimizers: player -> torch optimizer state_dict.
    rng_state: state of the torch.Generator behind sampling, target labels and DP noise.
    accountant: the DP history, or None for a site that trains without DP.
    stop_reason: why the last call stopped early (privacy budget), else None.
    ema: the moving average of the generators' trained weights (`train.ema-decay` > 0).
    """

    step: int
    rng_state: torch.Tensor
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    accountant: PrivacyAccountant | None = None
    stop_reason: str | None = None
    ema: dict[str, torch.Tensor] | None = None

    @classmethod
    def fresh(cls, seed: int, accountant: PrivacyAccountant | None) -> LocalState:
        """The state before the first step of a run, its random streams seeded by `seed`."""
        return cls(
            step=0, rng_state=torch.Generator().manual_seed(seed).get_state(), accountant=accountant
        )

    def to_bytes(self) -> bytes:
        """Everything but the accountant, as a torch file's bytes."""
        buffer = io.BytesIO()
        torch.save(
            {
                "step": self.step,
                "rng_state": self.rng_state,
                "optimizers": self.optimizers,
                "stop_reason": self.stop_reason,
                "ema": self.ema,
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, accountant: PrivacyAccountant | None) -> LocalState:
        saved = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        return cls(
            step=int(saved["step"]),
            rng_state=saved["rng_state"],
            optimizers=saved["optimizers"],
            accountant=accountant,
            stop_reason=saved["stop_reason"],
            ema=saved.get("ema"),
        )

    @classmethod
    def from_files(cls, state_file: Path, accountant_file: Path) -> LocalState:
        """A state saved as `to_bytes()` at `state_file` plus an optional accountant file."""
        if not Path(state_file).is_file():
            raise FileNotFoundError(f"no training state at {state_file}")
        accountant_file = Path(accountant_file)
        accountant = PrivacyAccountant.load(accountant_file) if accountant_file.is_file() else None
        return cls.from_bytes(Path(state_file).read_bytes(), accountant)
