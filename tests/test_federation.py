"""The federation end to end with the real ClientApp and ServerApp logic, in process: rounds,
checkpoints, the payload audit, resume, poisoned updates and exhausted budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset
from flower_grid import ClientAppGrid, set_task_identity
from flwr.app import Message, RecordDict
from payload_oracle import expected_shared_keys, unexpected_metrics
from safetensors.torch import load_file

from fedsynth.client.app import app as client_app
from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.models import build_model
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.server.app import run_federation
from fedsynth.simulations.scenarios import TINY_MODEL
from fedsynth.transport import pack, unpack

TINY = TINY_MODEL | {
    "privacy.unit": "slice",
    "federation.num-rounds": 2,
    "federation.local-steps": 2,
}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_tiny_dataset(
        tmp_path_factory.mktemp("fed") / "data", sites=("hospA", "hospB", "hospC"), n=4
    )


def make(data_root: Path, run_dir: Path, **flat) -> tuple[FedsynthConfig, list]:
    cfg = FedsynthConfig.from_flat(
        FedsynthConfig().to_flat()
        | TINY
        | {
            "data.root": str(data_root),
            "data.cache-dir": str(data_root.parent / "cache"),
            "federation.run-dir": str(run_dir),
        }
        | flat
    )
    sites, _ = prepare_sites(cfg.data, progress=False)
    return cfg, sites


def run(cfg, sites, node_configs=None, tamper=None) -> ClientAppGrid:
    nodes = node_configs or [
        {"partition-id": i, "num-partitions": len(sites)} for i in range(len(sites))
    ]
    grid = ClientAppGrid(client_app, nodes, tamper, run_config=cfg.to_flat())
    run_federation(grid, cfg, sites, {i: s.site for i, s in enumerate(sites)})
    return grid


def test_rounds_write_checkpoints_metrics_and_report(data_root: Path, tmp_path: Path) -> None:
    cfg, sites = make(data_root, tmp_path / "run")
    run(cfg, sites)
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["federation.num-rounds"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert set(rows[-1]["sites"]) == {"hospA", "hospB", "hospC"}
    for site in rows[-1]["sites"].values():
        assert site["train_status"] == "accepted"
        assert 0 < site["train/epsilon"] < math.inf
        assert "evaluate/psnr_brain" in site
    assert math.isfinite(rows[-1]["server"]["psnr_brain"])
    ckpt = load_checkpoint(out / "checkpoints" / "round-0002.safetensors")
    assert ckpt.meta["round"] == 2 and ckpt.meta["config_digest"] == cfg.digest()
    assert (out / "samples" / "round-0002.png").is_file()
    report = (out / "report.md").read_text()
    assert "| federated |" in report and "figures/epsilon.png" in report
    assert (out / "figures" / "epsilon.png").is_file()
    # Each site's private state is on the site, not in the server's checkpoint folder.
    for name in ("hospA", "hospB", "hospC"):
        assert (out / "sites" / name / "accountant.json").is_file()


@pytest.mark.parametrize(
    ("flat", "groups", "norm_local"),
    [
        ({}, ("generators",), False),
        ({"federation.share": "all"}, ("generators", "discriminators"), False),
        ({"federation.keep-norm-local": True}, ("generators",), True),
    ],
    ids=["generators", "all", "fedbn"],
)
def test_payload_audit(data_root: Path, tmp_path: Path, flat, groups, norm_local) -> None:
    """Every array in a real reply is a shared parameter of this site, by the test's own list of
    network prefixes; every metric name is on the allow-list; nothing else is sent."""
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 1, **flat})
    grid = run(cfg, sites)
    model = build_model(cfg.model)
    state = model.state_dict()
    expected = expected_shared_keys(model, "cyclegan", groups, norm_local)
    assert expected and (not norm_local or not any(".norm." in k for k in expected))
    replies = {
        phase: [(n, r) for n, r in grid.replies if r.metadata.message_type == phase]
        for phase in ("train", "evaluate")
    }
    assert len(replies["train"]) == len(replies["evaluate"]) == 3
    for node, reply in replies["train"]:
        assert set(reply.content.array_records) == {"arrays"}
        # The index names the packed tensors and their layout only.
        assert set(reply.content.config_records) == {"index"}
        assert set(reply.content["index"]) == {"names", "dtypes", "ndims", "dims"}
        arrays = unpack(reply.content)
        assert list(arrays) == expected
        site = sites[node - 100].site
        local = load_file(str(tmp_path / "run" / "sites" / site / "model.safetensors"))
        for key, value in arrays.items():
            assert value.shape == tuple(state[key].shape)
            np.testing.assert_array_equal(value, local[key].numpy())
    for phase, phase_replies in replies.items():
        for _, reply in phase_replies:
            assert set(reply.content.metric_records) == {"metrics"}
            metrics = reply.content["metrics"]
            assert unexpected_metrics(metrics, phase) == set(), phase
            assert all(isinstance(v, (int, float)) for v in metrics.values())
        if phase == "evaluate":
            assert all(set(r.content.array_records) == set() for _, r in phase_replies)
            assert all(set(r.content.config_records) == set() for _, r in phase_replies)


def test_instructions_carry_no_key_the_site_reads_from_its_run_config(
    data_root: Path, tmp_path: Path
) -> None:
    """Train and evaluate instructions hold the weights and per-message values only: Flower's
    round (and FedProx's μ), the rounds done before a resume; never a config key."""
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.strategy": "fedprox",
                                                      "federation.proximal-mu": 0.1})
    grid = run(cfg, sites)
    run_keys = set(cfg.to_flat())
    seen = set()
    for msg in grid.instructions:
        assert set(msg.content.config_records) == {"config", "index"}  # index: packed layout
        assert set(msg.content["index"]) == {"names", "dtypes", "ndims", "dims"}
        config = msg.content["config"]
        assert not set(config) & run_keys
        seen |= set(config)
        assert config["round-offset"] == 0 and config["server-round"] in (1, 2)
    assert seen == {"server-round", "round-offset", "proximal-mu"}
    # A site refuses an instruction that tries to configure it.
    msg = grid.instructions[0]
    msg.content["config"]["privacy.enabled"] = False
    reply = grid.answer(msg)
    assert reply.has_error() and "not per-message values" in reply.error.reason


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _first_train_arrays(grid: ClientAppGrid) -> dict[str, np.ndarray]:
    first = next(m for m in grid.instructions if m.metadata.message_type == "train")
    return unpack(first.content)


