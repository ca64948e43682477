"""A federation of simulated sites on one machine, on Flower's simulation runtime (Ray
backend): the same ClientApp and ServerApp as a deployment, one virtual SuperNode per site,
launched through `flwr run` (fedsynth.simulations.runtime)."""

from __future__ import annotations

import dataclasses
import logging

from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.server.report import write_report
from fedsynth.server.run_dir import RunDirectory
from fedsynth.simulations.runtime import run_simulation

log = logging.getLogger(__name__)


def simulate(
    cfg: FedsynthConfig, baselines: bool = False, cpus_per_site: float = 1.0
) -> RunDirectory:
    """Run the federation (and optionally the centralized/local baselines) and the report."""
    # Build the slice cache once here, before the sites (Ray actors) open it read-only.
    sites, _ = prepare_sites(cfg.data)
    # A round waits for no more sites than are simulated.
    cfg = cfg.evolve(federation={"min_nodes": min(cfg.federation.min_nodes, len(sites))})
    log.info(
        "simulating %d sites (%s), %d rounds × %d steps, DP %s → %s",
        len(sites),
        ", ".join(s.site for s in sites),
        cfg.federation.num_rounds,
        cfg.federation.local_steps,
        "on" if cfg.privacy.enabled else "off",
        cfg.federation.run_dir,
    )
    run = run_simulation(cfg, len(sites), cpus_per_site)
    if baselines:
        from fedsynth.simulations.baselines import run_baselines

        same_budget = dataclasses.replace(cfg, train=cfg.federated_train)  # as one fed. site
        run_baselines(same_budget, sites, run.path / "baselines")
        (run.path / "baselines.json").write_text(
            (run.path / "baselines" / "baselines.json").read_text()
        )
        write_report(run, cfg)
    log.info("run complete: %s (report: %s)", run.path, run.path / "report.md")
    return run
