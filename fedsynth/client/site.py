"""One hospital's side of the federation, without Flower: its data, its private state, one
round of training and one evaluation.

What never leaves the site lives in its state directory (`SiteStateDir`) and survives
restarts: the full local model, optimizers, step counter, RNG, the DP history, the rounds log
and the secret behind its DP noise. Only `shared_keys` tensors go into a reply.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsynth.client.rounds import already_trained, arrays_digest
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData
from fedsynth.reply_metrics import SCORES, received
from fedsynth.training import SHAREABLE_METRICS, LocalState, train_local
from fedsynth.training.engine import Proximal

log = logging.getLogger(__name__)
UNIT_CODES = {"slice": 0.0, "subject": 1.0}


class BudgetExhausted(RuntimeError):
    """The site has spent its (ε, δ) budget and will not train again."""


@dataclass(frozen=True)
class SiteIdentity:
    """Who this site is: its name, a numeric id for metrics, and where its state lives.

    The numeric id goes in replies (metrics are numbers only): the partition id in
    simulation, else a stable CRC32 of the site name.
    """

    name: str
    site_id: int
    state: SiteStateDir

    @classmethod
    def of(cls, name: str, state_dir: Path, site_id: int | None = None) -> SiteIdentity:
        sid = site_id if site_id is not None else zlib.crc32(name.encode()) & 0x7FFFFFFF
        return cls(name, sid, SiteStateDir(state_dir))


@functools.lru_cache(maxsize=4)
def _load_sites(data_cfg) -> tuple[SiteData, ...]:
    """Sites of a data config, read once per process (the cache is memory-mapped)."""
    return tuple(prepare_sites(data_cfg, progress=False)[0])


def site_data(cfg: FedsynthConfig, partition: int | None, data_dir: Path | None) -> SiteData:
    """This site's data: a partition of the shared root (simulation), or its own folder."""
    if data_dir is not None:
        data_cfg = dataclasses.replace(cfg.data, root=Path(data_dir), partition="by-site")
        sites = _load_sites(data_cfg)
        if len(sites) != 1:
            raise ValueError(f"{data_dir}: holds {len(sites)} sites; give each SuperNode one")
        return sites[0]
    sites = _load_sites(cfg.data)
    if partition is None or not 0 <= partition < len(sites):
        raise ValueError(
            f"partition-id {partition} is not one of the {len(sites)} sites of {cfg.data.root}"
        )
    return sites[partition]


