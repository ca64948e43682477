"""What a server's train/evaluate instruction carries besides the weights: only what changes
per message. Everything else a site needs it reads from its own run config, parsed once per
process (docs/architecture.md §5).

- `server-round`: Flower's round counter, which restarts at 1 when a run resumes;
- `round-offset`: the rounds completed before this `flwr run` (0 for a fresh run), so
  `server-round + round-offset` is the run's absolute round — what makes a round asked twice
  recognisable (fedsynth.client.rounds);
- `proximal-mu`: FedProx's μ, which Flower's FedProx adds to its train instructions.

Flower-free: the server and the client both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVER_ROUND = "server-round"
ROUND_OFFSET = "round-offset"
PROXIMAL_MU = "proximal-mu"
KEYS = (SERVER_ROUND, ROUND_OFFSET, PROXIMAL_MU)


def round_config(round_offset: int) -> dict[str, int]:
    """The server's own part of every instruction of a run (Flower adds the rest)."""
    return {ROUND_OFFSET: int(round_offset)}


def absolute_round(config: Mapping[str, Any]) -> int:
    """The run's round an instruction belongs to.

    Raises:
        ValueError: the instruction carries a key that is not a per-message value.
    """
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(
            f"instruction keys {unknown} are not per-message values ({', '.join(KEYS)}): a "
            "site reads its settings from its own run config"
        )
    return int(config.get(SERVER_ROUND, 0)) + int(config.get(ROUND_OFFSET, 0))


def proximal_mu(config: Mapping[str, Any]) -> float:
    """FedProx's μ as the strategy sent it (0: no proximal term)."""
    return float(config.get(PROXIMAL_MU, 0.0))
