"""A mixin that puts update validation in front of any Flower strategy's aggregation.

Placed first in the bases (`class X(ValidatedAggregation, FedAvg)`), it overrides the one hook
that sees client updates, `aggregate_train`: replies are checked by
`fedsynth.strategies.validation.validate_replies`, rejected ones are dropped (and recorded on
`rejections`), and the rest — plus any error replies, which Flower logs itself — go to the
Flower strategy's own `aggregate_train`, so Flower's reply checks and aggregation rule (FedAvg,
McMahan et al. 2017; FedProx, Li et al. 2020; FedAdam, Reddi et al. 2021; median / trimmed mean,
Yin et al. 2018) are reused unchanged. `configure_train` remembers the arrays sent, the
reference every update is compared with (as Flower's FedOpt does for its own reference).

The Flower loop keeps the global model one Array per tensor; only the wire is packed
(`fedsynth.transport`): `configure_train`/`configure_evaluate` pack the instructions, and
`validate_replies` hands the accepted replies to the Flower rule unpacked again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from fedsynth.reply_metrics import RECEIVED_KEYS
from fedsynth.strategies.validation import Rejection, validate_replies
from fedsynth.transport import pack


def _packed(messages: Iterable[Message], arrays: dict[str, np.ndarray]) -> list[Message]:
    """The instructions with `arrays` packed once for all of them (`fedsynth.transport`)."""
    messages = list(messages)
    records = pack(arrays) if messages else {}
    for msg in messages:
        msg.content = RecordDict(dict(msg.content) | records)
    return messages


class ValidatedAggregation(FedAvg):
    """Validate every training reply before the next strategy in the MRO aggregates it.

    A FedAvg subclass so that it composes with every Flower strategy built on FedAvg:
    `class ValidatedFedProx(ValidatedAggregation, FedProx)` validates, then runs FedProx.
    Takes keyword arguments only.

    Args:
        norm_factor (float): A reply whose update norm ||w_i - w_global|| exceeds `norm_factor`
            times the median update norm of the other replies is rejected as an outlier. Must be >
            1; `math.inf` disables the test. Defaults to 10.0.
        norm_floor (float): lower bound on that median, so a round where every update is tiny does
            not reject a site for a merely small one. Defaults to 1e-3.
        evaluate_in_train (bool): train replies carry the sites' scores of the model they
            received (`federation.evaluate-in-train`): validation then requires exactly
            `fedsynth.reply_metrics.RECEIVED_KEYS` among them, else none. Defaults to False.
        evaluate_rounds (Collection[int] | None): the rounds that send evaluate messages; None:
            every round. Defaults to None.
        **kwargs: passed on to the Flower strategy.

    Attributes:
        rejections (list[Rejection]): every rejected reply so far as (server_round, node_id,
            reason), for the server's report.
        replies (dict[tuple[int, str], dict[int, dict]]): (server_round, "train" | "evaluate") ->
            node_id -> {"status": "accepted" | "rejected" | "error", "reason": str, "metrics":
            {...}}: what each site answered, per round, so the server can report ε and status per
            site.
        phase_times (dict[tuple[int, str], dict[str, float]]): (server_round, "train" | "evaluate")
            -> {"start": wall-clock time the phase began (sampling nodes), "sent": the instructions
            were handed to the grid, "replied": the replies were back}: the server's side of a
            round's time line (its metrics line carries it; benchmarks/federation.py reads it).
    """

    def __init__(
        self,
        *,
        norm_factor: float = 10.0,
        norm_floor: float = 1e-3,
        evaluate_in_train: bool = False,
        evaluate_rounds: Collection[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not norm_factor > 1:
            raise ValueError(f"norm_factor must be > 1, got {norm_factor!r}")
        if not norm_floor >= 0:
            raise ValueError(f"norm_floor must be >= 0, got {norm_floor!r}")
        self.norm_factor = norm_factor
        self.norm_floor = norm_floor
        self.received_keys = RECEIVED_KEYS if evaluate_in_train else frozenset()
        self.evaluate_rounds = evaluate_rounds
        self.rejections: list[Rejection] = []
        self.replies: dict[tuple[int, str], dict[int, dict[str, Any]]] = {}
        self.phase_times: dict[tuple[int, str], dict[str, float]] = {}
        self._global_arrays: dict[str, np.ndarray] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the arrays sent this round: the reference for validation and dtypes."""
        start = time.time()
        self._global_arrays = {key: array.numpy() for key, array in arrays.items()}
        messages = _packed(
            super().configure_train(server_round, arrays, config, grid), self._global_arrays
        )
        self.phase_times[(server_round, "train")] = {"start": start, "sent": time.time()}
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.evaluate_rounds is not None and server_round not in self.evaluate_rounds:
            return []
        start = time.time()
        messages = _packed(
            super().configure_evaluate(server_round, arrays, config, grid),
            {key: array.numpy() for key, array in arrays.items()},
        )
        self.phase_times[(server_round, "evaluate")] = {"start": start, "sent": time.time()}
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies (logged, recorded), aggregate the rest with the Flower rule."""
        self._replied(server_round, "train")
        if self._global_arrays is None:
            raise AggregationError("configure_train must run before aggregate_train")
        replies = list(replies)
        errors = [msg for msg in replies if msg.has_error()]
        accepted, rejected = validate_replies(
            server_round,
            [msg for msg in replies if not msg.has_error()],
            self._global_arrays,
            norm_factor=self.norm_factor,
            norm_floor=self.norm_floor,
            weighted_by_key=self.weighted_by_key,
            received_keys=self.received_keys,
        )
        self.rejections.extend(rejected)
        self._record(server_round, "train", replies, rejected)
        arrays, metrics = super().aggregate_train(server_round, errors + accepted)
        return self._as_global_dtypes(arrays), metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Flower's evaluation aggregate, after noting each site's own metrics."""
        self._replied(server_round, "evaluate")
        replies = list(replies)
        self._record(server_round, "evaluate", replies, [])
        return super().aggregate_evaluate(server_round, replies)

    def _replied(self, server_round: int, phase: str) -> None:
        self.phase_times.setdefault((server_round, phase), {})["replied"] = time.time()

    def _record(
        self, server_round: int, phase: str, replies: list[Message], rejected: list[Rejection]
    ) -> None:
        reasons = {r.node_id: r.reason for r in rejected}
        log: dict[int, dict[str, Any]] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                log[node] = {"status": "error", "reason": msg.error.reason, "metrics": {}}
                continue
            metrics = {
                k: v
                for record in msg.content.metric_records.values()
                for k, v in record.items()
                if isinstance(v, (int, float))
            }
            status = "rejected" if node in reasons else "accepted"
            log[node] = {"status": status, "reason": reasons.get(node, ""), "metrics": metrics}
        self.replies[(server_round, phase)] = log

    def _as_global_dtypes(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """Cast the aggregate back to the global dtypes.

        Flower's rules promote dtypes (weighted means turn int64 buffers such as BatchNorm's
        `num_batches_tracked` into float64; FedAdam returns float64 for float32 weights). Sites
        load the aggregate into their models and send back the original dtype, which the next
        round's dtype check would otherwise reject from every site.
        """
        if arrays is None or self._global_arrays is None:
            return arrays
        for key, array in list(arrays.items()):
            dtype = self._global_arrays[key].dtype
            if array.dtype != str(dtype):
                value = array.numpy()
                if np.issubdtype(dtype, np.integer):
                    value = np.rint(value)
                arrays[key] = Array(np.asarray(value.astype(dtype)))
        return arrays
