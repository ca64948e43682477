"""What the server keeps of each finished round, whichever aggregation produced it (Flower's
Message-API strategies in `fedsynth.server.app`, SecAgg+ in `fedsynth.server.secure`): the
per-site rows, the checkpoint, the sample grid, the metrics line and the round's log line.

Flower-free, so that both aggregation paths (and `fedsynth simulate`, which follows a run from
its metrics file) share it without importing each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData
from fedsynth.evaluation.evaluate import evaluate_translation, save_sample_grid
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.evaluation.suite import served_directions
from fedsynth.models import SynthesisModel
from fedsynth.reply_metrics import RECEIVED
from fedsynth.server.run_dir import RunDirectory
from fedsynth.server.tensorboard import NOTICE, RoundBoard

log = logging.getLogger(__name__)


VALIDATION = "validation/"
"""Prefix of the server's scores on the sites' validation subjects (what picks a round)."""


def server_evaluation(
    model: SynthesisModel,
    sites: Sequence[SiteData],
    cfg: FedsynthConfig,
    directions: dict[tuple[str, str, str], dict[str, float]] | None = None,
) -> dict[str, float]:
    """Global generators on every site's paired held-out test subjects, pooled per subject;
    and, where sites have validation subjects, the same on those (keys `validation/…`).

    A CycleGAN is scored on its configured direction. A unified model is scored on every
    direction some site can score (both contrasts held out there): its headline keys are the
    mean over those directions — so the round chosen on validation is the best any-to-any
    model, not the best T1 → T2 one — and `psnr_brain_SRC_TGT` keeps each direction.
    `directions`, when given, receives every direction's full metrics by (part, source,
    target), part "test" or "validation" (the live view's per-direction curves)."""
    out = {}
    for part, prefix in (("test", ""), ("validation", VALIDATION)):
        held = [getattr(s, part) for s in sites]
        summaries = {}
        for source, target in scored_directions(model, cfg, held):
            metrics = SynthesisMetrics()
            for sets in held:  # sites holding both contrasts
                if {source, target} <= set(sets):
                    evaluate_translation(model, sets, source, target, metrics)
            summaries[(source, target)] = metrics.aggregate()
            if directions is not None:
                directions[(part, source, target)] = summaries[(source, target)]
        if not summaries:
            continue
        keys = next(iter(summaries.values()))
        out |= {prefix + k: float(np.mean([s[k] for s in summaries.values()])) for k in keys}
        if model.needs_every_modality:
            continue
        out |= {
            f"{prefix}psnr_brain_{source}_{target}": s["psnr_brain"]
            for (source, target), s in summaries.items()
        }
    return out


def scored_directions(
    model: SynthesisModel, cfg: FedsynthConfig, held: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """The directions the server scores: the configured one, or (a model that trains on
    whatever contrasts a site has: the unified one) every direction it serves among the
    contrasts held out together at some site."""
    if model.needs_every_modality:
        pairs = [(cfg.model.source, cfg.model.target)]
    else:
        pairs = served_directions(model, model.config.modalities)
    return [(s, t) for s, t in pairs if any({s, t} <= set(sets) for sets in held)]


def site_rows(
    replies: Mapping[str, Mapping[int, Mapping[str, Any]]],
    names: dict[int, str],
    nodes: dict[int, str],
) -> dict[str, Any]:
    """Per site: status, ε and evaluation metrics of one round, keyed by site name.

    `replies[phase][node]` holds `status`, `reason` and `metrics` of one reply. Sites name
    themselves by a numeric `site-id` in their metrics; `nodes` remembers which node was which
    site, so an error reply (no metrics) is still put under its site's name. A train reply's
    scores of the model it received (`fedsynth.reply_metrics`) go under `received/…`: they
    score the previous round's global model, not this round's (`evaluate/…`).
    """
    rows: dict[str, Any] = {}
    for phase in ("train", "evaluate"):
        for node, reply in replies.get(phase, {}).items():
            sid = reply["metrics"].get("site-id")
            if sid is not None:
                nodes[node] = names.get(int(sid), f"site-{int(sid)}")
            row = rows.setdefault(nodes.get(node, f"node-{node}"), {"node": node})
            row[f"{phase}_status"] = reply["status"] + (
                f": {reply['reason']}" if reply["reason"] else ""
            )
            row |= {_column(phase, k): v for k, v in reply["metrics"].items() if k != "site-id"}
    return rows


def _column(phase: str, key: str) -> str:
    if phase == "train" and key.startswith(RECEIVED):
        return "received/" + key.removeprefix(RECEIVED)
    return f"{phase}/{key}"


def round_line(row: Mapping[str, Any], total: int) -> str:
    """One line per round: time, the server's evaluation, each site's status, ε and (with
    evaluate-in-train) its PSNR of the model it received: the previous round's."""
    parts = [f"round {row['round']}/{total} ({row['seconds']:.0f} s)"]
    server = row["server"]
    if server:
        parts.append(f"server PSNR {server['psnr_brain']:.2f} dB, SSIM {server['ssim_brain']:.3f}")
    for name, site in sorted(row["sites"].items()):
        eps = site.get("train/epsilon")
        bit = f"{name}: {site.get('train_status', 'no reply').split(':')[0]}"
        if eps is not None:
            bit += f" ε={eps:.2f}"
        if "received/psnr_brain" in site:
            psnr = site["received/psnr_brain"]
            bit += f" PSNR of round {row['received_round']}'s model {psnr:.2f}"
        parts.append(bit)
    return " · ".join(parts)


class RoundRecorder:
    """What a finished round leaves in the run directory: the checkpoint (full model with the
    aggregated shared tensors), the sample grid, the metrics line (with its `timings`), the log
    line. Rounds are numbered across resumes (`done` + round)."""

    def __init__(
        self,
        run: RunDirectory,
        model: SynthesisModel,
        cfg: FedsynthConfig,
        eval_sites: Sequence[SiteData],
        done: int,
    ) -> None:
        self.run, self.model, self.cfg = run, model, cfg
        self.eval_sites, self.done = eval_sites, done
        self.digest = cfg.digest()
        self.started = time.perf_counter()
        p = cfg.privacy
        privacy = f"DP-SGD, δ={p.delta:g}, unit={p.unit}" if p.enabled else "DP off"
        self.board = RoundBoard(run.path, done + 1, f"{NOTICE}. Privacy: {privacy}.")
        self._directions: dict[tuple[str, str, str], dict[str, float]] = {}

    def server_metrics(self, shared: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Load the aggregate into the server's model; evaluate it where the server has data."""
        self.model.load_state_dict(self.model.state_with(shared), strict=True)
        self._directions = {}
        if self.eval_sites and self.cfg.federation.server_eval:
            return server_evaluation(self.model, self.eval_sites, self.cfg, self._directions)
        return {}

    def record(
        self,
        server_round: int,
        shared: Mapping[str, np.ndarray],
        sites: dict[str, Any],
        timings: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """Write the round; `timings` (wall-clock times of the round's phases, see
        `fedsynth.strategies.ValidatedAggregation.phase_times`) go into its metrics line."""
        global_round = self.done + server_round
        evaluated = time.perf_counter()
        server = self.server_metrics(shared)
        evaluated = time.perf_counter() - evaluated
        self.run.save_round(
            global_round,
            self.model,
            self.cfg.data.preprocess,
            self.digest,
            dict(shared),
            {"server": server},
        )
        sample = None
        if self.eval_sites:
            m = self.cfg.model
            sample = save_sample_grid(
                self.model,
                self.eval_sites[0].test,
                m.source,
                m.target,
                self.run.samples / f"round-{global_round:04d}.png",
                title=f"round {global_round} — {self.eval_sites[0].site}",
            )
        row = {
            "round": global_round,
            "seconds": time.perf_counter() - self.started,
            "server": server,
            "sites": sites,
            "timings": {**(timings or {}), "server_eval_seconds": evaluated, "end": time.time()},
        }
        if self.cfg.federation.evaluate_in_train:  # whose model the `received/…` scores are
            row["received_round"] = global_round - 1
        self.run.append_metrics(row)
        self.board.write(row, self._directions, sample)
        log.info("%s", round_line(row, self.cfg.federation.num_rounds))
        return server
