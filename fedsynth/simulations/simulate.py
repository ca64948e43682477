"""A federation of simulated sites on one machine, on Flower's simulation engine (Ray
backend): the same ClientApp and ServerApp as a deployment, one virtual SuperNode per site."""

from __future__ import annotations

import logging
import os

from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.server.report import write_report
from fedsynth.server.run_dir import RunDirectory

log = logging.getLogger(__name__)


def simulate(
    cfg: FedsynthConfig, baselines: bool = False, cpus_per_site: float = 1.0
) -> RunDirectory:
    """Run the federation (and optionally the centralized/local baselines) and the report."""
    from flwr.simulation import run_simulation

    from fedsynth.client.app import app as client_app
    from fedsynth.server.app import make_server_app

    # Build the slice cache once here, before the sites (Ray actors) open it read-only.
    sites, cache = prepare_sites(cfg.data)
    cfg = cfg.federated(len(sites))
    log.info(
        "simulating %d sites (%s), %d rounds × %d steps, DP %s → %s",
        len(sites),
        ", ".join(s.site for s in sites),
        cfg.federation.num_rounds,
        cfg.federation.local_steps,
        "on" if cfg.privacy.enabled else "off",
        cfg.federation.run_dir,
    )
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    server_app = make_server_app(cfg, sites, {i: s.site for i, s in enumerate(sites)})
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(sites),
        backend_config={
            "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 2, "include_dashboard": False},
        },
    )
    run = RunDirectory(
        cfg.federation.run_dir if cfg.federation.resume_from is None else cfg.federation.resume_from
    )
    if baselines:
        from fedsynth.simulations.baselines import run_baselines

        run_baselines(cfg, sites, run.path / "baselines")
        (run.path / "baselines.json").write_text(
            (run.path / "baselines" / "baselines.json").read_text()
        )
        write_report(run, cfg)
    return run
