"""Privacy accounting for the two players of a site, on top of Opacus's accountants.

Each player (generators, discriminators) keeps its own Opacus accountant, made by name from
Opacus's registry (`opacus.accountants.create_accountant`), whose history holds
(noise_multiplier, sample_rate, num_steps) entries. Every step makes two releases - one per
player, each on its own Poisson batch - and the site's epsilon is that of the composition of
ALL releases of both players: one Opacus accountant over the concatenated histories (RDP sums
the Renyi divergences; PRV convolves the privacy-loss distributions), asked for
`get_epsilon(delta)`. Counting the two releases as one step would under-count epsilon.

State is JSON (Python's float repr round-trips exactly, so a reloaded accountant reports
the same epsilon as one that never stopped), written atomically. Opacus is imported on first
use: importing it costs seconds in every fresh process (one per Flower message in a
deployment), and evaluation needs none.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedsynth.atomic import atomic_write_bytes
from fedsynth.models.base import PLAYERS
from fedsynth.privacy.config import ACCOUNTANTS, UNITS

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

_FORMAT = 1

Mechanism = tuple[float, float]
"""(noise multiplier σ, sample rate q) of one Poisson-subsampled Gaussian step of one player."""

Entry = tuple[float, float, int]
"""(σ, q, number of steps): one entry of an Opacus accountant's history."""


