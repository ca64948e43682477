"""Validation of every client update before a strategy aggregates it.

One bad site is enough to break a federated GAN: a NaN, a tensor of the wrong shape, or a
diverged generator whose update is orders of magnitude larger than everyone else's poisons the
global model for all hospitals. Robust aggregation (coordinate-wise median / trimmed mean,
Yin et al. 2018) bounds the damage of bad *values*, not of bad *structure*, and Flower's own
reply check (`validate_message_reply_consistency`) raises `InconsistentMessageReplies`, which
ends the whole ServerApp. So each training reply is checked here against the global arrays sent
that round, and a failing reply is dropped with a logged reason while the round goes on.

Rules, in order; the first that fails is the reply's reason:

1. Structure: exactly one `ArrayRecord` and one `MetricRecord`, whose `num-examples` (the
   weighting key) is a finite number > 0 — a zero or negative weight would divide by zero or
   invert the average.
2. Names: the tensors unpack (`fedsynth.transport.unpack`: an index and packed arrays that
   agree, else the reason names the tensor or packed array at fault) and their names equal
   the global key set (missing and extra keys are named).
3. Arrays: each tensor has the global array's shape and dtype (checked on the decoded packed
   data, not only the index) and holds only finite values.
4. Layout: the metrics prefixed `received-` (a train reply's scores of the model the site
   received, `fedsynth.reply_metrics`) are exactly `received_keys` (none unless the run
   evaluates in train replies; missing and extra ones are named), and the names of the two
   records and the set of metric keys agree with the most common layout among the remaining
   replies (Flower aborts the run when they differ).
5. Norm outlier: with d_i = ||w_i - w_global||_2 over all shared tensors, reply i is rejected
   when d_i > norm_factor * max(median{d_j : j != i}, norm_floor). Comparing with the median of
   the *other* replies keeps an outlier from inflating its own reference and still works with
   two sites; `norm_floor` keeps a round where every update is tiny (or zero) from rejecting a
   site for a merely small update. A lone reply has no peers, so rule 5 does not apply to it.

Accepted replies come back unpacked (one Array per tensor), as Flower's rules aggregate them.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fedsynth.reply_metrics import RECEIVED
from fedsynth.transport import ARRAYS, PackingError, unpack

logger = logging.getLogger(__name__)

WEIGHT_KEY = "num-examples"


class Rejection(NamedTuple):
    """One dropped reply: the round, the sending node and why."""

    server_round: int
    node_id: int
    reason: str


def _names(keys: set[str]) -> str:
    """A short, sorted list of key names for a log line (large models have many keys)."""
    shown = sorted(keys)[:5]
    return repr(shown)[:-1] + (f", ... ({len(keys)} total)]" if len(keys) > 5 else "]")


def _structure_error(msg: Message, weighted_by_key: str) -> str | None:
    """Rule 1: one ArrayRecord, one MetricRecord, a finite positive scalar weight."""
    content = msg.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return (
            f"expected one ArrayRecord and one MetricRecord, got {len(content.array_records)} "
            f"and {len(content.metric_records)}"
        )
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weighted_by_key)
    if isinstance(weight, list) or weight is None:
        return f"MetricRecord lacks a scalar {weighted_by_key!r}"
    if not (math.isfinite(weight) and weight > 0):
        return f"{weighted_by_key!r} must be a finite number > 0, got {weight!r}"
    return None


def _update_norm(
    msg: Message, reference: Mapping[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]] | str:
    """Rules 2-3: the update's L2 distance from the global arrays and its tensors, or why it
    is invalid."""
    try:
        arrays = unpack(msg.content)
    except PackingError as err:
        return str(err)
    keys, expected = set(arrays), set(reference)
    if keys != expected:
        problems = []
        if expected - keys:
            problems.append(f"missing keys {_names(expected - keys)}")
        if keys - expected:
            problems.append(f"extra keys {_names(keys - expected)}")
        return "; ".join(problems)
    squared = 0.0
    for key, value in arrays.items():
        ref = reference[key]
        if value.shape != ref.shape:
            return f"array {key!r} has shape {value.shape}, global is {ref.shape}"
        if value.dtype != ref.dtype:
            return f"array {key!r} has dtype {value.dtype}, global is {ref.dtype}"
        if not np.isfinite(value).all():
            return f"array {key!r} holds NaN or inf"
        squared += float(np.sum((value.astype(np.float64) - ref) ** 2))
    if not math.isfinite(squared):
        return "update norm overflows float64"
    return math.sqrt(squared), arrays


def _unpacked(msg: Message, arrays: Mapping[str, np.ndarray]) -> Message:
    """A copy of reply `msg` carrying `arrays` one Array per tensor (what Flower aggregates)."""
    copied = copy.copy(msg)
    records = {k: r for k, r in msg.content.items() if k not in msg.content.config_records}
    records[ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    copied.content = RecordDict(records)
    return copied


def _evaluation_error(msg: Message, expected: Collection[str]) -> str | None:
    """Rule 4, first part: a train reply's evaluation metrics are exactly the allowed ones."""
    metrics = next(iter(msg.content.metric_records.values()))
    keys, wanted = {k for k in metrics if k.startswith(RECEIVED)}, set(expected)
    if keys == wanted:
        return None
    problems = []
    if wanted - keys:
        problems.append(f"missing {_names(wanted - keys)}")
    if keys - wanted:
        problems.append(f"unexpected {_names(keys - wanted)}")
    return "evaluation metrics: " + "; ".join(problems)


