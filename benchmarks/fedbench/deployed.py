"""The same rounds as a real deployment on loopback (`fedsynth.deploy.local`: SuperLink with
TLS, authenticated SuperNodes, `flwr run`) and as a simulation with one CPU per site, on the
same per-site data, both with `federation.evaluate-in-train` (one message per site and round;
the last round's model is scored by one evaluate message). Split of a warm deployment round:
the `flwr-clientapp` processes (one per message; critical path = the slowest site; the final
evaluation spread over the rounds), the rest = the ServerApp's
work + Flower's message latency (SuperNodes and the ServerApp's grid both poll every 3 s).
Bytes: what the SuperLink's Fleet API counted for the run."""

from __future__ import annotations

import json
import sqlite3
import statistics
import threading
import time
from pathlib import Path

from fedbench.simulated import TINY, simulate_measured
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.data.toy import write_tiny_dataset
from fedsynth.deploy.local import LocalFederation
from fedsynth.simulations.scenarios import scenario_config

IN_TRAIN = {"federation.evaluate-in-train": True}


class ProcessWatch(threading.Thread):
    """Lifetimes of the `flwr-clientapp` processes (one per message in a deployment), from
    /proc every 0.1 s: what a message costs end to end, process start to exit."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.live: dict[int, float] = {}
        self.done: dict[int, tuple[float, float]] = {}  # pid -> (start, exit)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now, seen = time.time(), set()
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if b"flwr-clientapp" in (entry / "cmdline").read_bytes():
                            seen.add(int(entry.name))
                    except OSError:
                        continue
            for pid in seen - set(self.live):
                self.live[pid] = now
            for pid in set(self.live) - seen:
                self.done[pid] = (self.live.pop(pid), now)
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _deploy(
    work: Path, data: Path, flat: dict, names: tuple[str, ...]
) -> tuple[Path, Path, dict[tuple[str, int], float], int]:
    """One deployment run: run dir, SuperLink database, the critical path of each (phase,
    round) — its slowest `flwr-clientapp` process, start to exit, matched to the call by the
    pid the site's own profiling log (`SiteStateDir.timings`) records — and how many
    `flwr-clientapp` processes ran in all."""
    fed = LocalFederation(work, data)
    watch = ProcessWatch()
    try:
        fed.start_superlink()
        for site in names:
            fed.add_site(site)
        for site in names:
            fed.wait_connected(site)
        watch.start()
        run = fed.run(flat)
        if run.wait(timeout=1800) != 0 or fed.status()["status"] != "complete":
            raise RuntimeError(f"deployment run failed: {fed.log('flwr-run')[-2000:]}")
    finally:
        fed.stop_all()
        if watch.is_alive():
            watch.stop()
    critical: dict[tuple[str, int], float] = {}
    for site in names:
        for call in SiteStateDir(fed.site_state(site)).timings():
            if call["pid"] in watch.done:
                start, end = watch.done[call["pid"]]
                key = (call["phase"], call["round"])
                critical[key] = max(critical.get(key, 0.0), end - start)
    return fed.run_dir, fed.database, critical, len(watch.done)


def simulated_twin(work: Path, data: Path, flat: dict) -> list[dict]:
    """The deployment's rounds as a simulation with one CPU per site, on the same per-site
    data (`data/<site>`, one site per partition); its warm rounds' splits
    (`simulate_measured`), or round 1's when it ran only one."""
    cfg = FedsynthConfig.from_flat(
        FedsynthConfig().to_flat()
        | flat
        | {
            "data.root": str(data),
            "data.cache-dir": str(work / "cache"),
            "federation.run-dir": str(work / "run"),
            "federation.server-eval": False,
        }
    )
    rounds = simulate_measured(cfg, 1.0)["rounds"]
    return [r for r in rounds if r["round"] >= 2] or rounds


def deployment_figures(
    work: Path, flat: dict, sites: int, prefix: str, compare: bool = True
) -> dict[str, float]:
    """Deployment vs simulation on the same data; `compare=False` (--quick) skips the
    simulation."""
    names = tuple(f"hosp{chr(65 + i)}" for i in range(sites))
    data = write_tiny_dataset(work / f"{prefix}-data", sites=names, n=3)
    rounds = int(flat["federation.num-rounds"])
    figures: dict[str, float] = {
        f"{prefix}_sites": sites,
        f"{prefix}_local_steps": int(flat["federation.local-steps"]),
    }
    if compare:
        sim_warm = simulated_twin(work / f"{prefix}-sim", data, flat)
        figures[f"{prefix}_sim_round_seconds"] = statistics.mean(r["wall"] for r in sim_warm)
        figures[f"{prefix}_sim_client_train_seconds_per_site"] = (
            statistics.mean(r["client_train"] for r in sim_warm) / sites
        )

    # The whole config, as the simulated twin's (pyproject's own is the demo's recipe).
    whole = FedsynthConfig().to_flat() | flat
    run_dir, database, critical, processes = _deploy(work / f"{prefix}-deploy", data, whole, names)
    ends = [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").open()]
    walls = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    deploy_round = statistics.mean(walls[1:] or walls)
    train = [t for (phase, _), t in sorted(critical.items()) if phase == "train"]
    evaluate = [t for (phase, _), t in critical.items() if phase == "evaluate"]
    train_crit = statistics.mean(train[1:] or train)  # warm rounds
    eval_crit = sum(evaluate) / rounds  # per round: with evaluate-in-train, the last one only
    with sqlite3.connect(database) as db:
        sent, recv = db.execute("SELECT SUM(bytes_sent), SUM(bytes_recv) FROM run").fetchone()
    if compare:
        figures[f"{prefix}_deploy_over_sim_round"] = (
            deploy_round / figures[f"{prefix}_sim_round_seconds"]
        )
    return figures | {
        f"{prefix}_deploy_round_seconds": deploy_round,
        f"{prefix}_deploy_round1_seconds": walls[0],
        f"{prefix}_deploy_train_process_seconds": train_crit,
        f"{prefix}_deploy_evaluate_process_seconds": eval_crit,
        f"{prefix}_deploy_server_and_messaging_seconds": deploy_round - train_crit - eval_crit,
        f"{prefix}_deploy_processes_per_round": processes / rounds,
        f"{prefix}_deploy_fleet_bytes_per_round": (sent + recv) / rounds,
        f"{prefix}_deploy_fleet_bytes_per_site_per_round": (sent + recv) / rounds / sites,
    }


def deployment_rows(quick: bool) -> list[tuple[str, dict]]:
    """Tiny model (the pessimistic case) and, in a full run, the demo model (phantom-3site:
    64 px, its sizes, DP on, its 40 local steps per round)."""
    # One message per site and round (`federation.evaluate-in-train`), as the README advises
    # a deployment; the simulated twin runs the same config.
    tiny = TINY | {"federation.num-rounds": 3, "federation.local-steps": 10} | IN_TRAIN
    if quick:  # checks that it runs: one round, no client evaluation, no simulation twin
        quick_flat = {"federation.num-rounds": 1, "federation.local-steps": 1}
        return [("deploy_tiny", TINY | quick_flat | {"federation.fraction-evaluate": 0.0})]
    default, demo = FedsynthConfig().to_flat(), scenario_config("phantom-3site").to_flat()
    demo = {k: v for k, v in demo.items() if v != default[k] and not k.startswith("federation")}
    demo |= {"federation.num-rounds": 2, "federation.local-steps": 40} | IN_TRAIN
    return [("deploy_tiny", tiny), ("deploy_demo", demo)]