def _opacus_accountant(mechanism: str, history: Sequence[Entry] = ()) -> IAccountant:
    """A new Opacus accountant from Opacus's registry, holding `history` (loaded through its
    own `load_state_dict`, which also checks that the registry's class is `mechanism`'s)."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(mechanism=mechanism)
    accountant.load_state_dict({"history": [tuple(e) for e in history], "mechanism": mechanism})
    return accountant


@functools.lru_cache(maxsize=256)
def _epsilon(mechanism: str, history: tuple[Entry, ...], delta: float) -> float:
    """Opacus's `get_epsilon(delta)` of one accountant holding `history`. Cached by (mechanism,
    history, delta): each RDP entry costs ~50 ms and each PRV query ~0.1-1 s, and a round asks
    for the same history twice (the budget plan's look-ahead, then the epsilon reported after
    the steps it allowed)."""
    return float(_opacus_accountant(mechanism, history).get_epsilon(delta=delta))


def _extended(history: list[Entry], mechanism: Mechanism, steps: int) -> list[Entry]:
    """`history` after `steps` more steps at `mechanism`, merged the way Opacus's `step()`
    merges a repeat of the last (σ, q): the look-ahead is then the very history that stepping
    leaves, and reports the same epsilon."""
    sigma, q = mechanism
    if history and history[-1][:2] == (sigma, q):
        return [*history[:-1], (*history[-1][:2], history[-1][2] + steps)]
    return [*history, (sigma, q, steps)]


class PrivacyAccountant:
    """Per-player DP-SGD histories of one site, with the epsilon of their composition.

    Args:
        mechanism: the Opacus accountant that converts the histories to epsilon, by its
            registry name: "rdp" or "prv" (`fedsynth.privacy.config.ACCOUNTANTS`).
        unit: the privacy unit the releases protect ("slice" or "subject"), reported with
            epsilon.

    Raises:
        ValueError: `mechanism` or `unit` is not a known name.
    """

    def __init__(self, mechanism: str = "rdp", unit: str = "subject") -> None:
        if mechanism not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {mechanism!r}; expected one of {ACCOUNTANTS}")
        if unit not in UNITS:
            raise ValueError(f"unknown privacy unit {unit!r}; expected one of {UNITS}")
        self.mechanism = mechanism
        self.unit = unit
        self._players = {player: _opacus_accountant(mechanism) for player in PLAYERS}

    def step(self, player: str, noise_multiplier: float, sample_rate: float) -> None:
        """Record one release of `player` (call it for empty Poisson batches too).

        Args:
            player: "generators" or "discriminators".
            noise_multiplier: σ of the release.
            sample_rate: Poisson rate q of the batch it was computed on.

        Raises:
            ValueError: unknown `player`.
        """
        self._player(player).step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    def steps(self, player: str) -> int:
        """Returns: the number of releases recorded for `player`."""
        return sum(n for _, _, n in self.history(player))

    def history(self, player: str) -> list[Entry]:
        """Returns: `player`'s Opacus history, (σ, q, steps) entries in order."""
        return [tuple(entry) for entry in self._player(player).state_dict()["history"]]

    def epsilon(
        self, delta: float, pending: Mapping[str, Mechanism] | None = None, steps: int = 0
    ) -> float:
        """Epsilon of all releases so far of both players, plus a look-ahead (to check a
        budget before stepping).

        Args:
            delta: the δ of the (ε, δ) guarantee, in (0, 1).
            pending: per player, the (σ, q) of the releases it would make in the look-ahead.
            steps: look-ahead steps, each one release of every player in `pending`.

        Returns:
            Opacus's `get_epsilon(delta)` of one accountant over every release; 0.0 if none.

        Raises:
            ValueError: `delta` outside (0, 1), `steps` < 0 or an unknown player in `pending`.
        """
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if steps < 0:
            raise ValueError(f"look-ahead steps must be >= 0, got {steps!r}")
        histories = {player: self.history(player) for player in self._players}
        if steps:
            for player, mechanism in (pending or {}).items():
                if player not in histories:
                    raise ValueError(f"unknown player {player!r}; expected one of {PLAYERS}")
                histories[player] = _extended(histories[player], mechanism, steps)
        composed = tuple(entry for history in histories.values() for entry in history)
        if not composed:
            return 0.0
        return _epsilon(self.mechanism, composed, delta)

    def describe(self, delta: float, epsilon: float | None = None) -> str:
        """The guarantee in words, with its unit: what a report should print.

        Args:
            delta: the δ of the guarantee.
            epsilon: the ε at `delta` if already computed (else computed here).

        Returns:
            e.g. "(2.345, 1e-05)-DP at subject level (RDP accountant; ...)".
        """
        epsilon = self.epsilon(delta) if epsilon is None else epsilon
        return (
            f"({epsilon:.3f}, {delta:g})-DP at {self.unit} level "
            f"({self.mechanism.upper()} accountant; generators {self.steps('generators')}, "
            f"discriminators {self.steps('discriminators')} releases)"
        )

    def state_dict(self) -> dict:
        """Returns: the JSON-ready state: format, mechanism, unit and each player's history."""
        return {
            "format": _FORMAT,
            "mechanism": self.mechanism,
            "unit": self.unit,
            "players": {p: [list(e) for e in self.history(p)] for p in self._players},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> PrivacyAccountant:
        """The accountant whose `state_dict()` is `state`.

        Args:
            state: a `state_dict()`, e.g. read back from JSON.

        Returns:
            A new accountant holding the saved histories.

        Raises:
            ValueError: an unsupported format, or unknown mechanism, unit or player.
        """
        if state.get("format") != _FORMAT:
            raise ValueError(f"unsupported accountant state format {state.get('format')!r}")
        accountant = cls(state["mechanism"], state["unit"])
        for player, history in state["players"].items():
            accountant._player(player).load_state_dict(
                {
                    "history": [(float(sigma), float(q), int(n)) for sigma, q, n in history],
                    "mechanism": accountant.mechanism,
                }
            )
        return accountant

    def save(self, path: Path) -> None:
        """Atomically write the state as JSON.

        Args:
            path: the file to (over)write.
        """
        atomic_write_bytes(Path(path), json.dumps(self.state_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> PrivacyAccountant:
        """Read an accountant written by `save`.

        Args:
            path: the JSON file.

        Returns:
            The saved accountant.

        Raises:
            ValueError: the file cannot be read or parsed, or holds an unsupported format.
        """
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read accountant state {path}: {err}") from err
        return cls.from_state_dict(state)

    def _player(self, player: str) -> IAccountant:
        if player not in self._players:
            raise ValueError(f"unknown player {player!r}; expected one of {PLAYERS}")
        return self._players[player]
