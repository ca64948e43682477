"""Secure aggregation (SecAgg+ through Flower's legacy stack) with the real ClientApp and
ServerApp logic, in process: its aggregate is the weighted FedAvg of what the sites computed,
and a round that cannot complete fails loudly instead of Flower's silent "halted"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset
from flower_grid import ClientAppGrid, set_task_identity
from flwr.app import Error, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from safetensors.torch import load_file
from secagg_oracle import aggregate_bound, weighted_mean
from test_federation import data_root, make  # noqa: F401 — the module's tiny 3-site data

from fedsynth.client.app import app as client_app
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.server.app import run_federation
from fedsynth.server.secure import SecureAggregationFailed


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


def _run(cfg, sites, tamper=None) -> ClientAppGrid:
    nodes = [{"partition-id": i, "num-partitions": len(sites)} for i in range(len(sites))]
    grid = ClientAppGrid(client_app, nodes, tamper, run_config=cfg.to_flat())
    run_federation(grid, cfg, sites, {i: s.site for i, s in enumerate(sites)})
    return grid


@pytest.fixture(scope="module")
def unequal_root(tmp_path_factory) -> Path:
    """Three sites of very different sizes, so a weighted and an unweighted mean differ."""
    root = tmp_path_factory.mktemp("unequal") / "data"
    return write_tiny_dataset(root, sites=("hospA", "hospB", "hospC"), n=(3, 5, 10))


def test_secure_aggregate_equals_weighted_fedavg(unequal_root: Path, tmp_path: Path) -> None:
    cfg, sites = make(
        unequal_root,
        tmp_path / "run",
        **{"federation.num-rounds": 1, "federation.secure-aggregation": True},
    )
    grid = _run(cfg, sites)
    out = tmp_path / "run"
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(row["sites"]) == {"hospA", "hospB", "hospC"}
    assert all(
        s["train_status"] == "accepted" and "evaluate/psnr_brain" in s
        for s in row["sites"].values()
    )
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    # The legacy path carried the masked vectors: no plain weights in any reply.
    assert any(RECORD_KEY_CONFIGS in m.content.config_records for m in grid.instructions)

    ckpt = load_checkpoint(out / "checkpoints" / "round-0001.safetensors")
    aggregate, shared = ckpt.model.state_dict(), ckpt.meta["shared_keys"]
    counts, updates = [], []
    for site in sites:  # what each site computed and would have sent in the clear
        state_dir = out / "sites" / site.site
        updates.append(load_file(str(state_dir / "model.safetensors")))
        trained = json.loads((state_dir / "rounds.jsonl").read_text().splitlines()[0])
        counts.append(trained["metrics"]["num-examples"])
    assert len(set(counts)) == 3, counts
    # SecAgg+'s quantisation error, derived in secagg_oracle.aggregate_bound.
    bound = aggregate_bound(counts, updates, shared)

    def mean(weights: list[float], key: str) -> np.ndarray:
        return weighted_mean(weights, updates, key)

    worst = max(float(np.abs(aggregate[k].numpy() - mean(counts, k)).max()) for k in shared)
    assert worst <= bound, (worst, bound)
    # The check can tell a weighted mean from an unweighted one at this bound.
    unweighted = max(float(np.abs(mean([1, 1, 1], k) - mean(counts, k)).max()) for k in shared)
    assert unweighted > 3 * bound, (unweighted, bound)


def test_failed_secure_round_is_a_failure(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """hospB drops out while masked vectors are collected: with 2 of 3 sites left SecAgg+ could
    still unmask, so two sites are used and the round cannot complete."""
    cfg, sites = make(
        data_root,
        tmp_path / "run",
        **{"federation.num-rounds": 1, "federation.secure-aggregation": True},
    )

    def drop_b(node: int, instruction: Message, reply: Message) -> Message:
        configs = instruction.content.config_records.get(RECORD_KEY_CONFIGS)
        if node == 101 and configs and configs[Key.STAGE] == Stage.COLLECT_MASKED_VECTORS:
            return Message(Error(code=0, reason="hospB went offline"), reply_to=instruction)
        return reply

    two = sites[:2]
    with pytest.raises(SecureAggregationFailed, match="round 1"):
        _run(cfg, two, drop_b)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "secure aggregation halted" in status["reason"]
    assert not (tmp_path / "run" / "checkpoints" / "round-0001.safetensors").exists()
