"""Simulated federations run exactly as `fedsynth simulate` runs them (`flwr run` on a private
simulation SuperLink, Ray backend), timed from what the product records: each metrics.jsonl
line's `timings` (when the server handed a phase's instructions to the grid and got the
replies back, its server-side evaluation, the round's end) and each site's timings.jsonl (its
ClientApp calls, wall clock, and their seconds in the training engine).

Round decomposition: a round runs from the end of the previous one (round 1: from the start
of its train phase) to the end of its own bookkeeping;
  - wait: Σ over its phases of replied − sent (the server waiting on the grid);
  - client: Σ of the round's ClientApp calls; `critical`: per phase, the busiest actor's
    (process's) ClientApp time — the clients' critical path;
  - server: wall − wait (configure, validate + aggregate, evaluation, checkpoint, grid,
    metrics); runtime overhead: wait − critical (Flower's simulation engine, Ray, pickling).
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from fedbench.memory import MemorySampler, tree_memory
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.server.report import write_report
from fedsynth.server.run_dir import RunDirectory
from fedsynth.simulations.scenarios import TINY_MODEL
from fedsynth.simulations.simulate import simulate

# Tiny CycleGAN at 32 px: the pessimistic case (a round's fixed cost weighs most).
TINY = TINY_MODEL | {
    "privacy.enabled": False,
    "train.batch-size": 8,
}


def make_config(root: Path, work: Path, sites: int, rounds: int, steps: int) -> FedsynthConfig:
    """The tiny model on `root` split IID into `sites` sites."""
    return FedsynthConfig.from_flat(
        FedsynthConfig().to_flat()
        | TINY
        | {
            "data.root": str(root),
            "data.cache-dir": str(work / "cache"),
            "data.partition": "iid",
            "data.num-partitions": sites,
            "federation.num-rounds": rounds,
            "federation.local-steps": steps,
            "federation.run-dir": str(work / f"run-{sites}-{uuid.uuid4().hex[:6]}"),
        }
    )


def _round(row: dict[str, Any], start: float, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's time split (see the module docstring)."""
    t = row["timings"]
    wait = sum(t[p]["replied"] - t[p]["sent"] for p in ("train", "evaluate") if "sent" in t[p])
    wall = t["end"] - start
    busy: dict[tuple[str, int], float] = {}
    for c in calls:
        busy[c["phase"], c["pid"]] = busy.get((c["phase"], c["pid"]), 0.0) + c["end"] - c["start"]
    phases = {phase for phase, _ in busy}
    return {
        "round": row["round"],
        "wall": wall,
        "wait": wait,
        "client": sum(c["end"] - c["start"] for c in calls),
        "critical": sum(max(v for (ph, _), v in busy.items() if ph == p) for p in phases),
        "client_train": sum(c["end"] - c["start"] for c in calls if c["phase"] == "train"),
        "engine": sum(c["engine_seconds"] for c in calls),
        "server": wall - wait,
        "server_eval": t["server_eval_seconds"],
        "messages": len(calls),
        "errors": sum(
            v.get(f"{p}_status", "").startswith("error")
            for v in row["sites"].values()
            for p in ("train", "evaluate")
        ),
    }


def simulate_measured(cfg: FedsynthConfig, cpus_per_site: float) -> dict[str, Any]:
    """One `simulate` of `cfg`, with the process tree's peak memory; the round split."""
    sites, _ = prepare_sites(cfg.data, progress=False)  # the cache, built before the clock
    base_rss, base_pss, _ = tree_memory()
    sampler = MemorySampler()
    sampler.start()
    started = time.time()
    try:
        simulate(cfg, cpus_per_site=cpus_per_site)
    finally:
        finished = time.time()
        sampler.stop()
    cfg = cfg.evolve(federation={"min_nodes": min(cfg.federation.min_nodes, len(sites))})
    run = RunDirectory(cfg.federation.run_dir)
    state = cfg.federation.state_dir
    calls = [c for s in sites for c in SiteStateDir.of_site(s.site, state, run.path).timings()]
    rows = run.metrics()
    if not rows or not calls:
        raise RuntimeError(f"the simulation ran no round (see {run.path / 'flower'})")
    rounds = []
    for i, row in enumerate(rows):
        start = rows[i - 1]["timings"]["end"] if i else row["timings"]["train"]["start"]
        rounds.append(_round(row, start, [c for c in calls if c["round"] == row["round"]]))
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for c in sorted(calls, key=lambda c: c["start"]):
        by_pid.setdefault(c["pid"], []).append(c)
    warm_same = [
        c["end"] - c["start"]
        for cs in by_pid.values()
        for c in cs[1:]
        if c["phase"] == cs[0]["phase"]
    ]
    report = time.perf_counter()
    write_report(run, cfg)  # what the ServerApp did after its last round, timed here
    return {
        "sites": len(sites),
        "cfg": cfg,
        "rounds": rounds,
        "actors": len(by_pid),
        "startup": min(c["start"] for c in calls) - started,
        "first_message_cold": statistics.mean(
            cs[0]["end"] - cs[0]["start"] for cs in by_pid.values()
        ),
        "first_message_warm": statistics.median(warm_same) if warm_same else float("nan"),
        "report": time.perf_counter() - report,
        "teardown": finished - rows[-1]["timings"]["end"],
        "total": finished - started,
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "base_rss": base_rss,
        "base_pss": base_pss,
        "processes": sampler.peak_procs,
    }


