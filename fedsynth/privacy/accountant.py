"""Privacy accounting for the two players of a site, on top of Opacus's accountants.

Each player (generators, discriminators) keeps its own Opacus history of
(noise_multiplier, sample_rate, num_steps). Every step makes two releases - one per player,
each on its own Poisson batch - and the site's epsilon is that of the composition of ALL
releases of both players: one Opacus accountant over the concatenated histories (RDP sums
the Renyi divergences; PRV convolves the privacy-loss distributions). Counting the two
releases as one step would under-count epsilon.

State is JSON (Python's float repr round-trips exactly, so a reloaded accountant reports
the same epsilon as one that never stopped), written atomically.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedsynth.atomic import atomic_write_bytes
from fedsynth.models.base import PLAYERS
from fedsynth.privacy.config import ACCOUNTANTS, UNITS


def _opacus_accountants() -> dict[str, type]:
    """Opacus's accountant classes, imported on first use: importing opacus costs seconds in
    every fresh process (one per Flower message in a deployment), and evaluation needs none."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    return {"rdp": RDPAccountant, "prv": PRVAccountant}


_FORMAT = 1

Release = tuple[float, float]
"""(noise_multiplier, sample_rate) of one player's release per step."""


@functools.lru_cache(maxsize=128)
def _rdp_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian release at Opacus's default orders. Cached: it
    is the slow part (~50 ms), and budget checks evaluate epsilon many times."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = rdp_analysis.compute_rdp(
        q=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=1,
        orders=_opacus_accountants()["rdp"].DEFAULT_ALPHAS,
    )
    rdp.flags.writeable = False
    return rdp


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Exactly RDPAccountant.get_epsilon over `history` (whose compute_rdp is one step's RDP
    times the step count), with the per-step RDP cached."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = sum(_rdp_one_step(sigma, q) * steps for sigma, q, steps in history)
    eps, _ = rdp_analysis.get_privacy_spent(
        orders=_opacus_accountants()["rdp"].DEFAULT_ALPHAS, rdp=rdp, delta=delta
    )
    return float(eps)


class PrivacyAccountant:
    """Per-player DP-SGD histories of one site, with the epsilon of their composition.

    mechanism: "rdp" or "prv" (which Opacus accountant converts the histories to epsilon).
    unit: the privacy unit the releases protect ("slice" or "subject"), reported with epsilon.
    """

    def __init__(self, mechanism: str = "rdp", unit: str = "subject") -> None:
        if mechanism not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {mechanism!r}; expected one of {ACCOUNTANTS}")
        if unit not in UNITS:
            raise ValueError(f"unknown privacy unit {unit!r}; expected one of {UNITS}")
        self.mechanism = mechanism
        self.unit = unit
        self._players = {player: _opacus_accountants()[mechanism]() for player in PLAYERS}

    def step(self, player: str, noise_multiplier: float, sample_rate: float) -> None:
        """Record one release of `player` (call it for empty Poisson batches too)."""
        self._player(player).step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    def steps(self, player: str) -> int:
        """Releases recorded for `player`."""
        return sum(n for _, _, n in self._player(player).history)

    def history(self, player: str) -> list[tuple[float, float, int]]:
        return [tuple(entry) for entry in self._player(player).history]

    def epsilon(
        self, delta: float, pending: Mapping[str, Release] | None = None, steps: int = 0
    ) -> float:
        """Epsilon at `delta` of all releases so far of both players, plus `steps` more steps in
        which each player in `pending` makes one release (to check a budget before stepping)."""
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        history = [tuple(e) for acc in self._players.values() for e in acc.history]
        if steps:
            for player, (sigma, q) in (pending or {}).items():
                if player not in self._players:
                    raise ValueError(f"unknown player {player!r}; expected one of {PLAYERS}")
                history.append((sigma, q, steps))
        if not history:
            return 0.0
        if self.mechanism == "rdp":
            return _rdp_epsilon(history, delta)
        combined = _opacus_accountants()["prv"]()
        combined.history = history
        return float(combined.get_epsilon(delta=delta))

    def describe(self, delta: float, epsilon: float | None = None) -> str:
        """The guarantee in words, with its unit: what a report should print (`epsilon` if
        already computed at `delta`)."""
        epsilon = self.epsilon(delta) if epsilon is None else epsilon
        return (
            f"({epsilon:.3f}, {delta:g})-DP at {self.unit} level "
            f"({self.mechanism.upper()} accountant; generators {self.steps('generators')}, "
            f"discriminators {self.steps('discriminators')} releases)"
        )

    def state_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "mechanism": self.mechanism,
            "unit": self.unit,
            "players": {p: [list(e) for e in acc.history] for p, acc in self._players.items()},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> PrivacyAccountant:
        if state.get("format") != _FORMAT:
            raise ValueError(f"unsupported accountant state format {state.get('format')!r}")
        accountant = cls(state["mechanism"], state["unit"])
        for player, history in state["players"].items():
            accountant._player(player).history = [
                (float(sigma), float(q), int(n)) for sigma, q, n in history
            ]
        return accountant

    def save(self, path: Path) -> None:
        """Atomically write the state as JSON."""
        atomic_write_bytes(Path(path), json.dumps(self.state_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> PrivacyAccountant:
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read accountant state {path}: {err}") from err
        return cls.from_state_dict(state)

    def _player(self, player: str):  # an opacus IAccountant
        if player not in self._players:
            raise ValueError(f"unknown player {player!r}; expected one of {PLAYERS}")
        return self._players[player]
