"""`fedsynth privacy check`: does the ε a run reports follow from what the sites recorded?

Independent of `fedsynth.privacy.accountant`: each site's `accountant.json` is read as plain
JSON and handed to a fresh Opacus accountant (made by Opacus's `create_accountant` and given
the history through its own `load_state_dict`) holding the
(σ, q, steps) entries of BOTH players — every step releases one generator and one
discriminator update, and ε is that of all releases composed. Checked per site:

1. the history's final ε equals the ε the site last reported (metrics.jsonl);
2. per round, the reported (σ, q, steps) add up to the history: the steps of all rounds sum to
   each player's release count, the σ and q of every round are those recorded for its steps,
   and the ε reported after each round equals Opacus's ε of the history up to that round.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opacus.accountants import create_accountant

from fedsynth.client.state_dir import SiteStateDir
from fedsynth.models.checkpoint import CheckpointError
from fedsynth.server.run_dir import RunDirectory

Entry = tuple[float, float, int]


@dataclass
class SiteCheck:
    """The outcome for one site: `problems` is empty when everything agrees."""

    site: str
    epsilon_reported: float
    epsilon_recomputed: float
    steps: dict[str, int]
    rounds: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def opacus_epsilon(histories: dict[str, list[Entry]], mechanism: str, delta: float) -> float:
    """ε at δ of every player's releases, by a fresh Opacus accountant."""
    history = [tuple(e) for h in histories.values() for e in h]
    if not history:
        return 0.0
    accountant = create_accountant(mechanism=mechanism)
    accountant.load_state_dict({"history": history, "mechanism": mechanism})
    return float(accountant.get_epsilon(delta=delta))


def _prefix(history: list[Entry], steps: int) -> list[Entry]:
    """The first `steps` releases of a (σ, q, count) history."""
    out, left = [], steps
    for sigma, q, n in history:
        if left <= 0:
            break
        out.append((sigma, q, min(n, left)))
        left -= n
    return out


def _releases(history: list[Entry], start: int, stop: int) -> set[tuple[float, float]]:
    """The distinct (σ, q) of releases start..stop-1."""
    out, pos = set(), 0
    for sigma, q, n in history:
        if pos < stop and pos + n > start:
            out.add((sigma, q))
        pos += n
    return out


def _close(a: float, b: float, rtol: float) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)


def check_site(
    site: str, state_file: Path, rows: list[dict[str, Any]], rtol: float = 1e-6
) -> SiteCheck:
    """Check one site's recorded history against its per-round reports."""
    try:
        saved = json.loads(Path(state_file).read_text())
        mechanism, players = saved["mechanism"], saved["players"]
        histories = {p: [(float(s), float(q), int(n)) for s, q, n in h] for p, h in players.items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{state_file}: not a readable accountant history ({err})") from err
    reports = [
        (r["round"], r["sites"][site]) for r in rows if "train/epsilon" in r["sites"].get(site, {})
    ]
    if not reports:
        raise CheckpointError(f"site {site!r}: no round reported an ε (was DP on?)")
    delta = float(reports[-1][1]["train/delta"])
    steps = {p: sum(n for _, _, n in h) for p, h in histories.items()}
    check = SiteCheck(
        site,
        float(reports[-1][1]["train/epsilon"]),
        opacus_epsilon(histories, mechanism, delta),
        steps,
        len(reports),
    )
    if not _close(check.epsilon_reported, check.epsilon_recomputed, rtol):
        check.problems.append(
            f"reported ε={check.epsilon_reported:.6g} but Opacus {mechanism.upper()} over the "
            f"recorded history gives {check.epsilon_recomputed:.6g}"
        )
    done = 0
    for server_round, values in reports:
        n = int(values["train/steps"])
        release = (float(values["train/noise_multiplier"]), float(values["train/sample_rate"]))
        for player, history in histories.items():
            recorded = _releases(history, done, done + n)
            if n and recorded != {release}:
                check.problems.append(
                    f"round {server_round}: reported (σ, q)={release} but {player} recorded "
                    f"{sorted(recorded)} for steps {done}..{done + n - 1}"
                )
        done += n
        eps = opacus_epsilon({p: _prefix(h, done) for p, h in histories.items()}, mechanism, delta)
        if not _close(float(values["train/epsilon"]), eps, rtol):
            check.problems.append(
                f"round {server_round}: reported ε={values['train/epsilon']:.6g}, Opacus over "
                f"the first {done} steps gives {eps:.6g}"
            )
    for player, n in steps.items():
        if n != done:
            check.problems.append(
                f"{player}: {n} releases recorded but the rounds report {done} steps in all"
            )
    return check


def check_run(
    run_dir: Path, state_dir: Path | None = None, sites: list[str] | None = None
) -> list[SiteCheck]:
    """Check every site that reported an ε (or `sites`) of a run that trained with DP.

    A node whose every reply was an error never named itself (`node-<id>` in metrics.jsonl)
    and reported no ε: it is not a site to check (its later replies, once named, are)."""
    run = RunDirectory(run_dir)
    cfg = run.config()
    if not cfg.privacy.enabled:
        raise ValueError(f"{run.path}: trained without DP (privacy.enabled=false); no ε to check")
    rows = run.metrics()
    if not rows:
        raise CheckpointError(f"{run.metrics_file}: no round recorded; nothing to check")
    names = sites or sorted(
        {s for r in rows for s, values in r["sites"].items() if "train/epsilon" in values}
    )
    root = state_dir or cfg.federation.state_dir
    checks = []
    for name in names:
        path = SiteStateDir.of_site(name, root, run.path).accountant_file
        if not path.is_file():
            raise CheckpointError(f"{path}: site {name!r} has no accountant history")
        checks.append(check_site(name, path, rows))
    return checks
