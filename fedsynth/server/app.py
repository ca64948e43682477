"""The Flower ServerApp: one typed config, a validated GAN-aware strategy, a checkpoint per
round, metrics per site per round, and the final report.

`app` parses its run config once (`[tool.flwr.app.config]` and `--run-config` under
`flwr run .`; the whole generated config under `fedsynth simulate`, see
fedsynth.simulations.runtime), every missing key at its FedsynthConfig default. The sites read
the same run config themselves: an instruction carries only per-message values
(`fedsynth.instruction`).
`run_federation` is the same server without Flower's runtime around it (tests drive it with an
in-process grid).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData
from fedsynth.instruction import round_config
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint
from fedsynth.server.report import write_report
from fedsynth.server.rounds import RoundRecorder, site_rows
from fedsynth.server.run_dir import RunDirectory
from fedsynth.server.secure import run_secure_rounds
from fedsynth.strategies import ValidatedAggregation, build_strategy

log = logging.getLogger(__name__)


def strategy_for(cfg: FedsynthConfig, num_rounds: int) -> ValidatedAggregation:
    """The configured strategy with the federation's node minimums and validation, for a
    `flwr run` of `num_rounds` rounds: with `federation.evaluate-in-train` only its last round
    sends evaluate messages (its model is the one no later train reply scores)."""
    fed = cfg.federation
    knobs: dict[str, Any] = dict(
        fraction_train=fed.fraction_train,
        fraction_evaluate=fed.fraction_evaluate,
        min_train_nodes=fed.min_nodes,
        min_evaluate_nodes=fed.min_nodes,
        min_available_nodes=fed.min_nodes,
        norm_factor=fed.norm_factor,
        evaluate_in_train=fed.evaluate_in_train,
        evaluate_rounds={num_rounds} if fed.evaluate_in_train else None,
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
    run = RunDirectory(fed.run_path)
    if fed.resume_from is None:
        run.create(cfg)
        model = cfg.initial_model()
        return run, model, 0
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
    log.info("resuming %s after round %d", run.path, last)
    return run, load_checkpoint(run.checkpoint_path(last)).model, last


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
    recorder = RoundRecorder(run, model, cfg, eval_sites, done)
    names = site_names or {}
    remaining = fed.num_rounds - done
    try:
        if remaining > 0 and fed.secure_aggregation:
            run_secure_rounds(grid, cfg, initial, remaining, recorder, names)
        elif remaining > 0:
            _run_rounds(grid, cfg, initial, remaining, recorder, names)
        report = write_report(run, cfg)
    except Exception as err:  # `flwr run` exits 0 even when the ServerApp raised
        run.set_status("failed", f"{type(err).__name__}: {err}")
        raise
    finally:
        recorder.board.close()
    run.set_status("complete")
    log.info("run complete: %s (report: %s)", run.path, report)
    return run


def _run_rounds(
    grid: Grid,
    cfg: FedsynthConfig,
    initial: dict[str, np.ndarray],
    num_rounds: int,
    recorder: RoundRecorder,
    names: dict[int, str],
) -> None:
    """The rounds on Flower's Message API with the configured validated strategy."""
    strategy = strategy_for(cfg, num_rounds)
    nodes: dict[int, str] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        shared = {k: a.numpy() for k, a in arrays.items()}
        if server_round == 0:
            server = recorder.server_metrics(shared)
            if server:
                psnr = server["psnr_brain"]
                log.info("round %d: server PSNR brain %.2f dB (initial)", recorder.done, psnr)
            return MetricRecord(server) if server else None
        phases = ("train", "evaluate")
        replies = {phase: strategy.replies.get((server_round, phase), {}) for phase in phases}
        times = {phase: strategy.phase_times.get((server_round, phase), {}) for phase in phases}
        server = recorder.record(server_round, shared, site_rows(replies, names, nodes), times)
        return MetricRecord(server) if server else None

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
        num_rounds=num_rounds,
        timeout=cfg.federation.round_timeout,
        train_config=ConfigRecord(round_config(recorder.done)),
        evaluate_config=ConfigRecord(round_config(recorder.done)),
        evaluate_fn=evaluate_fn,
    )


def server_sites(cfg: FedsynthConfig) -> list[SiteData]:
    """The held-out paired subjects the server may read (`data.root`: the phantom of a
    simulation, sites[i] being partition i); none in a deployment (no `data.root`)."""
    if cfg.data.root is None:
        return []
    return prepare_sites(cfg.data, progress=False)[0]


def _log_with_flower() -> None:
    """In the ServerApp's own process fedsynth's records go where Flower's do (its console
    handler: what `flwr run --stream` and `flwr log` show), unless someone set up logging."""
    from flwr.supercore.logger import console_handler

    package = logging.getLogger("fedsynth")
    if not package.handlers and not logging.getLogger().handlers:
        package.setLevel(logging.INFO)
        package.addHandler(console_handler)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """`flwr run`: the run config, every missing key at its default."""
    _log_with_flower()
    cfg = FedsynthConfig.from_flat(dict(context.run_config))
    sites = server_sites(cfg)
    run_federation(grid, cfg, sites, {i: s.site for i, s in enumerate(sites)})
