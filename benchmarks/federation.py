"""Federation cost on Flower's simulation runtime (Ray backend), reached as `fedsynth
simulate` reaches it (`flwr run` on a private simulation SuperLink): where a round's wall
time goes, how many bytes a site sends per round, round time and memory at 3, 10 and 30
sites, and the same rounds as a real deployment on loopback.

Set-up. Toy NIfTI heads (`fedsynth.data.toy`), pooled and split IID into N simulated sites
(`data.partition=iid`). Tiny CycleGAN at 32 px (base/disc channels 4, 1 residual block, 2
discriminator layers), batch 8, DP off, 10 local steps per round by default. The tiny model is
the pessimistic case: the federation's cost per message is roughly fixed, so a larger model
or more local steps only lowers its share. Everything else is the product's, run unmodified.

Observation, through what the product records (no monkeypatching): each metrics.jsonl line's
`timings` (the server's phase times from `ValidatedAggregation.phase_times`, its server-side
evaluation, the round's end) and each site's own timings.jsonl (ClientApp calls, wall clock,
and their seconds in the training engine; SiteStateDir.timings) — see fedbench/simulated.py.

Round decomposition (`overhead_*`, one client at a time: `cpus_per_site` = all cores, so Ray
runs one actor and the clients' times add up): client = Σ ClientApp calls (open the site,
train or evaluate, save state, build the reply), `client_engine` its training-engine part;
server = the round outside the two grid waits (configure, validate + aggregate, server-side
evaluation — `server_eval` — checkpoint, sample grid, metrics); runtime overhead = the grid
waits − client time (Flower's simulation engine and its LinkState polling, Ray task
submission, pickling). `overhead_fraction_of_round` = runtime overhead / round (the goal
of docs/architecture.md §8: ≤ 0.05); `overhead_plus_server_bookkeeping_fraction` adds the
server's work except the optional server-side evaluation. Rounds ≥ 2 are "warm"; round 1
also pays Ray start-up, actor start and the first data open.
`overhead_startup_to_first_client_seconds` runs from the `simulate` call (slice cache already
built) to the first ClientApp call: the SuperLink,
`flwr run`, Flower's simulation process (imports, the ServerApp's data), Ray and the actors.
`overhead_report_seconds` is the final report, re-written by the benchmark on the finished
run; `overhead_teardown_seconds` runs from the last round's end to `simulate` returning
(report, Flower's shutdown, stopping the SuperLink).

Bytes (`tiny_*`, `phantom3site_*`): fedbench/payload.py. Imports (`import_*`,
`deploy_import_*`): fedbench/imports.py. Deployment (`deploy_tiny_*`, `deploy_demo_*`):
fedbench/deployed.py.

Scale (`sites_N_*`, N = 3, 10, 30; product default `cpus_per_site` = 1, i.e. two Ray actors on
two cores): warm round wall time; its runtime overhead = the grid waits minus, per phase, the
busiest actor's ClientApp time (an actor left idle by an odd number of sites shows in
`actor_utilisation`, not as overhead); peak memory of the whole process tree (this process,
the SuperLink, Flower's simulation process with the ServerApp, Ray's GCS, raylet and
workers): Σ PSS (shared pages split between processes — the honest total) and Σ RSS, sampled
every 0.5 s from /proc, above this process's own memory before the simulation (`*_extra_mb`).

The co-tenant load of this shared machine inflates client compute; the overhead is a ratio
within one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from common import parser, write_result  # noqa: E402
from fedbench.deployed import deployment_figures, deployment_rows  # noqa: E402
from fedbench.imports import actor_import_figures, clientapp_process_figures  # noqa: E402
from fedbench.payload import byte_figures  # noqa: E402
from fedbench.simulated import (  # noqa: E402
    make_config,
    overhead_figures,
    scale_figures,
    simulate_measured,
)

from fedsynth.data.toy import write_tiny_dataset  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    cores = os.cpu_count() or 2
    if args.quick:
        overhead_run = (2, 1, 2)  # sites, rounds, local steps
        scale = []
    else:
        overhead_run = (3, 3, 10)
        scale = [(3, 2, 10), (10, 2, 10), (30, 2, 10)]
    max_sites = max([overhead_run[0], *(s for s, _, _ in scale)])
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fedsynth-bench-fed-") as tmp:
        work = Path(tmp)
        # Every partition needs a paired test subject + one per modality: 3 subjects.
        root = write_tiny_dataset(work / "data", sites=("pool",), n=3 * max_sites)

        n, rounds, steps = overhead_run
        print(f"[overhead] {n} sites, {rounds} rounds × {steps} steps, one client at a time")
        cfg = make_config(root, work, n, rounds, steps)
        run = simulate_measured(cfg, cores)
        figures |= overhead_figures(run)
        payload_cfg = run["cfg"].evolve(federation={"run_dir": work / "payload"})
        figures |= byte_figures(payload_cfg, n)
        if args.quick:
            figures |= scale_figures(run)  # at 2 sites: round time and memory
        for n, rounds, steps in scale:
            print(f"[scale] {n} sites, {rounds} rounds × {steps} steps, 1 CPU per site")
            figures |= scale_figures(
                simulate_measured(make_config(root, work, n, rounds, steps), 1.0)
            )
        figures |= actor_import_figures()
        figures |= clientapp_process_figures()
        for prefix, flat in deployment_rows(args.quick):
            print(f"[deployment] {prefix}: deployment vs simulation, same rounds")
            sites = 2 if args.quick else 3
            figures |= deployment_figures(work, flat, sites, prefix, compare=not args.quick)
        figures["scale_local_steps"] = scale[0][2] if scale else overhead_run[2]
    write_result("federation", figures, args.out)


if __name__ == "__main__":
    main()
