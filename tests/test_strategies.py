"""Strategies on real Flower 1.41 Messages: aggregation rules, update validation, registry.

Replies are built the way a ClientApp builds them: `Message(content, reply_to=instruction)`,
where the instruction is a real train Message. Creating an instruction Message needs the task
identity the ServerApp runtime sets (run id, node id, task id), so a fixture sets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest
from flower_grid import FakeGrid, set_task_identity
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedsynth.strategies import (
    GeneratorFedAvg,
    ValidatedAggregation,
    ValidatedFedAdam,
    ValidatedFedProx,
    build_strategy,
    validate_replies,
)
from fedsynth.transport import pack, unpack

Weights = dict[str, np.ndarray]

# A generator-only key set: discriminators stay at the sites (FedMed-GAN); the int64 buffer
# stands for BatchNorm's num_batches_tracked, whose dtype Flower's averaging would change.
GLOBAL: Weights = {
    "G_AB.model.1.weight": np.zeros((4, 3), np.float32),
    "G_AB.model.1.bias": np.zeros(4, np.float32),
    "G_BA.model.1.weight": np.zeros((4, 3), np.float32),
    "G_BA.model.2.num_batches_tracked": np.array(10, np.int64),
}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


def instruction(node_id: int, message_type: str = MessageType.TRAIN) -> Message:
    return Message(RecordDict(), dst_node_id=node_id, message_type=message_type)


def reply_content(weights: Weights, num_examples: float, **metrics: float) -> RecordDict:
    return RecordDict(
        {
            **pack(weights),
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
        }
    )


def reply(node_id: int, weights: Weights, num_examples: float = 10, **metrics: float) -> Message:
    """A train reply from `node_id`, as a ClientApp returns it."""
    return Message(reply_content(weights, num_examples, **metrics), reply_to=instruction(node_id))


def shifted(delta: float, base: Weights = GLOBAL) -> Weights:
    """Every float tensor moved by `delta`; integer buffers unchanged."""
    return {
        k: (v + np.asarray(delta, v.dtype)) if np.issubdtype(v.dtype, np.floating) else v.copy()
        for k, v in base.items()
    }


def as_numpy(record: ArrayRecord) -> Weights:
    return {k: a.numpy() for k, a in record.items()}


def configured(strategy: ValidatedAggregation, weights: Weights = GLOBAL) -> list[Message]:
    """Run round 1's configure_train (which records the global arrays) on three nodes."""
    grid = FakeGrid([11, 12, 13], client=lambda node, msg: RecordDict())
    arrays = ArrayRecord({k: Array(v) for k, v in weights.items()})
    return list(strategy.configure_train(1, arrays, ConfigRecord(), grid))


def test_fedavg_is_the_num_examples_weighted_mean() -> None:
    strategy = GeneratorFedAvg()
    configured(strategy)
    updates = {11: (shifted(0.1), 1, 1.0), 12: (shifted(0.2), 2, 2.0), 13: (shifted(-0.3), 5, 4.0)}
    replies = [reply(node, w, n, loss=loss) for node, (w, n, loss) in updates.items()]

    arrays, metrics = strategy.aggregate_train(1, replies)

    expected_shift = (1 * 0.1 + 2 * 0.2 + 5 * -0.3) / 8
    out = as_numpy(arrays)
    for key, value in shifted(expected_shift).items():
        np.testing.assert_allclose(out[key], value, rtol=1e-6, atol=1e-7)
        assert out[key].dtype == value.dtype  # int64 buffer stays int64, float32 stays float32
    assert metrics["loss"] == pytest.approx((1 * 1.0 + 2 * 2.0 + 5 * 4.0) / 8)
    assert strategy.rejections == []


def test_partial_key_sets_aggregate_to_exactly_those_keys() -> None:
    """Generator-only and FedBN-style (norm layers kept local) replies: just the keys sent."""
    generator_ab = {k: v for k, v in GLOBAL.items() if k.startswith("G_AB.")}
    strategy = GeneratorFedAvg()
    configured(strategy, generator_ab)

    arrays, _ = strategy.aggregate_train(
        1, [reply(11, shifted(1.0, generator_ab)), reply(12, shifted(3.0, generator_ab))]
    )

    assert set(arrays.keys()) == set(generator_ab)
    np.testing.assert_allclose(arrays["G_AB.model.1.bias"].numpy(), np.full(4, 2.0))


