"""Federation cost on Flower's simulation engine (Ray backend): where a round's wall time
goes, how many bytes a site sends per round, and round time and memory at 3, 10 and 30 sites.

Set-up. Tiny NIfTI heads (`tests/conftest.py::write_tiny_dataset`), pooled and split IID
into N simulated sites (`data.partition=iid`). Tiny CycleGAN at 32 px (base/disc channels 4,
1 residual block, 2 discriminator layers), batch 8, DP off, 10 local steps per round by
default. The tiny model is the pessimistic case: the federation's cost per message is
roughly fixed, so a larger model or more local steps only lowers its share.
Everything else is the product's: the real ClientApp and ServerApp logic
(`run_federation`: validation, FedAvg over the generators, server-side evaluation,
checkpoint, sample grid and metrics every round), launched the way
`fedsynth.simulations.simulate` launches it.

Instrumentation, outside the product code. The ServerApp hands `run_federation` a Grid
proxy that time-stamps every `send_and_receive` and keeps the real reply Messages; the
ClientApp is wrapped by one that time-stamps each call of the real ClientApp inside the Ray
actor (wall clock; same machine) and times `train_local` inside it, and writes both to a
side file — so nothing is added to the replies (a training-time metric would be a timing
side channel on DP's secret Poisson batch sizes, so the product does not send one).

Round decomposition (`overhead_*`, one client at a time: `cpus_per_site` = all cores, so
Ray runs one actor and the clients' times add up). A round runs from the end of the
previous round's bookkeeping (`metrics.jsonl` row written) to the end of its own:
  - client: Σ over the round's train + evaluate messages of the ClientApp call (open the
    site: config, data, model, private state; train or evaluate; save state; build reply);
    `client_engine` is the `train_local` part of it;
  - server: the ServerApp outside its two grid waits (configure, validate + aggregate,
    server-side evaluation on held-out data — `server_eval` — checkpoint, sample grid,
    metrics);
  - runtime overhead = the two grid waits − client time: Flower's simulation engine (its
    0.1 s LinkState polling loops, one per direction), Ray task submission, pickling of the
    ClientApp, message and Context to and from the actor.
`overhead_fraction_of_round` = runtime overhead / round (the DESIGN goal: ≤ 0.05);
`overhead_plus_server_bookkeeping_fraction` adds the server's work except the optional
server-side evaluation (aggregation, checkpoint, sample grid). Rounds ≥ 2 are "warm"; round
1 also pays Ray start-up, actor start and the first data open, reported separately.

Bytes (`bytes_*`): a real train reply serialised the way a SuperNode uploads it in a
deployment (flwr 1.41): one `PushMessagesRequest` (metadata + object tree) plus one
`PushObjectRequest` per object of the deflated message (Message, RecordDict, ArrayRecord,
MetricRecord, each Array's JSON head and its ArrayChunks), protobuf bytes (HTTP/gRPC framing
excluded) — versus the raw shared parameters (Σ numel × itemsize of the shared state-dict
entries, computed from the model, not from the message). The instruction a site downloads
(same arrays + the run's flat ConfigRecord) is reported too. Also for the phantom-3site
model (64 px), from a reply built by the ClientApp's own `_reply` with the same metrics.

Start-up: `overhead_startup_to_first_client_seconds` runs from `run_simulation` to the
first ClientApp call (Ray start, actor start, the actor importing the ClientApp); the import
alone is timed in a fresh interpreter (`import_*_seconds`: torch, then the ClientApp).

Deployment (`deploy_tiny_*`, `deploy_demo_*`; `deployment_figures`): the same rounds as a real
deployment on loopback (SuperLink with TLS, authenticated SuperNodes, `flwr run`) and as a
Ray simulation with one CPU per site, on the same per-site data; the tiny model above and the
demo model (phantom-3site sizes, 64 px, DP on, 40 local steps). `deploy_import_*_seconds`:
what each message's fresh `flwr-clientapp` process imports (Flower's runtime, the ClientApp,
opacus for training), timed in a fresh interpreter.

Scale (`sites_N_*`, N = 3, 10, 30; product default `cpus_per_site` = 1, i.e. two Ray
actors on two cores): warm round wall time; its runtime overhead = the grid waits minus,
per phase, the busiest actor's ClientApp time (the clients' critical path; an actor left
idle by an odd number of sites shows in `actor_utilisation`, not as overhead); and peak
memory of the whole process tree (this driver, which also runs the ServerApp, plus Ray's
GCS, raylet and workers): Σ PSS (shared pages split between processes — the honest total)
and Σ RSS (counts torch's shared libraries once per process), sampled every 0.5 s from
/proc, above the driver's own memory before the simulation (`*_extra_mb`).

The co-tenant load of this shared machine inflates client compute; the overhead is a
ratio within one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import parser, write_result  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import write_tiny_dataset  # noqa: E402
from flwr.app import Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

import fedsynth.server.app as server_module  # noqa: E402
from fedsynth.config import FedsynthConfig  # noqa: E402
from fedsynth.data.pipeline import prepare_sites  # noqa: E402
from fedsynth.models import build_model  # noqa: E402
from fedsynth.server.run_dir import RunDirectory  # noqa: E402
from fedsynth.simulations.scenarios import scenario_config  # noqa: E402

TINY = {
    "data.preprocess.image-size": 32,
    "model.base-channels": 4,
    "model.res-blocks": 1,
    "model.disc-channels": 4,
    "model.disc-layers": 2,
    "privacy.enabled": False,
    "train.batch-size": 8,
}
MB = 1024 * 1024


# --------------------------------------------------------------------------- instruments


class GridProbe(Grid):
    """The real Grid, with every `send_and_receive` time-stamped and its Messages kept."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.first_call: float | None = None
        self.calls: list[dict] = []  # phase, round, start, end, messages
        self.exchanges: list[tuple[Message, Message]] = []  # (instruction, reply)

    def _touch(self) -> None:
        if self.first_call is None:
            self.first_call = time.time()

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        self._touch()
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._touch()
        start = time.time()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        end = time.time()
        first = messages[0] if messages else None
        self.calls.append(
            {
                "phase": first.metadata.message_type if first else "?",
                "round": int(first.content["config"]["server-round"]) if first else -1,
                "start": start,
                "end": end,
                "messages": len(messages),
            }
        )
        by_id = {m.metadata.message_id: m for m in messages}
        self.exchanges += [(by_id.get(r.metadata.reply_to_message_id), r) for r in replies]
        return replies