def test_resume_continues_from_the_last_checkpoint(data_root: Path, tmp_path: Path) -> None:
    cfg, sites = make(data_root, tmp_path / "run")
    run(cfg, sites)
    checkpoints = tmp_path / "run" / "checkpoints"
    round2 = load_checkpoint(checkpoints / "round-0002.safetensors").model.state_dict()
    longer = cfg.evolve(federation={"num_rounds": 3, "resume_from": tmp_path / "run"})
    for key, array in _first_train_arrays(run(longer, sites)).items():
        np.testing.assert_array_equal(array, round2[key].numpy())
    assert [r["round"] for r in _rows(tmp_path / "run")] == [1, 2, 3]
    assert (checkpoints / "round-0003.safetensors").is_file()
    with pytest.raises(ValueError, match="not a fedsynth run directory"):
        run(cfg.evolve(federation={"resume_from": tmp_path / "empty"}), sites)
    for ckpt in checkpoints.glob("*.safetensors"):
        ckpt.write_bytes(b"truncated")  # no complete checkpoint left
    with pytest.raises(ValueError, match="no complete checkpoint"):
        run(longer, sites)


def test_resume_skips_a_corrupt_last_checkpoint(data_root: Path, tmp_path: Path) -> None:
    """Only the newest checkpoint is broken: the run resumes from the one before it, and the
    metrics rows of the lost round are dropped before that round is run again."""
    cfg, sites = make(data_root, tmp_path / "run")
    run(cfg, sites)
    checkpoints = tmp_path / "run" / "checkpoints"
    round1 = load_checkpoint(checkpoints / "round-0001.safetensors").model.state_dict()
    lost = _rows(tmp_path / "run")[1]
    (checkpoints / "round-0002.safetensors").write_bytes(b"truncated")
    again = cfg.evolve(federation={"resume_from": tmp_path / "run"})
    for key, array in _first_train_arrays(run(again, sites)).items():
        np.testing.assert_array_equal(array, round1[key].numpy())
    rows = _rows(tmp_path / "run")
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[1]["seconds"] != lost["seconds"]  # the row of the rerun round, not the lost one
    assert load_checkpoint(checkpoints / "round-0002.safetensors").meta["round"] == 2


def _poison(kind: str):
    """A tamper hook: node 101 (hospB) sends a NaN, wrong-shape or huge-norm update."""

    def tamper(node: int, instruction: Message, reply: Message) -> Message:
        if node != 101 or reply.metadata.message_type != "train" or reply.has_error():
            return reply
        arrays = {k: v.copy() for k, v in unpack(reply.content).items()}
        key = next(iter(arrays))
        if kind == "nan":
            arrays[key][...] = np.nan
        elif kind == "shape":
            arrays[key] = arrays[key].reshape(-1)[:-1]
        else:
            arrays = {k: v + 1e4 for k, v in arrays.items()}
        content = RecordDict({**pack(arrays), "metrics": reply.content["metrics"]})
        return Message(content, reply_to=instruction)

    return tamper


