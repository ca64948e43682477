"""Secure aggregation rounds: Flower's SecAgg+ computes the weighted mean of the sites' shared
tensors so that the server never sees one site's update, only the sum.

In Flower 1.41 SecAgg+ runs only on the legacy stack (`DefaultWorkflow(fit_workflow=
SecAggPlusWorkflow(...))` over a `LegacyContext` with a legacy strategy), so this module is a
thin adapter: the same configuration, start point, checkpoints, metrics and report as
`fedsynth.server.app.run_federation` (through `fedsynth.server.rounds.RoundRecorder`), only the
aggregation differs.
Its client side is `fedsynth.client.secure`.

Aggregation is plain weighted FedAvg over the shared tensors (weights = training slices), up to
SecAgg+'s quantisation: values are clipped to ±`CLIPPING_RANGE` and quantised to
2**22 levels, weights to `num-examples / MAX_WEIGHT` on the same grid.

Dropouts. `num_shares=1.0` makes each of the n sampled sites a neighbour of every other (n
shares of each site's secrets) and `reconstruction_threshold=0.5` needs t = max(2,
round(n/2)) of them (Flower's rule: t = 2 for n = 2…5). A site that drops out after the key
exchange — its masks are already in the others' vectors — costs the round one timeout (or
less: the SuperLink answers for a node whose heartbeat expired, ≤ 60 s), then the survivors'
shares rebuild its key and remove its masks: the round completes with the survivors' weighted
mean, as long as n − t or fewer sites are gone. With 3 sites (t = 2) one may drop out
(tests/test_deploy_secure.py: a SuperNode killed mid-round, the aggregate checked against
the two survivors' updates); with 2 sites (t = 2) none may.

Flower logs "Secure aggregation halted" and carries on (exit code 0) when a round cannot be
completed (too few sites left to unmask); here that round raises `SecureAggregationFailed`,
and `run_federation` records the failure in the run directory's status.json.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.serverapp import Grid

from fedsynth.config import FedsynthConfig
from fedsynth.instruction import SERVER_ROUND, round_config
from fedsynth.server.rounds import RoundRecorder, site_rows

log = logging.getLogger(__name__)
CLIPPING_RANGE = 8.0
MAX_WEIGHT = 1000.0
QUANTIZATION_RANGE = 2**22


class SecureAggregationFailed(RuntimeError):
    """A SecAgg+ round ended without an aggregate (Flower only logs it)."""


class SecureFedAvg(FedAvg):
    """Legacy FedAvg whose `aggregate_fit` receives SecAgg+'s weighted mean (the same
    aggregate in every result) and hands each finished round to the `RoundRecorder`."""

    def __init__(
        self, keys: list[str], recorder: RoundRecorder, names: dict[int, str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.keys, self.recorder, self.names = keys, recorder, names
        self.nodes: dict[int, str] = {}
        self.pending: dict[int, tuple[dict[str, np.ndarray], dict[int, dict]]] = {}
        self.aggregated: set[int] = set()

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        arrays = parameters_to_ndarrays(results[0][1].parameters)
        self.flush()  # a previous round that had no evaluation
        self.pending[server_round] = (dict(zip(self.keys, arrays, strict=True)), _replies(results))
        self.aggregated.add(server_round)
        return ndarrays_to_parameters(arrays), {}

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[Any],
    ) -> tuple[float | None, dict[str, Scalar]]:
        self.flush(_replies(results))
        return None, {}

    def flush(self, evaluated: dict[int, dict] | None = None) -> None:
        """Record the pending round (with its evaluation replies, if any)."""
        for server_round, (shared, trained) in sorted(self.pending.items()):
            replies = {"train": trained, "evaluate": evaluated or {}}
            self.recorder.record(server_round, shared, site_rows(replies, self.names, self.nodes))
        self.pending.clear()


def _replies(results: list[tuple[ClientProxy, Any]]) -> dict[int, dict]:
    return {
        proxy.node_id: {"status": "accepted", "reason": "", "metrics": dict(res.metrics)}
        for proxy, res in results
    }


class CheckedSecAggPlus(SecAggPlusWorkflow):
    """SecAgg+ that fails loudly: a round without an aggregate raises."""

    def __call__(self, grid: Grid, context: Context) -> None:
        super().__call__(grid, context)
        server_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        if server_round not in context.strategy.aggregated:
            raise SecureAggregationFailed(
                f"secure aggregation halted in round {server_round} (too few sites completed "
                "SecAgg+); no aggregate was produced"
            )


def _instruction(server_round: int, done: int) -> dict[str, int]:
    return {SERVER_ROUND: server_round, **round_config(done)}


def run_secure_rounds(
    grid: Grid,
    cfg: FedsynthConfig,
    initial: dict[str, np.ndarray],
    num_rounds: int,
    recorder: RoundRecorder,
    names: dict[int, str],
) -> None:
    """`num_rounds` SecAgg+ rounds from `initial`; each finished round goes to `recorder`."""
    fed = cfg.federation
    strategy = SecureFedAvg(
        list(initial),
        recorder,
        names,
        fraction_fit=fed.fraction_train,
        fraction_evaluate=fed.fraction_evaluate,
        min_fit_clients=fed.min_nodes,
        min_evaluate_clients=fed.min_nodes,
        min_available_clients=fed.min_nodes,
        # The legacy stack sends no round: put it in, as the Message API's strategies do.
        on_fit_config_fn=lambda server_round: _instruction(server_round, recorder.done),
        on_evaluate_config_fn=lambda server_round: _instruction(server_round, recorder.done),
        initial_parameters=ndarrays_to_parameters(list(initial.values())),
    )
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=num_rounds, round_timeout=fed.round_timeout),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=CheckedSecAggPlus(
            num_shares=1.0,  # every sampled site holds a share of every other's key
            reconstruction_threshold=0.5,
            max_weight=MAX_WEIGHT,
            clipping_range=CLIPPING_RANGE,
            quantization_range=QUANTIZATION_RANGE,
            timeout=fed.round_timeout,
        )
    )
    workflow(grid, context)
    strategy.flush()