def overhead_figures(run: dict[str, Any], prefix: str = "overhead") -> dict[str, float]:
    """One client at a time (`cpus_per_site` = all cores): where a warm round's time goes."""
    warm = [r for r in run["rounds"] if r["round"] >= 2] or run["rounds"]
    first = run["rounds"][0]

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in warm)

    wall, client, wait = mean("wall"), mean("client"), mean("wait")
    server, server_eval = mean("server"), mean("server_eval")
    runtime = wait - mean("critical")  # = wait - client: one actor
    n = run["sites"]
    return {
        f"{prefix}_sites": n,
        f"{prefix}_local_steps": run["cfg"].federation.local_steps,
        f"{prefix}_ray_actors": run["actors"],
        f"{prefix}_warm_rounds_measured": len(warm),
        f"{prefix}_round_seconds": wall,
        f"{prefix}_client_seconds": client,
        f"{prefix}_client_train_seconds": mean("client_train"),
        f"{prefix}_client_engine_seconds": mean("engine"),
        # Train calls minus the engine: site open (config, data, model, state) + save + reply.
        f"{prefix}_client_train_setup_seconds": mean("client_train") - mean("engine"),
        f"{prefix}_client_evaluate_seconds": client - mean("client_train"),
        f"{prefix}_server_seconds": server,
        f"{prefix}_server_eval_seconds": server_eval,
        f"{prefix}_runtime_overhead_seconds": runtime,
        f"{prefix}_runtime_overhead_per_message_ms": 1000 * runtime / (2 * n),
        f"{prefix}_fraction_of_round": runtime / wall,
        f"{prefix}_plus_server_bookkeeping_fraction": (runtime + server - server_eval) / wall,
        f"{prefix}_client_fraction_of_round": client / wall,
        f"{prefix}_engine_fraction_of_round": mean("engine") / wall,
        f"{prefix}_round1_seconds": first["wall"],
        f"{prefix}_round1_runtime_overhead_seconds": first["wait"] - first["client"],
        f"{prefix}_startup_to_first_client_seconds": run["startup"],
        f"{prefix}_first_message_per_actor_seconds": run["first_message_cold"],
        f"{prefix}_same_phase_warm_message_seconds": run["first_message_warm"],
        f"{prefix}_report_seconds": run["report"],
        f"{prefix}_teardown_seconds": run["teardown"],
        f"{prefix}_simulation_total_seconds": run["total"],
        f"{prefix}_failed_messages": sum(r["errors"] for r in run["rounds"]),
    }


def scale_figures(run: dict[str, Any]) -> dict[str, float]:
    """Round time, runtime overhead and peak memory at N sites, 1 CPU per site."""
    n = run["sites"]
    warm = [r for r in run["rounds"] if r["round"] >= 2] or run["rounds"]
    wall = statistics.mean(r["wall"] for r in warm)
    client = statistics.mean(r["client"] for r in warm)
    wait = statistics.mean(r["wait"] for r in warm)
    runtime = statistics.mean(r["wait"] - r["critical"] for r in warm)
    actors = run["actors"]
    return {
        f"sites_{n}_ray_actors": actors,
        f"sites_{n}_round_seconds": wall,
        f"sites_{n}_round_seconds_per_site": wall / n,
        f"sites_{n}_client_seconds_sum": client,
        f"sites_{n}_server_seconds": statistics.mean(r["server"] for r in warm),
        # Grid waits minus the busiest actor's ClientApp time, per phase (critical path).
        f"sites_{n}_runtime_overhead_seconds": runtime,
        f"sites_{n}_runtime_overhead_fraction_of_round": runtime / wall,
        # How busy the actors were while the server waited (1 = no idle actor).
        f"sites_{n}_actor_utilisation": client / (actors * wait),
        f"sites_{n}_round1_seconds": run["rounds"][0]["wall"],
        f"sites_{n}_simulation_total_seconds": run["total"],
        f"sites_{n}_peak_pss_mb": run["peak_pss"],
        f"sites_{n}_peak_pss_extra_mb": run["peak_pss"] - run["base_pss"],
        f"sites_{n}_peak_rss_sum_mb": run["peak_rss"],
        f"sites_{n}_peak_rss_sum_extra_mb": run["peak_rss"] - run["base_rss"],
        f"sites_{n}_peak_processes": run["processes"],
        f"sites_{n}_failed_messages": sum(r["errors"] for r in run["rounds"]),
    }
