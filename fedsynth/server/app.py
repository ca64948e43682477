"""The Flower ServerApp: one typed config, a validated GAN-aware strategy, a checkpoint per
round, metrics per site per round, and the final report.

`flwr run .` uses the module-level `app` (config from `[tool.flwr.app.config]` and
`--run-config`, every missing key at its FedsynthConfig default); `fedsynth simulate` builds
its own with `make_server_app(cfg, eval_sites)` because `run_simulation` passes no run config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData
from fedsynth.evaluation.evaluate import evaluate_translation, save_sample_grid
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint
from fedsynth.models.warm_start import initial_model
from fedsynth.server.report import write_report
from fedsynth.server.run_dir import RunDirectory
from fedsynth.strategies import ValidatedAggregation, build_strategy

log = logging.getLogger(__name__)
console = Console()


def strategy_for(cfg: FedsynthConfig) -> ValidatedAggregation:
    """The configured strategy with the federation's node minimums and validation."""
    fed = cfg.federation
    knobs: dict[str, Any] = dict(
        fraction_train=fed.fraction_train,
        fraction_evaluate=fed.fraction_evaluate,
        min_train_nodes=fed.min_nodes,
        min_evaluate_nodes=fed.min_nodes,
        min_available_nodes=fed.min_nodes,
        norm_factor=fed.norm_factor,
    )
    extra = {
        "fedprox": {"proximal_mu": fed.proximal_mu},
        "fedadam": {"eta": fed.server_lr},
        "trimmed-mean": {"beta": fed.trim_beta},
    }
    return build_strategy(fed.strategy, **knobs, **extra.get(fed.strategy, {}))


def _start_point(cfg: FedsynthConfig) -> tuple[RunDirectory, SynthesisModel, int]:
    """A fresh run, or the last complete round of `federation.resume-from`."""
    fed = cfg.federation
    if fed.resume_from is None:
        run = RunDirectory(fed.run_dir)
        run.create(cfg)
        model = initial_model(cfg.model, cfg.train.seed, cfg.train.init_checkpoint)
        return run, model, 0
    run = RunDirectory(fed.resume_from)
    saved = run.config()
    if saved.model != cfg.model:
        raise CheckpointError(
            f"{run.path}: its model config differs from this run's; cannot resume"
        )
    last = run.last_round()
    if last == 0:
        raise CheckpointError(f"{run.path}: no complete checkpoint to resume from")
    run.truncate_metrics(last)
    run.set_status("running")
    console.print(f"[bold]resuming[/] {run.path} after round {last}")
    return run, load_checkpoint(run.checkpoint_path(last)).model, last


def server_evaluation(
    model: SynthesisModel, sites: Sequence[SiteData], cfg: FedsynthConfig
) -> dict[str, float]:
    """Global generators on every site's paired held-out subjects, pooled per subject."""
    metrics = SynthesisMetrics()
    pair = {cfg.model.source, cfg.model.target}
    for site in (s for s in sites if pair <= set(s.test)):  # sites holding both contrasts
        evaluate_translation(model, site.test, cfg.model.source, cfg.model.target, metrics)
    return metrics.aggregate()


def site_rows(
    replies: Mapping[str, Mapping[int, Mapping[str, Any]]],
    names: dict[int, str],
    nodes: dict[int, str],
) -> dict[str, Any]:
    """Per site: status, ε and evaluation metrics of one round, keyed by site name.

    `replies[phase][node]` holds `status`, `reason` and `metrics` of one reply. Sites name
    themselves by a numeric `site-id` in their metrics; `nodes` remembers which node was which
    site, so an error reply (no metrics) is still put under its site's name.
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
            row |= {f"{phase}/{k}": v for k, v in reply["metrics"].items() if k != "site-id"}
    return rows


class RoundRecorder:
    """What a finished round leaves in the run directory, whichever aggregation produced it:
    the checkpoint (full model with the aggregated shared tensors), the sample grid, the
    metrics line, the console line. Rounds are numbered across resumes (`done` + round)."""

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
        self.started = time.perf_counter()

    def server_metrics(self, shared: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Load the aggregate into the server's model; evaluate it where the server has data."""
        self.model.load_state_dict(self.model.state_with(shared), strict=True)
        if self.eval_sites and self.cfg.federation.server_eval:
            return server_evaluation(self.model, self.eval_sites, self.cfg)
        return {}

    def record(
        self, server_round: int, shared: Mapping[str, np.ndarray], sites: dict[str, Any]
    ) -> dict[str, float]:
        global_round = self.done + server_round
        server = self.server_metrics(shared)
        self.run.save_round(global_round, self.model, self.cfg, dict(shared), {"server": server})
        if self.eval_sites:
            m = self.cfg.model
            save_sample_grid(
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
        }
        self.run.append_metrics(row)
        _print_round(row, self.cfg.federation.num_rounds)
        return server


