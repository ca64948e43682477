"""Which site a node is, from its node config and an instruction's flat config (Flower-free).

Node config (deployment: `flower-supernode --node-config 'data-dir="/data/site" site="hospA"
state-dir="/var/lib/fedsynth"'`): `data-dir` is the site's own dataset, `site` its name,
`state-dir` where its private state lives, `epsilon-budget` (optional) the (ε, δ) budget the
site will not exceed, whatever the server configures. In simulation Flower sets
`partition-id` and `num-partitions`; the site is that partition of `data.root`, its state
under `federation.state-dir` (default `<run-dir>/sites`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fedsynth.client.site import Site, SiteIdentity, site_data
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig

FLOWER_KEYS = ("server-round", "proximal-mu")
"""Keys Flower's strategies add to an instruction's config; not FedsynthConfig keys."""


def open_site(config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Site:
    """The site this node is, configured by an instruction's flat config."""
    flat = {k: v for k, v in config.items() if k not in FLOWER_KEYS}
    if "epsilon-budget" in node_config:  # the hospital's own budget, whatever the server asks
        flat["privacy.epsilon-budget"] = node_config["epsilon-budget"]
    cfg = FedsynthConfig.from_flat(flat)
    partition = node_config.get("partition-id")
    partition = None if partition is None else int(partition)
    if partition is not None:  # simulation: sites share the machine's cores
        torch.set_num_threads(1)
    data_dir = Path(str(node_config["data-dir"])) if "data-dir" in node_config else None
    state_root = Path(str(node_config["state-dir"])) if "state-dir" in node_config else None
    if data_dir is not None and state_root is not None:  # the slice cache is the site's own
        cfg = cfg.replace(**{"data.cache-dir": str(state_root / SiteStateDir.CACHE)})
    data = site_data(cfg, partition, data_dir)
    name = str(node_config.get("site", data.site))
    root = state_root if state_root is not None else cfg.federation.state_dir
    state = SiteStateDir.of_site(name, root, cfg.federation.run_dir)
    return Site(cfg, SiteIdentity.of(name, state.path, partition), data)