def _layout(msg: Message) -> tuple[str, str, frozenset[str]]:
    """Rule 4: what Flower requires to agree across replies."""
    content = msg.content
    (array_name,) = content.array_records
    ((metric_name, metrics),) = content.metric_records.items()
    return array_name, metric_name, frozenset(metrics)


def _layout_difference(
    layout: tuple[str, str, frozenset[str]], majority: tuple[str, str, frozenset[str]]
) -> str:
    """Rule 4's reason, naming what differs from the other replies."""
    if layout[:2] != majority[:2]:
        return f"record names {layout[:2]} differ from the other replies' {majority[:2]}"
    return f"metric keys {sorted(layout[2])} differ from the other replies' {sorted(majority[2])}"


def validate_replies(
    server_round: int,
    replies: Sequence[Message],
    global_arrays: Mapping[str, np.ndarray],
    *,
    norm_factor: float = 10.0,
    norm_floor: float = 1e-3,
    weighted_by_key: str = WEIGHT_KEY,
    received_keys: Collection[str] = frozenset(),
) -> tuple[list[Message], list[Rejection]]:
    """Split training replies (all carrying content) into accepted ones and logged rejections.

    `global_arrays` are the arrays sent to the sites this round, decoded. Each rejection is
    logged at WARNING with the node id and reason; see the module docstring for the rules.
    Accepted replies are returned unpacked (copies; the replies given are left as received).
    """
    rejections: list[Rejection] = []

    def reject(msg: Message, reason: str) -> None:
        node = msg.metadata.src_node_id
        logger.warning("round %d: rejected update from node %d: %s", server_round, node, reason)
        rejections.append(Rejection(server_round, node, reason))

    norms: dict[int, float] = {}
    decoded: dict[int, dict[str, np.ndarray]] = {}
    for i, msg in enumerate(replies):
        outcome = _structure_error(msg, weighted_by_key) or _update_norm(msg, global_arrays)
        if isinstance(outcome, str):
            reject(msg, outcome)
        else:
            norms[i], decoded[i] = outcome

    for i in list(norms):
        problem = _evaluation_error(replies[i], received_keys)
        if problem:
            reject(replies[i], problem)
            del norms[i]

    layouts = {i: _layout(replies[i]) for i in norms}
    if layouts:
        majority = Counter(layouts.values()).most_common(1)[0][0]
        for i, layout in layouts.items():
            if layout != majority:
                reject(replies[i], _layout_difference(layout, majority))
                del norms[i]

    accepted: list[Message] = []
    for i, norm in norms.items():
        others = [d for j, d in norms.items() if j != i]
        limit = norm_factor * max(float(np.median(others)), norm_floor) if others else math.inf
        if norm > limit:
            reject(
                replies[i],
                f"update norm {norm:.4g} exceeds {norm_factor:g} x max(median of other "
                f"replies, floor {norm_floor:g}) = {limit:.4g}",
            )
        else:
            accepted.append(_unpacked(replies[i], decoded[i]))
    return accepted, rejections