class Site:
    """A site's model, private state and data for one message.

    `engine_seconds` is how long this message spent in the training engine (0 when it did
    not train): the site's own profiling figure (`SiteStateDir.append_timing`).
    """

    def __init__(self, cfg: FedsynthConfig, identity: SiteIdentity, data: SiteData) -> None:
        self.cfg, self.identity, self.data = cfg, identity, data
        self.engine_seconds = 0.0
        self.model = cfg.initial_model()
        identity.state.load_model(self.model)
        fed = cfg.federation
        self.shared_keys = self.model.shared_keys(fed.shared_groups, fed.keep_norm_local)
        self.train_cfg = cfg.federated_train

    @functools.cached_property
    def state(self) -> LocalState | None:
        """Optimizers, step and accountant: read only when training (loading the accountant
        imports opacus, seconds in a fresh process)."""
        return self.identity.state.load_state()

    def receive(self, arrays: dict[str, np.ndarray]) -> None:
        """Load the global shared tensors; refuse anything else."""
        if set(arrays) != set(self.shared_keys):
            extra, missing = (
                set(arrays) - set(self.shared_keys),
                set(self.shared_keys) - set(arrays),
            )
            raise ValueError(
                "global arrays do not match the shared keys "
                f"(extra {sorted(extra)[:3]}, missing {sorted(missing)[:3]})"
            )
        self.model.load_state_dict(self.model.state_with(arrays), strict=True)

    def shared_arrays(self) -> dict[str, np.ndarray]:
        """This site's shared tensors: the round's moving average where there is one."""
        state = self.model.state_dict() | ((self.state.ema if self.state else None) or {})
        return {k: state[k].detach().cpu().numpy() for k in self.shared_keys}

    def train_round(
        self, arrays: dict[str, np.ndarray], server_round: int, proximal_mu: float = 0.0
    ) -> dict[str, float]:
        """One round from the global `arrays`: trained once, replayed if asked again.

        Args:
            arrays: the global shared tensors the server sent.
            server_round: the run's absolute round (`fedsynth.instruction.absolute_round`);
                the same round of the same run asked again is answered from the site's log
                (fedsynth.client.rounds), not retrained.
            proximal_mu: FedProx's μ as the strategy sent it (0: no proximal term).

        Returns:
            The reply's metrics; afterwards `shared_arrays()` is this round's update. With
            `federation.evaluate-in-train` they include this site's scores of the received
            global model, before training on it (`fedsynth.reply_metrics.received`).
        """
        run = str(self.cfg.federation.run_path)
        done = already_trained(self.identity.state.rounds(), run, server_round)
        if done is not None:  # the model on disk is that round's result
            log.warning("site %s: round already trained, replaying its reply", self.identity.name)
            return done["metrics"]
        self.receive(arrays)
        scores = received(self.evaluate()) if self.cfg.federation.evaluate_in_train else {}
        metrics = self.train(self.cfg.federation.local_steps, proximal_mu) | scores
        self.identity.state.append_round(
            {
                "run": run,
                "round": server_round,
                "input": arrays_digest(arrays),
                "step": self.state.step,
                "metrics": metrics,
            },
        )
        return metrics

    def train(self, steps: int, proximal_mu: float = 0.0) -> dict[str, float]:
        """One round of local training from the received weights; state saved before replying."""
        if self.state is not None and self.state.stop_reason:
            raise BudgetExhausted(f"site {self.identity.name}: {self.state.stop_reason}")
        total = self.train_cfg.steps
        remaining = total - (self.state.step if self.state else 0)
        if remaining <= 0:
            raise BudgetExhausted(f"site {self.identity.name}: the run's {total} steps are done")
        proximal = None
        if proximal_mu > 0:
            state = self.model.state_dict()
            anchor = {k: state[k].detach().clone() for k in self.shared_keys}
            proximal = Proximal(proximal_mu, anchor)
        started = time.perf_counter()
        # Each round's weight average starts at the global model just received.
        start = dataclasses.replace(self.state, ema=None) if self.state else None
        metrics, state = train_local(
            self.model,
            self.data,
            self.train_cfg,
            self.cfg.privacy,
            start,
            min(steps, remaining),
            proximal,
            # Only DP draws from the secret: a non-private site has none to keep.
            secret_seed=self.identity.state.secret_seed() if self.cfg.privacy.enabled else None,
        )
        self.engine_seconds += time.perf_counter() - started
        self.save(state)
        out = {k: float(metrics[k]) for k in SHAREABLE_METRICS if k in metrics}
        out |= {
            "num-examples": float(self.data.num_train_slices()),
            "site-id": float(self.identity.site_id),
            "privacy-unit": UNIT_CODES[self.cfg.privacy.unit] if self.cfg.privacy.enabled else -1.0,
        }
        if self.cfg.privacy.enabled:  # same keys at every site, budget or not
            budget = self.cfg.privacy.epsilon_budget
            out["epsilon-left"] = math.inf if budget is None else max(budget - out["epsilon"], 0.0)
        return out

    def save(self, state: LocalState) -> None:
        self.identity.state.save(self.model, self.cfg.data.preprocess, state)
        self.state = state

    def evaluate(self) -> dict[str, float]:
        """Global generators (+ this site's local layers) on the site's paired test slices."""
        from fedsynth.evaluation.evaluate import evaluate_translation  # monai: only here

        m = self.cfg.model
        if not {m.source, m.target} <= set(self.data.test):
            # A site without that pair of contrasts scores nothing: same keys (Flower needs
            # them at every site), no weight in any average.
            summary, count = dict.fromkeys(SCORES, math.nan), 0
        else:
            metrics = evaluate_translation(self.model, self.data.test, m.source, m.target)
            summary, count = metrics.aggregate(), len(self.data.test[m.source])
        return {
            "num-examples": float(count),
            "site-id": float(self.identity.site_id),
            **{k: summary[k] for k in SCORES},
        }