def _nan(w: Weights) -> RecordDict:
    w["G_AB.model.1.weight"][0, 0] = np.nan
    return reply_content(w, 10)


def _inf(w: Weights) -> RecordDict:
    w["G_AB.model.1.bias"][1] = np.inf
    return reply_content(w, 10)


def _wrong_shape(w: Weights) -> RecordDict:
    w["G_AB.model.1.weight"] = np.zeros((3, 4), np.float32)
    return reply_content(w, 10)


def _wrong_dtype(w: Weights) -> RecordDict:
    w["G_AB.model.1.weight"] = w["G_AB.model.1.weight"].astype(np.float64)
    return reply_content(w, 10)


def _missing_key(w: Weights) -> RecordDict:
    del w["G_BA.model.1.weight"]
    return reply_content(w, 10)


def _extra_key(w: Weights) -> RecordDict:
    w["D_A.model.0.weight"] = np.zeros((2, 2), np.float32)  # a discriminator leaving its site
    return reply_content(w, 10)


def _huge_norm(w: Weights) -> RecordDict:
    return reply_content(shifted(100.0), 10)


def _zero_examples(w: Weights) -> RecordDict:
    return reply_content(w, 0)


def _no_arrays(w: Weights) -> RecordDict:
    return RecordDict({"metrics": MetricRecord({"num-examples": 10})})