def run_federation(
    grid: Grid,
    cfg: FedsynthConfig,
    eval_sites: Sequence[SiteData] = (),
    site_names: dict[int, str] | None = None,
) -> RunDirectory:
    """Run the configured rounds on `grid`; returns the run directory.

    With `federation.secure-aggregation` the rounds go through SecAgg+ (fedsynth.server.secure)
    and everything else — start point, checkpoints, metrics, report — is shared.
    """
    run, model, done = _start_point(cfg)
    fed = cfg.federation
    shared_keys = model.shared_keys(fed.shared_groups, fed.keep_norm_local)
    state = model.state_dict()
    initial = {k: state[k].detach().cpu().numpy() for k in shared_keys}
    flat = cfg.to_flat() | {"federation.run-dir": str(run.path), "federation.resume-from": ""}
    recorder = RoundRecorder(run, model, cfg, eval_sites, done)
    names = site_names or {}
    remaining = fed.num_rounds - done
    try:
        if remaining > 0 and fed.secure_aggregation:
            from fedsynth.server.secure import run_secure_rounds

            run_secure_rounds(grid, cfg, flat, initial, remaining, recorder, names)
        elif remaining > 0:
            _run_rounds(grid, cfg, flat, initial, remaining, recorder, names)
        report = write_report(run, cfg)
    except Exception as err:  # `flwr run` exits 0 even when the ServerApp raised
        run.set_status("failed", f"{type(err).__name__}: {err}")
        raise
    run.set_status("complete")
    console.print(f"[green]run complete[/]: {run.path} (report: {report})")
    return run


def _run_rounds(
    grid: Grid,
    cfg: FedsynthConfig,
    flat: dict[str, Any],
    initial: dict[str, np.ndarray],
    num_rounds: int,
    recorder: RoundRecorder,
    names: dict[int, str],
) -> None:
    """The rounds on Flower's Message API with the configured validated strategy."""
    strategy = strategy_for(cfg)
    nodes: dict[int, str] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        shared = {k: a.numpy() for k, a in arrays.items()}
        if server_round == 0:
            server = recorder.server_metrics(shared)
            if server:
                psnr = server["psnr_brain"]
                console.print(f"round {recorder.done}: server PSNR brain {psnr:.2f} dB (initial)")
            return MetricRecord(server) if server else None
        replies = {
            phase: strategy.replies.get((server_round, phase), {})
            for phase in ("train", "evaluate")
        }
        server = recorder.record(server_round, shared, site_rows(replies, names, nodes))
        return MetricRecord(server) if server else None

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
        num_rounds=num_rounds,
        timeout=cfg.federation.round_timeout,
        train_config=ConfigRecord(flat),
        evaluate_config=ConfigRecord(flat),
        evaluate_fn=evaluate_fn,
    )


def _print_round(row: dict[str, Any], total: int) -> None:
    parts = [f"[bold]round {row['round']}/{total}[/] ({row['seconds']:.0f} s)"]
    if row["server"]:
        server = row["server"]
        parts.append(f"server PSNR {server['psnr_brain']:.2f} dB, SSIM {server['ssim_brain']:.3f}")
    for name, site in sorted(row["sites"].items()):
        eps = site.get("train/epsilon")
        status = site.get("train_status", "no reply")
        bit = f"{name}: {status.split(':')[0]}"
        if eps is not None:
            bit += f" ε={eps:.2f}"
        parts.append(bit)
    console.print(" · ".join(parts))


def make_server_app(
    cfg: FedsynthConfig | None = None,
    eval_sites: Sequence[SiteData] = (),
    site_names: dict[int, str] | None = None,
) -> ServerApp:
    """A ServerApp for `cfg` (None: read the Flower run config)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = FedsynthConfig.from_flat(dict(context.run_config)) if cfg is None else cfg
        run_federation(grid, run_cfg, eval_sites, site_names)

    return server_app


app = make_server_app()
