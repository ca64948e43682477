"""Dropout and return, in process: a site that is offline for a round is left out of it, and
when it comes back it trains the next round from the current global model with its own state
(step counter, optimizer, accountant) exactly where it left it. A round asked twice (the
server restarted before checkpointing it) is answered from the site's log, not retrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flower_grid import ClientAppGrid, set_task_identity
from flwr.app import Message
from test_federation import data_root, make  # noqa: F401 — the module's tiny 3-site data

from fedsynth.client.app import app as client_app
from fedsynth.client.rounds import arrays_digest
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.server.app import run_federation
from fedsynth.transport import unpack


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


def test_site_offline_for_a_round_rejoins_with_its_state(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 3})

    def flaky(msg: Message, context):
        offline = context.node_config["partition-id"] == 2 and msg.metadata.message_type == "train"
        if offline and msg.content["config"]["server-round"] == 2:
            raise ConnectionError("hospC is offline")
        return client_app(msg, context)

    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    run_federation(
        ClientAppGrid(flaky, nodes, run_config=cfg.to_flat()),
        cfg,
        sites,
        {i: s.site for i, s in enumerate(sites)},
    )
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[1]["sites"]["hospC"]["train_status"].startswith("error")
    assert rows[2]["sites"]["hospC"]["train_status"] == "accepted"
    steps = cfg.federation.local_steps
    assert [r["step"] for r in SiteStateDir(out / "sites" / "hospA").rounds()] == [
        steps,
        2 * steps,
        3 * steps,
    ]
    back = SiteStateDir(out / "sites" / "hospC").rounds()
    assert [r["step"] for r in back] == [steps, 2 * steps]  # continued, not restarted
    ckpt2 = load_checkpoint(out / "checkpoints" / "round-0002.safetensors")
    state = ckpt2.model.state_dict()
    assert back[1]["input"] == arrays_digest(
        {k: state[k].numpy() for k in ckpt2.meta["shared_keys"]}
    )
    assert rows[2]["sites"]["hospC"]["train/epsilon"] > rows[0]["sites"]["hospC"]["train/epsilon"]


def test_a_round_asked_twice_is_replayed_not_retrained(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 1})
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    first = ClientAppGrid(client_app, nodes, run_config=cfg.to_flat())
    run_federation(first, cfg, sites, {i: s.site for i, s in enumerate(sites)})
    # The same instruction again, as a resumed server would send it.
    instruction = next(m for m in first.instructions if m.metadata.message_type == "train")
    node = instruction.metadata.dst_node_id
    state_dir = tmp_path / "run" / "sites" / sites[node - 100].site
    accountant = (state_dir / "accountant.json").read_text()
    again = ClientAppGrid(client_app, nodes, run_config=cfg.to_flat()).answer(instruction)
    original = next(r for n, r in first.replies if n == node and r.metadata.message_type == "train")
    assert len(SiteStateDir(state_dir).rounds()) == 1
    assert (state_dir / "accountant.json").read_text() == accountant  # nothing charged twice
    assert dict(again.content["metrics"]) == dict(original.content["metrics"])
    replayed = unpack(again.content)
    for key, array in unpack(original.content).items():
        assert (replayed[key] == array).all()
