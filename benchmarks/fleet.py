"""Fleet soak on loopback: 10 SuperNodes over TLS with SuperNode authentication, 20 rounds of
the tiny model on phantom data with DP on (`fedsynth.deploy.local`, the README's deployment
commands), while the fleet misbehaves:

- every 5 rounds, once round r's checkpoint is written, one SuperNode (a different one each
  time, never the poisoner) is SIGKILLed with its ClientApp and restarted;
- the last site runs modified code (`fedbench/poison/sitecustomize.py`) that poisons its reply
  every 7 rounds: 100 times its update, then NaN, alternately;
- once, while round 12 is under way (a site has logged training it), the SuperLink, its
  ServerApp and `flwr run` are SIGKILLed; a new SuperLink on the same port and database and
  `flwr run` with `federation.resume-from` finish the run.

Reported from what the product records, checked independently of it:
- rounds completed (rounds in metrics.jsonl with a checkpoint) and lost (the rest);
- updates rejected, by reason (metrics.jsonl's train_status), honest ones among them, and the
  poisoned ones (the poisoner's own log) the server refused;
- updates lost: a round a site logged as trained (its rounds.jsonl) that the server's row for
  that round lists neither as accepted nor as rejected — produced, never accounted for;
- ε per site: Opacus over the site's recorded accountant history (`fedsynth privacy check`'s
  `check_site`, which also checks every round's reported ε against it); ε double-charged: a
  round a site's log holds twice, or accountant releases beyond local steps × rounds logged;
- peak Σ RSS and Σ PSS of the fleet (SuperLink, SuperNodes, ClientApps, ServerApp) above this
  process's own;
- the median round (checkpoint to checkpoint; rounds after a kill and the crashed round left
  out) against a warm simulated round of the same config, one CPU per site.
Every wait is bounded, everything binds to 127.0.0.1, every process is stopped by PID.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import json  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from common import parser, write_result  # noqa: E402
from fedbench.deployed import simulated_twin  # noqa: E402
from fedbench.memory import MemorySampler, tree_memory  # noqa: E402

from fedsynth.audit.accounting import check_site  # noqa: E402
from fedsynth.client.site import SiteIdentity  # noqa: E402
from fedsynth.client.state_dir import SiteStateDir  # noqa: E402
from fedsynth.config import FedsynthConfig  # noqa: E402
from fedsynth.data.phantom import PhantomConfig, generate_phantom, site_name  # noqa: E402
from fedsynth.deploy.local import LocalFederation  # noqa: E402
from fedsynth.deploy.processes import stop, wait_for  # noqa: E402
from fedsynth.simulations.scenarios import TINY_MODEL  # noqa: E402

POISON = Path(__file__).resolve().parent / "fedbench" / "poison"


@dataclass(frozen=True)
class Soak:
    """What the soak does; `crash_round` is the round the SuperLink dies in."""

    sites: int
    rounds: int
    kill_every: int
    poison_every: int
    crash_round: int
    local_steps: int
    round_timeout: float

    def poison_plan(self) -> dict[int, str]:
        rounds = range(self.poison_every, self.rounds + 1, self.poison_every)
        return {r: ("scale", "nan")[i % 2] for i, r in enumerate(rounds)}

    def kills(self) -> list[int]:
        """The rounds after whose checkpoint a SuperNode is killed and restarted."""
        return list(range(self.kill_every, self.rounds, self.kill_every))


FULL = Soak(sites=10, rounds=20, kill_every=5, poison_every=7, crash_round=12, local_steps=5,
            round_timeout=300.0)  # fmt: skip
# --quick: it runs end to end: a kill after round 2, the crash in round 2, poison in round 3.
QUICK = Soak(sites=3, rounds=4, kill_every=2, poison_every=3, crash_round=2, local_steps=1,
             round_timeout=120.0)  # fmt: skip


def soak_config(soak: Soak) -> dict:
    """The whole run config: the tiny model, slice-level DP from scratch, one message per site
    and round; a round starts with one site missing (a SuperNode being restarted)."""
    return (
        FedsynthConfig().to_flat()
        | TINY_MODEL
        | {
            "privacy.enabled": True,
            "privacy.unit": "slice",
            "train.batch-size": 8,
            "federation.num-rounds": soak.rounds,
            "federation.local-steps": soak.local_steps,
            "federation.round-timeout": soak.round_timeout,
            "federation.min-nodes": soak.sites - 1,
            "federation.evaluate-in-train": True,
        }
    )


def _connections(fed: LocalFederation, site: str) -> int:
    return fed.log(site).count("SuperNode ID")


def _logged(fed: LocalFederation, site: str) -> list[int]:
    """The rounds the site's own log says it trained (replays are not logged again)."""
    return [r["round"] for r in SiteStateDir(fed.site_state(site)).rounds()]