def timed_client_app(log_path: str) -> ClientApp:
    """The real ClientApp, each call time-stamped (wall clock) into `log_path` by the Ray
    actor running it, with the `train_local` part timed too. Self-contained: it is pickled
    by value into the actors."""
    from fedsynth.client.app import app as inner

    app = ClientApp()

    def instrument() -> dict:
        import fedsynth.client.site as site_module

        timings = getattr(site_module, "_benchmark_timings", None)
        if timings is None:
            timings = {"train_local": 0.0}
            original = site_module.train_local

            def train_local(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    timings["train_local"] += time.perf_counter() - start

            site_module.train_local = train_local
            site_module._benchmark_timings = timings
        return timings

    def timed(phase: str) -> Callable[[Message, object], Message]:
        def handler(msg: Message, context) -> Message:
            timings = instrument()
            timings["train_local"] = 0.0
            start = time.time()
            reply = inner(msg, context)
            end = time.time()
            row = {
                "phase": phase,
                "round": int(msg.content["config"]["server-round"]),
                "partition": int(context.node_config.get("partition-id", -1)),
                "pid": os.getpid(),
                "start": start,
                "end": end,
                "engine": timings["train_local"],
                "error": reply.has_error(),
            }
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            return reply

        return handler

    app.train()(timed("train"))
    app.evaluate()(timed("evaluate"))
    return app


@contextmanager
def timed_calls(owner: object, name: str, sink: list):
    """Replace `owner.name` by a wrapper that appends (start, end, result) to `sink`."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.time()
        out = original(*args, **kwargs)
        sink.append((start, time.time(), args))
        return out

    setattr(owner, name, wrapper)
    try:
        yield sink
    finally:
        setattr(owner, name, original)


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        out += frontier
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) if it is gone."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except (OSError, ValueError):
        return 0, 0


def tree_memory() -> tuple[float, float, int]:
    """(Σ RSS MB, Σ PSS MB, processes) of this process and all its descendants."""
    pids = _descendants(os.getpid())
    mem = [_memory_kb(p) for p in pids]
    return sum(m[0] for m in mem) / 1024, sum(m[1] for m in mem) / 1024, len(pids)


class MemorySampler(threading.Thread):
    """Peak Σ RSS / Σ PSS / process count of the process tree, sampled every `interval` s."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_rss = self.peak_pss = 0.0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, pss, n = tree_memory()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, n)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --------------------------------------------------------------------------- one simulation


def make_config(root: Path, work: Path, sites: int, rounds: int, steps: int) -> FedsynthConfig:
    cfg = FedsynthConfig.from_flat(
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
    return cfg


def simulate_instrumented(cfg: FedsynthConfig, cpus_per_site: float, work: Path) -> dict:
    """One Ray simulation, launched as `fedsynth.simulations.simulate` does, instrumented."""
    from flwr.simulation import run_simulation

    sites, _ = prepare_sites(cfg.data, progress=False)
    cfg = cfg.replace(**{"federation.min-nodes": min(cfg.federation.min_nodes, len(sites))})
    names = {i: s.site for i, s in enumerate(sites)}
    log_path = work / f"clients-{uuid.uuid4().hex[:8]}.jsonl"
    log_path.touch()
    probes: list[GridProbe] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context) -> None:
        probe = GridProbe(grid)
        probes.append(probe)
        server_module.run_federation(probe, cfg, sites, names)

    base_rss, base_pss, _ = tree_memory()
    sampler = MemorySampler()
    ends: list = []
    evals: list = []
    reports: list = []
    with (
        timed_calls(RunDirectory, "append_metrics", ends),
        timed_calls(server_module, "server_evaluation", evals),
        timed_calls(server_module, "write_report", reports),
    ):
        sampler.start()
        started = time.time()
        run_simulation(
            server_app=server_app,
            client_app=timed_client_app(str(log_path)),
            num_supernodes=len(sites),
            backend_config={
                "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
                "init_args": {"num_cpus": os.cpu_count() or 2, "include_dashboard": False},
            },
        )
        finished = time.time()
        sampler.stop()
    clients = [json.loads(line) for line in log_path.read_text().splitlines()]
    if not probes or not ends:
        raise RuntimeError("the simulation ran no round (see the log above)")
    probe = probes[0]
    round_end = {args[1]["round"]: end for _, end, args in ends}
    rounds = []
    for r in sorted(round_end):
        start = probe.first_call if r == 1 else round_end[r - 1]
        waits = [c for c in probe.calls if c["round"] == r]
        msgs = [c for c in clients if c["round"] == r]
        server_eval = sum(e - s for s, e, _ in evals if start <= s < round_end[r])
        wait = sum(c["end"] - c["start"] for c in waits)
        wall = round_end[r] - start
        client = sum(m["end"] - m["start"] for m in msgs)
        # Per phase, the busiest actor's ClientApp time: the round's critical path on the
        # clients (= all client time when one actor runs at a time).
        busy: dict[tuple[str, int], float] = {}
        for m in msgs:
            busy[m["phase"], m["pid"]] = busy.get((m["phase"], m["pid"]), 0.0) + (
                m["end"] - m["start"]
            )
        critical = sum(
            max(t for (phase, _), t in busy.items() if phase == p)
            for p in {phase for phase, _ in busy}
        )
        rounds.append(
            {
                "round": r,
                "wall": wall,
                "wait": wait,
                "client": client,
                "critical": critical,
                "client_train": sum(m["end"] - m["start"] for m in msgs if m["phase"] == "train"),
                "engine": sum(m["engine"] for m in msgs),
                "server": wall - wait,
                "server_eval": server_eval,
                "messages": len(msgs),
                "errors": sum(m["error"] for m in msgs),
            }
        )
    by_pid: dict[int, list] = {}
    for m in sorted(clients, key=lambda m: m["start"]):
        by_pid.setdefault(m["pid"], []).append(m)
    cold = [ms[0]["end"] - ms[0]["start"] for ms in by_pid.values()]
    warm_same = [
        m["end"] - m["start"]
        for ms in by_pid.values()
        for m in ms[1:]
        if m["phase"] == ms[0]["phase"]
    ]
    return {
        "sites": len(sites),
        "cfg": cfg,
        "rounds": rounds,
        "actors": len(by_pid),
        "startup": min(m["start"] for m in clients) - started,
        "first_message_cold": statistics.mean(cold),
        "first_message_warm": statistics.median(warm_same) if warm_same else float("nan"),
        "report": sum(e - s for s, e, _ in reports),
        "teardown": finished - max(round_end.values()),
        "total": finished - started,
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "base_rss": base_rss,
        "base_pss": base_pss,
        "processes": sampler.peak_procs,
        "exchanges": probe.exchanges,
    }


# --------------------------------------------------------------------------- bytes


def upload_bytes(msg: Message, node_id: int = 7_300_000_000_000_000_001) -> int:
    """Protobuf bytes a SuperNode sends to upload `msg` (flwr 1.41 deployment path:
    `fleet_http_connection.send` + `push_objects`), framing excluded."""
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.proto.fleet_pb2 import PushMessagesRequest
    from flwr.proto.message_pb2 import PushObjectRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supercore.inflatable.inflatable_object import (
        get_all_nested_objects,
        get_object_tree,
    )

    msg.metadata.__dict__["_message_id"] = msg.object_id  # as the SuperNode sets it
    node = Node(node_id=node_id)
    run_id, session = 4_100_000_000_000_000_003, str(uuid.uuid4())
    head = PushMessagesRequest(
        node=node,
        messages_list=[message_to_proto(remove_content_from_message(msg))],
        message_object_trees=[get_object_tree(msg)],
        clientapp_runtime_list=[1.0],
    ).ByteSize()
    objects = sum(
        PushObjectRequest(
            node=node,
            run_id=run_id,
            object_id=oid,
            object_content=obj.deflate(),
            session_id=session,
        ).ByteSize()
        for oid, obj in get_all_nested_objects(msg).items()
    )
    return head + objects


def single_proto_bytes(msg: Message) -> int:
    """The whole Message as one protobuf (`flwr.common.serde.message_to_proto`)."""
    from flwr.common.serde import message_to_proto

    return message_to_proto(msg).ByteSize()


def shared_raw_bytes(cfg: FedsynthConfig) -> tuple[int, int, int]:
    """(Σ numel × itemsize, tensors, parameters) of the shared state-dict entries."""
    model = build_model(cfg.model)
    state = model.state_dict()
    keys = model.shared_keys(cfg.federation.shared_groups, cfg.federation.keep_norm_local)
    return (
        sum(state[k].numel() * state[k].element_size() for k in keys),
        len(keys),
        sum(state[k].numel() for k in keys),
    )


def byte_figures(run: dict) -> dict[str, float]:
    from fedsynth.client.app import _reply

    cfg = run["cfg"]
    raw, tensors, params = shared_raw_bytes(cfg)
    last = max(r["round"] for r in run["rounds"])
    train = [
        (ins, rep)
        for ins, rep in run["exchanges"]
        if rep.metadata.message_type == "train"
        and not rep.has_error()
        and int(ins.content["config"]["server-round"]) == last
    ]
    if not train:
        raise RuntimeError("no successful train reply to measure")
    ins, rep = train[0]
    # Same arrays as the model's shared keys?
    assert list(rep.content["arrays"].keys()) == build_model(cfg.model).shared_keys(
        cfg.federation.shared_groups, cfg.federation.keep_norm_local
    )
    up = [upload_bytes(r) for _, r in train]
    down = [upload_bytes(i) for i, _ in train]
    out = {
        "tiny_shared_tensors": tensors,
        "tiny_shared_parameters": params,
        "tiny_shared_raw_bytes": raw,
        "tiny_reply_bytes_per_client_round": statistics.mean(up),
        "tiny_reply_over_raw_ratio": statistics.mean(up) / raw,
        "tiny_reply_overhead_bytes_per_tensor": (statistics.mean(up) - raw) / tensors,
        "tiny_reply_single_proto_over_raw_ratio": single_proto_bytes(rep) / raw,
        "tiny_instruction_bytes_per_client_round": statistics.mean(down),
        "tiny_instruction_over_raw_ratio": statistics.mean(down) / raw,
    }

    # The phantom-3site model: the ClientApp's own `_reply` around its shared tensors.
    big = scenario_config("phantom-3site")
    model = build_model(big.model)
    keys = model.shared_keys(big.federation.shared_groups, big.federation.keep_norm_local)
    state = model.state_dict()
    # Perturbed like trained weights: freshly initialised norm layers are all-ones/zeros,
    # and identical chunks would be sent once (objects are content-addressed).
    rng = np.random.default_rng(0)
    trained = {
        k: (state[k].numpy() + rng.normal(0, 1e-3, tuple(state[k].shape))).astype(
            state[k].numpy().dtype
        )
        for k in keys
    }

    class Shared:
        def shared_arrays(self) -> dict[str, np.ndarray]:
            return trained

    metrics = dict(rep.content["metrics"])
    big_reply = _reply(ins, Shared(), metrics)
    big_raw = sum(state[k].numel() * state[k].element_size() for k in keys)
    big_up = upload_bytes(big_reply)
    out |= {
        "phantom3site_shared_tensors": len(keys),
        "phantom3site_shared_raw_bytes": big_raw,
        "phantom3site_reply_bytes_per_client_round": big_up,
        "phantom3site_reply_over_raw_ratio": big_up / big_raw,
        "phantom3site_reply_overhead_bytes_per_tensor": (big_up - big_raw) / len(keys),
    }
    return out


# --------------------------------------------------------------------------- deployment


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
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def fresh_process_seconds() -> dict[str, float]:
    """What a fresh `flwr-clientapp` process imports before and while handling a message,
    timed in a new interpreter: Flower's client runtime, the ClientApp, opacus (train only)."""
    code = (
        "import time; t = time.perf_counter(); import flwr.supernode.cli.flwr_clientapp; "
        "u = time.perf_counter(); import fedsynth.client.app; v = time.perf_counter(); "
        "import opacus; w = time.perf_counter(); print(u - t, v - u, w - v)"
    )
    env = os.environ | {"FLWR_TELEMETRY_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    return {
        "deploy_import_flower_runtime_seconds": float(out[0]),
        "deploy_import_clientapp_seconds": float(out[1]),
        "deploy_import_opacus_seconds": float(out[2]),
    }


def deployment_figures(
    work: Path, flat: dict, sites: int, prefix: str, compare: bool = True
) -> dict[str, float]:
    """The same rounds twice, on the same per-site data: a real deployment on loopback
    (`fedsynth.deploy.local`: SuperLink with TLS + authenticated SuperNodes, `flwr run`), and
    a Ray simulation with one CPU per site (the product default). Split of a warm deployment
    round: the clientapp processes (train, then evaluate; critical path = the slowest site),
    the rest = the ServerApp's work + Flower's message latency (SuperNodes and the ServerApp's
    grid both poll every 3 s). Bytes: what the SuperLink's Fleet API counted for the run.
    `compare=False` (--quick) skips the simulation."""
    import sqlite3

    from fedsynth.deploy.local import LocalFederation

    names = tuple(f"hosp{chr(65 + i)}" for i in range(sites))
    data = write_tiny_dataset(work / f"{prefix}-data", sites=names, n=3)
    rounds = int(flat["federation.num-rounds"])

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
    sim = simulate_instrumented(cfg, 1.0, work) if compare else None

    fed = LocalFederation(work / f"{prefix}-deploy", data)
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
    ends = [json.loads(line)["seconds"] for line in (fed.run_dir / "metrics.jsonl").open()]
    walls = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    warm = walls[1:] or walls
    procs = sorted(watch.done)
    groups = [procs[i : i + sites] for i in range(0, len(procs), sites)]  # train, eval, …
    critical = [max(e - s for s, e in g) for g in groups]
    train_crit = statistics.mean(critical[2::2] or critical[0::2])
    eval_crit = statistics.mean(critical[3::2] or critical[1::2] or [0.0])
    with sqlite3.connect(fed.database) as db:
        sent, recv = db.execute("SELECT SUM(bytes_sent), SUM(bytes_recv) FROM run").fetchone()
    deploy_round = statistics.mean(warm)
    figures = {
        f"{prefix}_sites": sites,
        f"{prefix}_local_steps": int(flat["federation.local-steps"]),
        f"{prefix}_deploy_round_seconds": deploy_round,
        f"{prefix}_deploy_round1_seconds": walls[0],
    }
    if sim is not None:
        sim_warm = [r for r in sim["rounds"] if r["round"] >= 2] or sim["rounds"]
        sim_round = statistics.mean(r["wall"] for r in sim_warm)
        figures |= {
            f"{prefix}_sim_round_seconds": sim_round,
            f"{prefix}_deploy_over_sim_round": deploy_round / sim_round,
            f"{prefix}_sim_client_train_seconds_per_site": statistics.mean(
                r["client_train"] for r in sim_warm
            )
            / sites,
        }
    evaluated = flat.get("federation.fraction-evaluate", 1.0) > 0
    if not evaluated:  # every process is a training one
        train_crit, eval_crit = statistics.mean(critical[1:] or critical), 0.0
    return figures | {
        f"{prefix}_deploy_train_process_seconds": train_crit,
        f"{prefix}_deploy_evaluate_process_seconds": eval_crit,
        f"{prefix}_deploy_server_and_messaging_seconds": deploy_round - train_crit - eval_crit,
        f"{prefix}_deploy_processes_per_round": len(procs) / rounds,
        f"{prefix}_deploy_fleet_bytes_per_round": (sent + recv) / rounds,
        f"{prefix}_deploy_fleet_bytes_per_site_per_round": (sent + recv) / rounds / sites,
    }


# --------------------------------------------------------------------------- figures


def overhead_figures(run: dict, prefix: str = "overhead") -> dict[str, float]:
    warm = [r for r in run["rounds"] if r["round"] >= 2] or run["rounds"]
    first = run["rounds"][0]

    def mean(key: str, rows=warm) -> float:
        return statistics.mean(r[key] for r in rows)

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
        # Train calls minus train_local: site open (config, data, model, state) + save + reply.
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


def scale_figures(run: dict) -> dict[str, float]:
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


def import_seconds() -> dict[str, float]:
    """Import time of torch, then of the ClientApp, in a fresh interpreter (what each Ray
    actor pays once)."""
    code = (
        "import time; t = time.perf_counter(); import torch; u = time.perf_counter(); "
        "import fedsynth.client.app; v = time.perf_counter(); print(u - t, v - u)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return {
        "import_torch_seconds": float(out[0]),
        "import_clientapp_after_torch_seconds": float(out[1]),
    }


def deployment_rows(quick: bool) -> list[tuple[str, dict]]:
    """Tiny model (the pessimistic case) and, in a full run, the demo model (phantom-3site:
    64 px, its sizes, DP on, its 40 local steps per round)."""
    tiny = TINY | {"federation.num-rounds": 3, "federation.local-steps": 10}
    if quick:  # checks that it runs: one round, no client evaluation, no simulation twin
        quick_flat = {"federation.num-rounds": 1, "federation.local-steps": 1}
        return [("deploy_tiny", TINY | quick_flat | {"federation.fraction-evaluate": 0.0})]
    default, demo = FedsynthConfig().to_flat(), scenario_config("phantom-3site").to_flat()
    demo = {k: v for k, v in demo.items() if v != default[k] and not k.startswith("federation")}
    demo |= {"federation.num-rounds": 2, "federation.local-steps": 40}
    return [("deploy_tiny", tiny), ("deploy_demo", demo)]


def main() -> None:
    args = parser(__doc__).parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
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
        run = simulate_instrumented(make_config(root, work, n, rounds, steps), cores, work)
        figures |= overhead_figures(run)
        figures |= byte_figures(run)
        if args.quick:
            figures |= scale_figures(run)  # at 2 sites: round time and memory
        for n, rounds, steps in scale:
            print(f"[scale] {n} sites, {rounds} rounds × {steps} steps, 1 CPU per site")
            run = simulate_instrumented(make_config(root, work, n, rounds, steps), 1.0, work)
            figures |= scale_figures(run)
        figures |= import_seconds()
        figures |= fresh_process_seconds()
        for prefix, flat in deployment_rows(args.quick):
            print(f"[deployment] {prefix}: deployment vs simulation, same rounds")
            sites = 2 if args.quick else 3
            figures |= deployment_figures(work, flat, sites, prefix, compare=not args.quick)
        figures["scale_local_steps"] = scale[0][2] if scale else overhead_run[2]
    write_result("federation", figures, args.out)


if __name__ == "__main__":
    main()