@pytest.mark.parametrize("kind", ["nan", "shape", "norm"])
def test_poisoned_update_is_rejected_and_the_round_completes(
    data_root, tmp_path, kind, caplog
) -> None:
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 1})
    run(cfg, sites, tamper=_poison(kind))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["sites"]["hospB"]["train_status"].startswith("rejected")
    assert row["sites"]["hospA"]["train_status"] == "accepted"
    assert "rejected update from node 101" in caplog.text
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "round-0001.safetensors")
    assert all(np.isfinite(v.numpy()).all() for v in ckpt.model.state_dict().values())


def test_budget_exhausted_site_is_skipped_and_reported(data_root: Path, tmp_path: Path) -> None:
    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 3})
    nodes = [{"partition-id": i} for i in range(3)]
    nodes[2]["epsilon-budget"] = 1.5  # hospC's own budget: enough for round 1 only
    run(cfg, sites, nodes)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    statuses = [r["sites"]["hospC"]["train_status"] for r in rows]
    assert statuses[0] == "accepted"
    assert any(s.startswith("error: BudgetExhausted") for s in statuses[1:])
    assert all(r["sites"]["hospA"]["train_status"] == "accepted" for r in rows)
    accountant = json.loads((tmp_path / "run" / "sites" / "hospC" / "accountant.json").read_text())
    assert accountant
    assert "hospC" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(("strategy", "mu"), [("fedavg", 0.0), ("fedprox", 0.25)])
