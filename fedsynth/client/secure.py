"""The client side of SecAgg+ rounds: a `NumPyClient` around the same `Site` the Message-API
handlers use, wrapped by Flower's `secaggplus_mod`, which masks the site's weighted update
before it leaves (Flower 1.41 runs SecAgg+ only through this legacy client interface).

Parameters travel as a list in the order of the site's shared keys, the server's order too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedsynth.client.node import open_site
from fedsynth.instruction import absolute_round


class SecureSiteClient(NumPyClient):
    """fit = one (idempotent) training round of the site; evaluate = its held-out scores."""

    def __init__(self, context: Context) -> None:
        self.node_context = context

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        ctx = self.node_context
        site = open_site(ctx.run_config, ctx.node_config)
        arrays = dict(zip(site.shared_keys, parameters, strict=True))
        metrics = site.train_round(arrays, absolute_round(config))
        return list(site.shared_arrays().values()), int(metrics["num-examples"]), metrics

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        absolute_round(config)  # refuses an instruction that carries settings
        site = open_site(self.node_context.run_config, self.node_context.node_config)
        site.receive(dict(zip(site.shared_keys, parameters, strict=True)))
        metrics = site.evaluate()
        return 0.0, int(metrics["num-examples"]), metrics


def _client(context: Context) -> Client:
    return SecureSiteClient(context).to_client()


secure_app = ClientApp(client_fn=_client, mods=[secaggplus_mod])
