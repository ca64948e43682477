"""The Flower ClientApp: one per hospital, the same code in simulation and deployment.

Node config (deployment: `flower-supernode --node-config 'data-dir="/data/site" site="hospA"
state-dir="/var/lib/fedsynth"'`): `data-dir` is the site's own dataset, `site` its name,
`state-dir` where its private state lives, `epsilon-budget` (optional) the (ε, δ) budget the
site will not exceed, whatever the server configures. In simulation Flower sets `partition-id` and
`num-partitions`; the site is that partition of `data.root`, its state under
`federation.state-dir` (default `<run-dir>/sites`).

The run's whole configuration arrives in every instruction's ConfigRecord (flat keys of
`FedsynthConfig`), so sites train exactly what the server configured.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsynth.client.site import Site, SiteIdentity, site_data
from fedsynth.config import FedsynthConfig

log = logging.getLogger(__name__)
app = ClientApp()

# Flower adds these to the instruction's config; they are not FedsynthConfig keys.
_FLOWER_KEYS = ("server-round", "proximal-mu")


def _open_site(msg: Message, context: Context) -> Site:
    flat = {k: v for k, v in msg.content["config"].items() if k not in _FLOWER_KEYS}
    node = context.node_config
    if "epsilon-budget" in node:  # the hospital's own budget, whatever the server asks
        flat["privacy.epsilon-budget"] = node["epsilon-budget"]
    cfg = FedsynthConfig.from_flat(flat)
    partition = node.get("partition-id")
    if partition is not None:  # simulation: sites share the machine's cores
        torch.set_num_threads(1)
    data_dir = Path(str(node["data-dir"])) if "data-dir" in node else None
    data = site_data(cfg, None if partition is None else int(partition), data_dir)
    name = str(node.get("site", data.site))
    default_state = (cfg.federation.state_dir or cfg.federation.run_dir / "sites") / name
    state_dir = (
        Path(str(node.get("state-dir", ""))) / name if "state-dir" in node else default_state
    )
    identity = SiteIdentity.of(name, state_dir, None if partition is None else int(partition))
    site = Site(cfg, identity, data)
    site.receive({k: a.numpy() for k, a in msg.content["arrays"].items()})
    return site


def _reply(msg: Message, site: Site | None, metrics: dict[str, float]) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if site is not None:
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in site.shared_arrays().items()})
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally from the global shared weights; reply with those tensors only."""
    site = _open_site(msg, context)
    metrics = site.train(site.cfg.federation.local_steps)
    return _reply(msg, site, metrics)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global generators on this site's paired held-out subjects."""
    site = _open_site(msg, context)
    return _reply(msg, None, site.evaluate())
