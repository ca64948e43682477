"""Which site a node is, from its node config and the run config (Flower-free).

Node config (deployment: `flower-supernode --node-config 'data-dir="/data/site" site="hospA"
state-dir="/var/lib/fedsynth"'`): `data-dir` is the site's own dataset, `site` its name,
`state-dir` where its private state lives, `epsilon-budget` (optional) the (ε, δ) budget the
site will not exceed, whatever the run configures. In simulation Flower sets `partition-id`
and `num-partitions`; the site is that partition of `data.root`, its state under
`federation.state-dir` (default `<run>/sites`).

The run config (`context.run_config`: the same flat keys the ServerApp reads) is parsed into
`FedsynthConfig` once per process (`site_config`), whatever number of messages the process
handles; the node's own settings go on top as typed changes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fedsynth.client.site import Site, SiteIdentity, site_data
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig


@functools.lru_cache(maxsize=4)
def _parse(run_config: tuple[tuple[str, Any], ...]) -> FedsynthConfig:
    return FedsynthConfig.from_flat(dict(run_config))


def site_config(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> FedsynthConfig:
    """This node's configuration: the run config (parsed once per process) with the node's
    own budget and, for a deployed site, its own slice cache.

    Args:
        run_config: the run's flat config (`context.run_config`).
        node_config: the SuperNode's node config (`context.node_config`).

    Returns:
        The typed config this site trains and evaluates with.
    """
    cfg = _parse(tuple(sorted(run_config.items())))
    if "epsilon-budget" in node_config:  # the hospital's own budget, whatever the run asks
        budget = str(node_config["epsilon-budget"]).strip()
        cfg = cfg.evolve(privacy={"epsilon_budget": float(budget) if budget else None})
    if "data-dir" in node_config and "state-dir" in node_config:  # the site's own cache
        cache = Path(str(node_config["state-dir"])) / SiteStateDir.CACHE
        cfg = cfg.evolve(data={"cache_dir": cache})
    return cfg


def open_site(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Site:
    """The site this node is, in the run configured by `run_config`."""
    cfg = site_config(run_config, node_config)
    partition = node_config.get("partition-id")
    partition = None if partition is None else int(partition)
    if partition is not None:  # simulation: sites share the machine's cores
        torch.set_num_threads(1)
    data_dir = Path(str(node_config["data-dir"])) if "data-dir" in node_config else None
    state_root = Path(str(node_config["state-dir"])) if "state-dir" in node_config else None
    data = site_data(cfg, partition, data_dir)
    name = str(node_config.get("site", data.site))
    root = state_root if state_root is not None else cfg.federation.state_dir
    state = SiteStateDir.of_site(name, root, cfg.federation.run_path)
    return Site(cfg, SiteIdentity.of(name, state.path, partition), data)
