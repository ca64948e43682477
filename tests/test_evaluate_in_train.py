"""`federation.evaluate-in-train`: one message per site and round. A site scores the global
model it received inside its train reply, so round r's scores are round r-1's model's; only
the last round's model is scored by an evaluate message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flower_grid import set_task_identity
from flwr.app import Message, MessageType, MetricRecord, RecordDict
from payload_oracle import TRAIN_METRICS
from test_federation import data_root, make, run  # noqa: F401 — the module's tiny 3-site data

from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.strategies import validate_replies
from fedsynth.transport import pack

# Written out here, not read from the code: what a train reply may add to its training metrics.
IN_TRAIN = {
    "received-num-examples",
    "received-psnr_brain",
    "received-ssim_brain",
    "received-mae_brain",
    "received-psnr_whole",
    "received-ssim_whole",
    "received-mae_whole",
}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


def _psnr(model, site, source: str, target: str) -> float:
    return evaluate_translation(model, site.test, source, target).aggregate()["psnr_brain"]


def test_a_round_is_one_message_per_site_and_scores_the_model_received(
    data_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    cfg, sites = make(data_root, out, **{"federation.evaluate-in-train": True})
    grid = run(cfg, sites)

    # Messages: a train per site and round, evaluates only after the last round's training.
    kinds = [m.metadata.message_type for m in grid.instructions]
    assert sorted(kinds) == ["evaluate"] * 3 + ["train"] * 6
    for site in sites:  # what each site handled, and in which round, by its own timing log
        log = SiteStateDir(out / "sites" / site.site).timings()
        calls = [(t["phase"], t["round"]) for t in log]
        assert calls == [("train", 1), ("train", 2), ("evaluate", 2)], site.site

    # Every train reply carries exactly the allowed evaluation metrics on top of training's.
    for _, reply in grid.replies:
        if reply.metadata.message_type == "train":
            metrics = dict(reply.content["metrics"])
            assert set(metrics) - TRAIN_METRICS == IN_TRAIN

    # metrics.jsonl: round r's site scores are those of round r-1's model, labelled as such.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["received_round"] for r in rows] == [0, 1]
    m = cfg.model
    models = [cfg.initial_model()]
    models.append(load_checkpoint(out / "checkpoints" / "round-0001.safetensors").model)
    final = load_checkpoint(out / "checkpoints" / "round-0002.safetensors").model
    for row, model in zip(rows, models, strict=True):
        for site in sites:
            scores = row["sites"][site.site]
            expected = _psnr(model, site, m.source, m.target)
            assert math.isfinite(expected)
            assert scores["received/psnr_brain"] == pytest.approx(expected, abs=1e-4)
    assert not any(k.startswith("evaluate/") for s in rows[0]["sites"].values() for k in s)
    for site in sites:  # the final model is still scored, by the last round's evaluate message
        scores = rows[-1]["sites"][site.site]
        expected = _psnr(final, site, m.source, m.target)
        assert scores["evaluate/psnr_brain"] == pytest.approx(expected, abs=1e-4)


GLOBAL = {"G.a.weight": np.zeros((2, 3), np.float32)}


def _reply(node: int, **metrics: float) -> Message:
    instruction = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = {**pack({"G.a.weight": np.full((2, 3), 0.1, np.float32)})}
    content["metrics"] = MetricRecord({"num-examples": 10.0, "site-id": float(node), **metrics})
    return Message(RecordDict(content), reply_to=instruction)


def test_validation_accepts_exactly_the_allowed_evaluation_metrics_in_a_train_reply() -> None:
    full = dict.fromkeys(IN_TRAIN, 1.0)
    missing = {k: v for k, v in full.items() if k != "received-mae_whole"}
    replies = [
        _reply(11, **full),
        _reply(12, **full),
        _reply(13, **missing),
        _reply(14, **full, **{"received-lpips": 0.3}),
    ]
    accepted, rejected = validate_replies(1, replies, GLOBAL, received_keys=IN_TRAIN)
    assert [m.metadata.src_node_id for m in accepted] == [11, 12]
    assert [(r.node_id, r.reason) for r in rejected] == [
        (13, "evaluation metrics: missing ['received-mae_whole']"),
        (14, "evaluation metrics: unexpected ['received-lpips']"),
    ]
    # Without evaluate-in-train, a train reply carries no evaluation metric at all.
    plain = [_reply(11), _reply(12), _reply(13, **full)]
    accepted, rejected = validate_replies(1, plain, GLOBAL)
    assert [m.metadata.src_node_id for m in accepted] == [11, 12]
    assert [r.node_id for r in rejected] == [13] and "unexpected" in rejected[0].reason


def test_secure_aggregation_refuses_evaluate_in_train() -> None:
    flat = {"federation.secure-aggregation": True, "federation.evaluate-in-train": True}
    with pytest.raises(ValueError, match="evaluate-in-train is not supported"):
        FedsynthConfig.from_flat(FedsynthConfig().to_flat() | flat)
