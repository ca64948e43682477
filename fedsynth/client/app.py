"""The Flower ClientApp: one per hospital, the same code in simulation and deployment.

Node config (deployment: `flower-supernode --node-config 'data-dir="/data/site" site="hospA"
state-dir="/var/lib/fedsynth"'`): `data-dir` is the site's own dataset, `site` its name,
`state-dir` where its private state lives, `epsilon-budget` (optional) the (ε, δ) budget the
site will not exceed, whatever the server configures. In simulation Flower sets `partition-id` and
`num-partitions`; the site is that partition of `data.root`, its state under
`federation.state-dir` (default `<run-dir>/sites`).

The run's whole configuration arrives in every instruction's ConfigRecord (flat keys of
`FedsynthConfig`), so sites train exactly what the server configured. With
`federation.secure-aggregation` the instructions come in Flower's legacy format and go to the
SecAgg+ adapter `fedsynth.client.secure` (same `Site`, same state).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Before torch loads OpenMP (Flower starts a fresh process per message in a deployment): idle
# threads sleep instead of spinning, else a step is 10-40x slower on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from fedsynth.client.rounds import append_timing  # noqa: E402
from fedsynth.client.site import Site, SiteIdentity, site_data  # noqa: E402
from fedsynth.config import FedsynthConfig  # noqa: E402

log = logging.getLogger(__name__)
app = ClientApp()

# Flower adds these to the instruction's config; they are not FedsynthConfig keys.
_FLOWER_KEYS = ("server-round", "proximal-mu")


def open_site(config: Mapping[str, Any], context: Context) -> Site:
    """The site this node is, configured by an instruction's flat config."""
    flat = {k: v for k, v in config.items() if k not in _FLOWER_KEYS}
    node = context.node_config
    if "epsilon-budget" in node:  # the hospital's own budget, whatever the server asks
        flat["privacy.epsilon-budget"] = node["epsilon-budget"]
    cfg = FedsynthConfig.from_flat(flat)
    partition = node.get("partition-id")
    if partition is not None:  # simulation: sites share the machine's cores
        torch.set_num_threads(1)
    data_dir = Path(str(node["data-dir"])) if "data-dir" in node else None
    if data_dir is not None and "state-dir" in node:  # the slice cache is the site's own
        cache = Path(str(node["state-dir"])) / "cache"
        cfg = cfg.replace(**{"data.cache-dir": str(cache)})
    data = site_data(cfg, None if partition is None else int(partition), data_dir)
    name = str(node.get("site", data.site))
    default_state = (cfg.federation.state_dir or cfg.federation.run_dir / "sites") / name
    state_dir = (
        Path(str(node.get("state-dir", ""))) / name if "state-dir" in node else default_state
    )
    identity = SiteIdentity.of(name, state_dir, None if partition is None else int(partition))
    return Site(cfg, identity, data)


def _arrays(msg: Message) -> dict[str, Any]:
    return {k: a.numpy() for k, a in msg.content["arrays"].items()}


def _is_secure(msg: Message) -> bool:
    """SecAgg+ rounds arrive in the legacy message format (no "config" record)."""
    return "config" not in msg.content.config_records


def _reply(msg: Message, site: Site | None, metrics: dict[str, float]) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if site is not None:
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in site.shared_arrays().items()})
    return Message(content=content, reply_to=msg)


def _timed(reply: Message, msg: Message, site: Site, started: float) -> Message:
    """Note the call in the site's own profiling log (fedsynth.client.rounds), then reply."""
    site.identity.state_dir.mkdir(parents=True, exist_ok=True)
    append_timing(
        site.identity.state_dir,
        {
            "phase": msg.metadata.message_type,
            "round": int(msg.content["config"].get("server-round", 0)),
            "pid": os.getpid(),
            "start": started,
            "end": time.time(),
            "engine_seconds": site.engine_seconds,
        },
    )
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally from the global shared weights; reply with those tensors only."""
    if _is_secure(msg):
        from fedsynth.client.secure import secure_app

        return secure_app(msg, context)
    started = time.time()
    site = open_site(msg.content["config"], context)
    metrics = site.train_round(_arrays(msg))
    return _timed(_reply(msg, site, metrics), msg, site, started)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global generators on this site's paired held-out subjects."""
    if _is_secure(msg):
        from fedsynth.client.secure import secure_app

        return secure_app(msg, context)
    started = time.time()
    site = open_site(msg.content["config"], context)
    site.receive(_arrays(msg))
    return _timed(_reply(msg, None, site.evaluate()), msg, site, started)
