"""The Flower ServerApp: one typed config, a validated GAN-aware strategy, a checkpoint per
round, metrics per site per round, and the final report.

`flwr run .` uses the module-level `app` (config from `[tool.flwr.app.config]` and
`--run-config`, every missing key at its FedsynthConfig default); `fedsynth simulate` builds
its own with `make_server_app(cfg, eval_sites)` because `run_simulation` passes no run config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData
from fedsynth.evaluation.evaluate import evaluate_translation, save_sample_grid
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.models import SynthesisModel, build_model
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint
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
        return run, build_model(cfg.model, seed=cfg.train.seed), 0
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
    console.print(f"[bold]resuming[/] {run.path} after round {last}")
    return run, load_checkpoint(run.checkpoint_path(last)).model, last


def server_evaluation(
    model: SynthesisModel, sites: Sequence[SiteData], cfg: FedsynthConfig
) -> dict[str, float]:
    """Global generators on every site's paired held-out subjects, pooled per subject."""
    metrics = SynthesisMetrics()
    for site in sites:
        evaluate_translation(model, site.test, cfg.model.source, cfg.model.target, metrics)
    return metrics.aggregate()


def _load_shared(model: SynthesisModel, arrays: ArrayRecord) -> dict[str, np.ndarray]:
    shared = {k: a.numpy() for k, a in arrays.items()}
    state = model.state_dict()
    for key, value in shared.items():
        state[key].copy_(state[key].new_tensor(value).reshape(state[key].shape))
    return shared


def _site_rows(
    strategy: ValidatedAggregation, server_round: int, names: dict[int, str], nodes: dict[int, str]
) -> dict[str, Any]:
    """Per site: status, ε and evaluation metrics of this round, keyed by site name.

    Sites name themselves by a numeric `site-id` in their metrics; `nodes` remembers which
    node was which site, so an error reply (no metrics) is still put under its site's name.
    """
    rows: dict[str, Any] = {}
    for phase in ("train", "evaluate"):
        for node, reply in strategy.replies.get((server_round, phase), {}).items():
            sid = reply["metrics"].get("site-id")
            if sid is not None:
                nodes[node] = names.get(int(sid), f"site-{int(sid)}")
            row = rows.setdefault(nodes.get(node, f"node-{node}"), {"node": node})
            row[f"{phase}_status"] = reply["status"] + (
                f": {reply['reason']}" if reply["reason"] else ""
            )
            row |= {f"{phase}/{k}": v for k, v in reply["metrics"].items() if k != "site-id"}
    return rows


def run_federation(
    grid: Grid,
    cfg: FedsynthConfig,
    eval_sites: Sequence[SiteData] = (),
    site_names: dict[int, str] | None = None,
) -> RunDirectory:
    """Run the configured rounds on `grid`; returns the run directory."""
    run, model, done = _start_point(cfg)
    fed = cfg.federation
    shared_keys = model.shared_keys(fed.shared_groups, fed.keep_norm_local)
    state = model.state_dict()
    initial = ArrayRecord({k: Array(state[k].detach().cpu().numpy()) for k in shared_keys})
    strategy = strategy_for(cfg)
    flat = cfg.to_flat() | {"federation.run-dir": str(run.path), "federation.resume-from": ""}
    names = site_names or {}
    nodes: dict[int, str] = {}
    started = time.perf_counter()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        global_round = done + server_round
        shared = _load_shared(model, arrays)
        server = server_evaluation(model, eval_sites, cfg) if eval_sites and fed.server_eval else {}
        if server_round == 0:
            if server:
                psnr = server["psnr_brain"]
                console.print(f"round {global_round}: server PSNR brain {psnr:.2f} dB (initial)")
            return MetricRecord(server) if server else None
        sites = _site_rows(strategy, server_round, names, nodes)
        row = {
            "round": global_round,
            "seconds": time.perf_counter() - started,
            "server": server,
            "sites": sites,
        }
        run.save_round(global_round, model, cfg, shared, {"server": server})
        if eval_sites:
            save_sample_grid(
                model,
                eval_sites[0].test,
                cfg.model.source,
                cfg.model.target,
                run.samples / f"round-{global_round:04d}.png",
                title=f"round {global_round} — {eval_sites[0].site}",
            )
        run.append_metrics(row)
        _print_round(row, fed.num_rounds)
        return MetricRecord(server) if server else None

    remaining = fed.num_rounds - done
    if remaining > 0:
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=remaining,
            timeout=fed.round_timeout,
            train_config=ConfigRecord(flat),
            evaluate_config=ConfigRecord(flat),
            evaluate_fn=evaluate_fn,
        )
    report = write_report(run, cfg)
    console.print(f"[green]run complete[/]: {run.path} (report: {report})")
    return run


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
        if cfg is None:  # `flwr run`: the run config, made consistent like a simulation's
            from_run = FedsynthConfig.from_flat(dict(context.run_config))
            run_cfg = from_run.federated(from_run.federation.min_nodes)
        else:
            run_cfg = cfg
        run_federation(grid, run_cfg, eval_sites, site_names)

    return server_app


app = make_server_app()
