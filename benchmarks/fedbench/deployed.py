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
        self.done: list[tuple[float, float]] = []
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
                self.done.append((self.live.pop(pid), now))
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _deploy(work: Path, data: Path, flat: dict, names: tuple[str, ...]) -> tuple[Path, Path, list]:
    """One deployment run; (run dir, SuperLink database, clientapp process lifetimes)."""
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
    return fed.run_dir, fed.database, sorted(watch.done)


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
        cfg = FedsynthConfig.from_flat(
            FedsynthConfig().to_flat()
            | flat
            | {
                "data.root": str(data),
                "data.cache-dir": str(work / f"{prefix}-cache"),
                "federation.run-dir": str(work / f"{prefix}-sim"),
                "federation.server-eval": False,
            }
        )
        sim = simulate_measured(cfg, 1.0)
        sim_warm = [r for r in sim["rounds"] if r["round"] >= 2] or sim["rounds"]
        figures[f"{prefix}_sim_round_seconds"] = statistics.mean(r["wall"] for r in sim_warm)
        figures[f"{prefix}_sim_client_train_seconds_per_site"] = (
            statistics.mean(r["client_train"] for r in sim_warm) / sites
        )

    # The whole config, as the simulated twin's (pyproject's own is the demo's recipe).
    whole = FedsynthConfig().to_flat() | flat
    run_dir, database, procs = _deploy(work / f"{prefix}-deploy", data, whole, names)
    ends = [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").open()]
    walls = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    deploy_round = statistics.mean(walls[1:] or walls)
    groups = [procs[i : i + sites] for i in range(0, len(procs), sites)]  # one per phase
    train, evaluate = _phases([max(e - s for s, e in g) for g in groups], flat, rounds)
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
        f"{prefix}_deploy_processes_per_round": len(procs) / rounds,
        f"{prefix}_deploy_fleet_bytes_per_round": (sent + recv) / rounds,
        f"{prefix}_deploy_fleet_bytes_per_site_per_round": (sent + recv) / rounds / sites,
    }


def _phases(critical: list[float], flat: dict, rounds: int) -> tuple[list[float], list[float]]:
    """The per-phase critical paths (slowest site) split into train and evaluate phases, in
    message order: train, evaluate, train, … — or, with `federation.evaluate-in-train`, every
    round's train and one evaluate after the last (`fedsynth.reply_metrics`)."""
    if not flat.get("federation.fraction-evaluate", 1.0) > 0:
        return critical, []
    if flat.get("federation.evaluate-in-train", False):
        return critical[:rounds], critical[rounds:]
    return critical[0::2], critical[1::2]


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