def _other_metric_keys(w: Weights) -> RecordDict:
    return reply_content(w, 10, unexpected=1.0)


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (_nan, "NaN or inf"),
        (_inf, "NaN or inf"),
        (_wrong_shape, "has shape (3, 4), global is (4, 3)"),
        (_wrong_dtype, "has dtype float64, global is float32"),
        (_missing_key, "missing keys ['G_BA.model.1.weight']"),
        (_extra_key, "extra keys ['D_A.model.0.weight']"),
        (_huge_norm, "update norm"),
        (_zero_examples, "'num-examples' must be a finite number > 0"),
        (_no_arrays, "expected one ArrayRecord and one MetricRecord, got 0 and 1"),
        (_other_metric_keys, "metric keys"),
    ],
)
def test_a_bad_update_is_rejected_with_a_logged_reason_and_the_round_goes_on(
    poison: Callable[[Weights], RecordDict], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    strategy = GeneratorFedAvg()
    configured(strategy)
    bad = Message(poison(shifted(0.5)), reply_to=instruction(13))
    replies = [reply(11, shifted(0.1)), reply(12, shifted(0.3)), bad]

    with caplog.at_level(logging.WARNING, logger="fedsynth.strategies"):
        arrays, _ = strategy.aggregate_train(4, replies)

    np.testing.assert_allclose(as_numpy(arrays)["G_AB.model.1.bias"], np.full(4, 0.2), rtol=1e-6)
    ((round_, node, why),) = strategy.rejections
    assert (round_, node) == (4, 13) and reason in why
    (record,) = [r for r in caplog.records if r.name.startswith("fedsynth.")]
    assert record.levelno == logging.WARNING
    assert "node 13" in record.getMessage() and reason in record.getMessage()


def test_all_rejected_leaves_the_global_unchanged_and_error_replies_are_skipped() -> None:
    strategy = GeneratorFedAvg()
    configured(strategy)
    error_reply = Message(Error(code=0, reason="site crashed"), reply_to=instruction(11))
    replies = [error_reply, Message(_nan(shifted(0.1)), reply_to=instruction(12))]

    assert strategy.aggregate_train(1, replies) == (None, None)
    assert [node for _, node, _ in strategy.rejections] == [12]


def test_norm_floor_keeps_a_small_update_when_all_others_are_zero() -> None:
    replies = [reply(11, shifted(0.0)), reply(12, shifted(0.0)), reply(13, shifted(1e-4))]
    accepted, rejected = validate_replies(1, replies, GLOBAL, norm_factor=10.0, norm_floor=1e-3)
    assert len(accepted) == 3 and rejected == []
    accepted, rejected = validate_replies(1, replies, GLOBAL, norm_factor=10.0, norm_floor=0.0)
    assert [r.node_id for r in rejected] == [13]


def test_two_sites_still_catch_a_huge_update() -> None:
    """The median of the *other* replies is the reference, so n=2 works."""
    accepted, rejected = validate_replies(
        1, [reply(11, shifted(0.1)), reply(12, shifted(50.0))], GLOBAL
    )
    assert [m.metadata.src_node_id for m in accepted] == [11]
    assert [r.node_id for r in rejected] == [12]


@pytest.mark.parametrize("name", ["median", "trimmed-mean"])
def test_robust_rules_resist_an_outlier_that_passes_validation(name: str) -> None:
    strategy = build_strategy(name)  # trimmed mean: beta 0.2 of 5 replies cuts 1 at each end
    configured(strategy)
    honest = [0.9, 1.0, 1.05, 1.1]
    replies = [reply(10 + i, shifted(d)) for i, d in enumerate(honest)]
    replies.append(reply(20, shifted(3.0)))  # norm 3x the others: passes the 10x outlier test

    arrays, _ = strategy.aggregate_train(1, replies)

    assert strategy.rejections == []
    bias = as_numpy(arrays)["G_AB.model.1.bias"]
    assert np.all((bias >= min(honest)) & (bias <= max(honest)))  # the plain mean is 1.41
    assert arrays["G_BA.model.2.num_batches_tracked"].dtype == "int64"


def test_fedadam_moves_the_weights_towards_the_mean_update() -> None:
    strategy = ValidatedFedAdam(eta=0.1)
    configured(strategy)
    arrays, _ = strategy.aggregate_train(
        1, [reply(11, shifted(0.5)), reply(12, shifted(1.0)), reply(13, shifted(-0.3))]
    )
    out = as_numpy(arrays)
    for key in ("G_AB.model.1.weight", "G_AB.model.1.bias", "G_BA.model.1.weight"):
        assert np.all(out[key] > 0)  # mean update is +0.4
        assert out[key].dtype == np.float32  # Flower's FedAdam alone returns float64


def test_fedprox_sends_proximal_mu_to_the_sites() -> None:
    messages = configured(ValidatedFedProx(proximal_mu=0.01))
    assert [m.content["config"]["proximal-mu"] for m in messages] == [0.01] * 3


def test_registry_builds_each_strategy_with_its_knobs() -> None:
    assert isinstance(build_strategy("fedavg", min_train_nodes=3), GeneratorFedAvg)
    assert build_strategy("fedprox", proximal_mu=0.1).proximal_mu == 0.1
    assert build_strategy("fedadam", eta=0.05, beta_1=0.5).eta == 0.05
    assert build_strategy("median", norm_factor=5.0).norm_factor == 5.0
    assert build_strategy("trimmed-mean", beta=0.34).beta == 0.34
    with pytest.raises(ValueError, match="unknown strategy 'krum'"):
        build_strategy("krum")
    with pytest.raises(TypeError):
        build_strategy("fedavg", proximal_mu=0.1)
    with pytest.raises(ValueError, match="norm_factor"):
        build_strategy("fedavg", norm_factor=1.0)


def test_start_runs_rounds_through_a_fake_grid_and_survives_a_poisoned_site() -> None:
    """The whole Flower loop: 2 rounds, node 13 sends NaN in round 2."""

    def client(node: int, msg: Message) -> RecordDict:
        if msg.metadata.message_type == MessageType.EVALUATE:
            return RecordDict({"metrics": MetricRecord({"num-examples": 5, "mae": 0.1})})
        weights = shifted(0.1, unpack(msg.content))
        if node == 13 and msg.content["config"]["server-round"] == 2:
            return _nan(weights)
        return reply_content(weights, 10)

    strategy = build_strategy("fedavg", min_available_nodes=3, min_train_nodes=3)
    result = strategy.start(
        grid=FakeGrid([11, 12, 13], client),
        initial_arrays=ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}),
        num_rounds=2,
        timeout=10,
    )

    np.testing.assert_allclose(result.arrays["G_AB.model.1.bias"].numpy(), np.full(4, 0.2))
    assert [(r.server_round, r.node_id) for r in strategy.rejections] == [(2, 13)]
    assert result.evaluate_metrics_clientapp[2]["mae"] == pytest.approx(0.1)