def test_mu_reaches_the_engine_only_from_fedprox(
    strategy: str, mu: float, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """μ travels once: FedProx's own "proximal-mu" instruction key. Any other strategy trains
    without a proximal term, and a μ configured for one is refused up front."""
    import fedsynth.client.site as site_module

    seen: list[float | None] = []
    real = site_module.train_local

    def spy(*args, **kwargs):
        proximal = args[6] if len(args) > 6 else kwargs.get("proximal")
        seen.append(None if proximal is None else proximal.mu)
        return real(*args, **kwargs)

    monkeypatch.setattr(site_module, "train_local", spy)
    cfg, sites = make(
        data_root,
        tmp_path / "run",
        **{
            "federation.strategy": strategy,
            "federation.proximal-mu": mu,
            "federation.num-rounds": 1,
            "privacy.enabled": False,
        },
    )
    run(cfg, sites)
    assert seen == [mu or None] * len(sites)
    with pytest.raises(ValueError, match="proximal-mu=0.25 needs federation.strategy='fedprox'"):
        FedsynthConfig.from_flat({"federation.strategy": "fedavg", "federation.proximal-mu": 0.25})


def test_heterogeneous_sites_train_and_aggregate_a_unified_model(tmp_path: Path) -> None:
    """Three hospitals holding different contrast pairs train one unified generator; every
    site trains on what it has and the server aggregates the shared generator."""
    import nibabel as nib
    from conftest import AFFINE, head

    from fedsynth.data.layouts import write_subject

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    sites = ("hospA", "hospB", "hospC")
    for si, site in enumerate(sites):
        for k in range(4):
            contrasts = (("T1", 1.0), ("T2", -1.5), ("PD", 0.5))
            images = {m: nib.Nifti1Image(head(rng, c), AFFINE) for m, c in contrasts}
            write_subject(root / site, "bids", site, si * 100 + k, images)
    (root / "dataset.json").write_text(json.dumps({"sites": [{"name": s} for s in sites]}))
    held = {"hospA": ("T1", "T2"), "hospB": ("T1", "PD"), "hospC": ("T2", "PD")}
    cfg, data = make(
        root,
        tmp_path / "run",
        **{
            "model.kind": "unified",
            "data.modalities": "T1,T2,PD",
            "data.site-modalities": ",".join(f"{s}={'+'.join(m)}" for s, m in held.items()),
            "federation.num-rounds": 1,
        },
    )
    assert {s.site: tuple(s.train) for s in data} == held
    before = build_model(cfg.model, seed=cfg.train.seed).state_dict()
    run(cfg, data)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {s: v["train_status"] for s, v in row["sites"].items()} == dict.fromkeys(
        sites, "accepted"
    )
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "round-0001.safetensors")
    shared = after.meta["shared_keys"]
    assert shared and all(k.startswith("G.") for k in shared)
    assert any(not np.array_equal(before[k], after.model.state_dict()[k]) for k in shared)
    # hospB holds no T2: it scores no T1 → T2 (no weight), the others do.
    assert row["sites"]["hospB"]["evaluate/num-examples"] == 0
    assert row["sites"]["hospA"]["evaluate/num-examples"] > 0
    # The server scores every direction some site holds out, pooled over the sites holding
    # both contrasts (here exactly one site per pair), and heads the row with their mean.
    from fedsynth.evaluation.evaluate import evaluate_translation

    expected = {}
    for name, (a, b) in held.items():
        test = next(s.test for s in data if s.site == name)
        for s, t in ((a, b), (b, a)):
            scored = evaluate_translation(after.model, test, s, t).aggregate()
            expected[f"psnr_brain_{s}_{t}"] = scored["psnr_brain"]
    server = row["server"]
    assert {k: v for k, v in server.items() if k.count("_") == 3} == pytest.approx(expected)
    assert server["psnr_brain"] == pytest.approx(sum(expected.values()) / 6)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- model: unified any-to-any over T1/T2/PD (server scores: the mean over" in report


def test_round_timelines_for_profiling(data_root: Path, tmp_path: Path) -> None:
    """The observer hooks a benchmark reads: the server's phase times in each metrics line and
    each site's own log of its ClientApp calls with their time in the training engine."""
    from fedsynth.client.state_dir import SiteStateDir

    cfg, sites = make(data_root, tmp_path / "run", **{"federation.num-rounds": 1})
    run(cfg, sites)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    t = row["timings"]
    for phase in ("train", "evaluate"):
        assert t[phase]["start"] <= t[phase]["sent"] <= t[phase]["replied"] <= t["end"]
    assert t["train"]["replied"] <= t["evaluate"]["start"]
    assert t["server_eval_seconds"] > 0
    for site in ("hospA", "hospB", "hospC"):
        calls = SiteStateDir(tmp_path / "run" / "sites" / site).timings()
        assert [(c["phase"], c["round"]) for c in calls] == [("train", 1), ("evaluate", 1)]
        train, evaluate = calls
        assert t["train"]["sent"] <= train["start"] < train["end"] <= t["train"]["replied"]
        assert 0 < train["engine_seconds"] < train["end"] - train["start"]
        assert evaluate["engine_seconds"] == 0


def test_report_names_the_round_chosen_on_validation(data_root: Path, tmp_path: Path) -> None:
    """With validation subjects the server scores every round on them too; the report adds
    the round that scored best there (never chosen on the test subjects)."""
    from fedsynth.server.report import chosen_round

    cfg, sites = make(
        data_root,
        tmp_path / "run",
        **{"data.validation-fraction": 0.25, "privacy.enabled": False},
    )
    assert all(
        s.validation and not set(s.validation["T1"].subjects) & set(s.test["T1"].subjects)
        for s in sites
    )
    run(cfg, sites)
    rows = _rows(tmp_path / "run")
    assert all("validation/psnr_brain" in r["server"] for r in rows)
    best = max(rows, key=lambda r: r["server"]["validation/psnr_brain"])
    assert chosen_round(rows)["round"] == best["round"]
    assert (
        f"round {best['round']} (chosen on validation)"
        in (tmp_path / "run" / "report.md").read_text()
    )


def test_checkpoints_hold_the_sites_ema_weights_when_ema_is_on(
    data_root: Path, tmp_path: Path
) -> None:
    """With train.ema-decay the sites send their round's moving average: the round's
    checkpoint is the weighted mean of the sites' EMA generators, not of their last weights."""
    from fedsynth.client.state_dir import SiteStateDir

    cfg, sites = make(
        data_root,
        tmp_path / "run",
        **{"train.ema-decay": 0.5, "federation.num-rounds": 1, "privacy.enabled": False},
    )
    run(cfg, sites)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "round-0001.safetensors")
    shared, aggregate = ckpt.meta["shared_keys"], ckpt.model.state_dict()
    weights, emas, raws = [], [], []
    for site in sites:
        state_dir = SiteStateDir(tmp_path / "run" / "sites" / site.site)
        emas.append(state_dir.load_state().ema)
        raws.append(load_file(str(state_dir.model_file)))
        weights.append(site.num_train_slices())

    def mean(tensors: list) -> dict[str, np.ndarray]:
        return {
            k: sum(w * t[k].double().numpy() for w, t in zip(weights, tensors, strict=True))
            / sum(weights)
            for k in shared
        }

    from_ema, from_raw = mean(emas), mean(raws)
    for key in shared:
        np.testing.assert_allclose(aggregate[key].numpy(), from_ema[key], rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(from_ema[k], from_raw[k], atol=1e-6) for k in shared)