def _restart(fed: LocalFederation, site: str, timeout: float = 240) -> float:
    """SIGKILL the site's SuperNode (and its ClientApp) and start it again until the SuperLink
    takes it back; the seconds that took. The SuperLink refuses a node it still holds online
    (exit 305, "Failed to activate SuperNode") until the killed one misses two heartbeats
    (Flower's default: 2 × 30 s), so a refused start is retried every 5 s."""
    before = _connections(fed, site)
    stop(fed.procs[site], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() < killed + timeout:
        proc = fed.start_supernode(site)
        wait_for(
            lambda p=proc: _connections(fed, site) > before or p.poll() is not None, 120,
            f"{site} to connect or be refused",
        )  # fmt: skip
        if _connections(fed, site) > before:
            return time.monotonic() - killed
        time.sleep(5)
    raise TimeoutError(f"{site}'s SuperNode was refused for {timeout:.0f} s after its restart")


def run_soak(soak: Soak, work: Path, data: Path, flat: dict, names: list[str]) -> dict:
    """The soak itself; what happened, for `figures`."""
    fed = LocalFederation(work, data)
    poisoner, plan = names[-1], soak.poison_plan()
    poison_log = work / "poison.jsonl"
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(POISON), os.environ.get("PYTHONPATH")])),
        "FEDSYNTH_POISON": ",".join(f"{r}:{kind}" for r, kind in plan.items()),
        "FEDSYNTH_POISON_LOG": str(poison_log),
    }
    budget = 2 * soak.round_timeout + 180  # one round, its timeout waited for once, slack
    written: dict[int, float] = {}
    crash_mid_round = False
    restarts: list[float] = []
    sampler = MemorySampler()
    base_rss, base_pss, _ = tree_memory()
    try:
        fed.start_superlink()
        for site in names:
            fed.add_site(site, env=env if site == poisoner else None)
        for site in names:
            fed.wait_connected(site, timeout=120)
        sampler.start()
        started = time.time()
        run = fed.run(flat)
        for r in range(1, soak.rounds + 1):
            if r == soak.crash_round:
                wait_for(
                    lambda r=r: any(r in _logged(fed, s) for s in names), budget,
                    f"a site to train round {r}",
                )  # fmt: skip
                superlink = [k for k in fed.procs if k.startswith("superlink")][-1]
                stop(fed.procs[superlink], signal.SIGKILL)
                stop(run, signal.SIGKILL)
                crash_mid_round = not fed.checkpoint(r).exists()
                print(f"[fleet] SuperLink killed during round {r}; resuming")
                fed.start_superlink()
                run = fed.run(flat | {"federation.resume-from": str(fed.run_dir)})
            wait_for(fed.checkpoint(r).is_file, budget, f"round {r}'s checkpoint")
            written[r] = time.time()
            print(f"[fleet] round {r}/{soak.rounds} ({written[r] - started:.0f} s)")
            if r in soak.kills():
                victim = names[(r // soak.kill_every - 1) % (len(names) - 1)]
                back = _restart(fed, victim)
                restarts.append(back)
                print(f"[fleet] {victim}'s SuperNode killed after round {r}, back in {back:.0f} s")
        if run.wait(timeout=budget) != 0 or fed.status()["status"] != "complete":
            raise RuntimeError(f"the soak's run failed: {fed.log('flwr-run')[-3000:]}")
        total = time.time() - started
    finally:
        if sampler.is_alive():
            sampler.stop()
        fed.stop_all()
    by_key = {_row_key(fed, site): site for site in names}
    rows = [json.loads(line) for line in (fed.run_dir / "metrics.jsonl").open()]
    for row in rows:
        row["sites"] = {by_key.get(k, k): v for k, v in row["sites"].items()}
    poisoned = [json.loads(line) for line in poison_log.open()] if poison_log.is_file() else []
    if plan and not poisoned:  # else the soak measured nothing about refusing poison
        raise RuntimeError(f"{poisoner} sent no poisoned update: {POISON} was not loaded")
    return {
        "fed": fed,
        "rows": rows,
        "written": written,
        "poisoned": sorted({p["round"] for p in poisoned}),
        "poisoner": poisoner,
        "crash_mid_round": crash_mid_round,
        "restarts": restarts,
        "total": total,
        "peak_rss": sampler.peak_rss - base_rss,
        "peak_pss": sampler.peak_pss - base_pss,
        "peak_processes": sampler.peak_procs,
    }


def _row_key(fed: LocalFederation, site: str) -> str:
    """How metrics.jsonl names a deployed site: by the numeric id its replies carry
    (`SiteIdentity`; a deployment's ServerApp does not know the hospitals' names)."""
    return f"site-{SiteIdentity.of(site, fed.site_state(site)).site_id}"


def _status(row: dict, site: str) -> str:
    return row["sites"].get(site, {}).get("train_status", "none").split(":")[0]


def figures(soak: Soak, soak_run: dict, names: list[str]) -> dict[str, float]:
    """What the soak lost, refused and charged (module docstring)."""
    fed, rows, written = soak_run["fed"], soak_run["rows"], soak_run["written"]
    by_round = {row["round"]: row for row in rows}
    completed = [
        r for r in range(1, soak.rounds + 1) if r in by_round and fed.checkpoint(r).exists()
    ]
    reasons: Counter[str] = Counter()
    honest_rejected = 0
    for row in rows:
        for site, values in row["sites"].items():
            status = values.get("train_status", "")
            if status.startswith("rejected"):
                kind = "nonfinite" if "NaN or inf" in status else (
                    "norm_outlier" if "update norm" in status else "other")  # fmt: skip
                reasons[kind] += 1
                honest_rejected += site != soak_run["poisoner"]
                print(f"[fleet] round {row['round']} {site}: {status}")
    lost = errored = double = 0
    checks = {}
    for site in names:
        logged = _logged(fed, site)
        known = {r for r, row in by_round.items() if _status(row, site) in ("accepted", "rejected")}
        lost += len(set(logged) - known)
        errored += sum(_status(row, site) == "error" for row in rows)
        check = check_site(site, SiteStateDir(fed.site_state(site)).accountant_file, rows)
        checks[site] = check
        beyond = max(0, max(check.steps.values()) - soak.local_steps * len(set(logged)))
        double += len(logged) - len(set(logged)) + beyond // max(soak.local_steps, 1)
        for problem in check.problems:
            print(f"[fleet] accounting {site}: {problem}")
    poisoner = soak_run["poisoner"]
    refused = [
        r
        for r in soak_run["poisoned"]
        if _status(by_round.get(r, {"sites": {}}), poisoner) == "rejected"
    ]
    after_kill = {r + 1 for r in soak.kills()} | {soak.crash_round, 1}
    clean = [
        written[r] - written[r - 1] for r in written if r - 1 in written and r not in after_kill
    ]
    epsilon = {site: c.epsilon_recomputed for site, c in checks.items()}
    out = {
        "fleet_sites": soak.sites,
        "fleet_rounds": soak.rounds,
        "fleet_local_steps": soak.local_steps,
        "fleet_rounds_completed": len(completed),
        "fleet_rounds_lost": soak.rounds - len(completed),
        "fleet_updates_lost": lost,
        "fleet_updates_errored": errored,
        "fleet_updates_rejected": sum(reasons.values()),
        "fleet_rejected_nonfinite": reasons["nonfinite"],
        "fleet_rejected_norm_outlier": reasons["norm_outlier"],
        "fleet_rejected_other": reasons["other"],
        "fleet_honest_updates_rejected": honest_rejected,
        "fleet_poisoned_sent": len(soak_run["poisoned"]),
        "fleet_poisoned_rejected": len(refused),
        "fleet_epsilon_double_charged": double,
        "fleet_accounting_problems": sum(len(c.problems) for c in checks.values()),
        "fleet_epsilon_min": min(epsilon.values()),
        "fleet_epsilon_max": max(epsilon.values()),
        "fleet_node_restarts": len(soak_run["restarts"]),
        "fleet_node_restart_seconds_max": max(soak_run["restarts"], default=0.0),
        "fleet_superlink_crash_mid_round": float(soak_run["crash_mid_round"]),
        "fleet_peak_rss_mb": soak_run["peak_rss"],
        "fleet_peak_pss_mb": soak_run["peak_pss"],
        "fleet_peak_processes": soak_run["peak_processes"],
        "fleet_total_seconds": soak_run["total"],
        "fleet_round_seconds": statistics.median(clean) if clean else float("nan"),
    }
    return out | {f"fleet_epsilon_{site}": eps for site, eps in epsilon.items()}


def main() -> None:
    args = parser(__doc__).parse_args()
    soak = QUICK if args.quick else FULL
    names = [site_name(i) for i in range(soak.sites)]
    flat = soak_config(soak)
    with tempfile.TemporaryDirectory(prefix="fedsynth-bench-fleet-") as tmp:
        work = Path(tmp)
        data = work / "data"
        phantom = PhantomConfig(sites=soak.sites, subjects_per_site=4, modalities=("T1", "T2"))
        generate_phantom(phantom, data, progress=False)
        print(f"[fleet] {soak.sites} SuperNodes over TLS, {soak.rounds} rounds")
        result = figures(soak, run_soak(soak, work / "fleet", data, flat, names), names)
        if not args.quick:  # the simulated round the fleet's is compared with
            print(f"[fleet] the same config simulated, {soak.sites} sites, 1 CPU each")
            sim = simulated_twin(work / "sim", data, flat | {"federation.num-rounds": 3})
            result["fleet_sim_round_seconds"] = statistics.mean(r["wall"] for r in sim)
            result["fleet_round_over_sim_round"] = (
                result["fleet_round_seconds"] / result["fleet_sim_round_seconds"]
            )
    write_result("fleet", result, args.out)


if __name__ == "__main__":
    main()
