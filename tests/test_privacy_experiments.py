"""Privacy experiments: the ROC maths, a membership audit that catches an overfitted model,
the independent ε check (and that it catches tampering), and the sweep's cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset

from fedsynth.audit.accounting import check_run
from fedsynth.audit.attacks import MembershipSets
from fedsynth.audit.roc import auc, evaluate_attack, roc_curve, tpr_at_fpr
from fedsynth.audit.run import audit_run
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData, SliceSet
from fedsynth.models import build_model
from fedsynth.models.checkpoint import CheckpointError, save_checkpoint
from fedsynth.privacy.accountant import PrivacyAccountant
from fedsynth.privacy.calibrate import calibrate_sigma
from fedsynth.server.report import failed_training, federated_result, site_epsilons
from fedsynth.server.run_dir import RunDirectory
from fedsynth.simulations.sweep import Setting, max_sample_rate
from fedsynth.training import train_local

TINY_MODEL = [
    "model.base-channels=4", "model.res-blocks=1", "model.disc-channels=4",
    "model.disc-layers=2",
]


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.3, 1, 60).round(1), rng.normal(0, 1, 50).round(1)
    diff = members[:, None] - nonmembers[None, :]
    pairwise = ((diff > 0) + 0.5 * (diff == 0)).mean()
    assert auc(members, nonmembers) == pytest.approx(pairwise, abs=1e-12)
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.ones(5), np.ones(7)) == 0.5


def test_tpr_at_low_fpr_and_bootstrap_interval() -> None:
    members, nonmembers = np.array([5.0, 4.0, 0.5, 0.2]), np.array([3.0, 0.4, 0.1, 0.0])
    fpr, tpr = roc_curve(members, nonmembers)
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5  # two members above every non-member
    assert tpr_at_fpr(fpr, tpr, 0.25) == 0.75
    result = evaluate_attack("x", members, nonmembers, bootstrap=200)
    lo, hi = result.ci["auc"]
    assert lo <= result.figures["auc"] <= hi
    with pytest.raises(ValueError, match="finite"):
        evaluate_attack("x", np.array([np.nan]), nonmembers)


def test_sweep_settings_and_sigma_calibration() -> None:
    assert [Setting(noise=0).label, Setting(noise=1.1).label, Setting(epsilon=8).label] == [
        "non-DP", "σ=1.1", "ε≤8"]
    with pytest.raises(ValueError, match="not both"):
        Setting(noise=1.0, epsilon=8.0)
    sigma = calibrate_sigma(8.0, 1e-5, 0.1, 100)
    both = lambda s: {"generators": (s, 0.1), "discriminators": (s, 0.1)}  # noqa: E731
    accountant = PrivacyAccountant("rdp", "slice")
    assert accountant.epsilon(1e-5, both(sigma), 100) <= 8.0
    assert accountant.epsilon(1e-5, both(sigma - 0.02), 100) > 8.0


def slices(modality: str, subjects: list[str], per_subject: int = 3) -> SliceSet:
    n = len(subjects) * per_subject
    return SliceSet(
        modality,
        np.zeros((n, 4, 4), np.float32),
        np.ones((n, 4, 4), bool),
        np.repeat(subjects, per_subject),
        np.tile(np.arange(per_subject), len(subjects)),
    )


def test_sample_rate_of_sites_with_different_contrasts() -> None:
    """A site that lacks a contrast counts the subjects it has: the rate is the batch over
    the smallest site's subjects (hospB: 4 subjects over T1 and PD; hospA: 6)."""
    flat = {"model.kind": "unified", "data.modalities": "T1,T2,PD,FLAIR"}
    flat |= {"privacy.enabled": True, "privacy.unit": "subject", "train.batch-size": 2}
    cfg = FedsynthConfig.from_flat(flat)
    three = {m: slices(m, [f"a{m}{i}" for i in range(2)]) for m in ("T1", "T2", "FLAIR")}
    two = {"T1": slices("T1", ["b0", "b1"]), "PD": slices("PD", ["b2", "b3"])}
    sites = [SiteData("hospA", three), SiteData("hospB", two)]
    assert max_sample_rate(cfg, sites) == pytest.approx(2 / 4)


@pytest.fixture(scope="module")
def overfitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-site 'run' whose model was trained without DP far past the point of memorising
    its few training slices (two subjects), written in the layout a federation leaves."""
    root = tmp_path_factory.mktemp("overfit")
    generate_phantom(
        PhantomConfig(sites=1, subjects_per_site=4, modalities=("T1", "T2"), seed=0),
        root / "phantom", progress=False,
    )
    cfg = FedsynthConfig.from_flat({
        "data.root": str(root / "phantom"), "data.cache-dir": str(root / "cache"),
        "data.test-fraction": 0.5, "data.preprocess.image-size": 32,
        "model.base-channels": 8, "model.res-blocks": 2, "model.downsamplings": 1,
        "model.disc-channels": 16, "model.disc-layers": 2, "model.lambda-identity": 0.0,
        "train.lr": 2e-3, "train.lr-schedule": "constant", "train.steps": 160,
        "privacy.enabled": False, "federation.run-dir": str(root / "run"),
    })
    return trained_run(cfg)[0]


def trained_run(cfg: FedsynthConfig) -> tuple[Path, SiteData]:
    """`cfg`'s model trained at the first site of its data, written as round 1 of a run at
    `cfg.federation.run_dir` (global checkpoint and the site's local model), and that site."""
    site = prepare_sites(cfg.data, progress=False)[0][0]
    model = build_model(cfg.model)
    train_local(model, site, cfg.train, cfg.privacy)
    run = RunDirectory(cfg.federation.run_dir)
    run.create(cfg)
    state = model.state_dict()
    shared = {k: state[k].numpy() for k in model.shared_keys(cfg.federation.shared_groups)}
    run.save_round(1, model, cfg.data.preprocess, cfg.digest(), shared, {})
    local = SiteStateDir.of_site(site.site, None, run.path).model_file
    save_checkpoint(local, model, cfg.data.preprocess)
    return run.path, site


def test_audit_catches_an_overfitted_model(overfitted_run: Path) -> None:
    reference = RunDirectory(overfitted_run).config().evolve(train={"steps": 30})
    doc = audit_run(overfitted_run, reference=reference, bootstrap=300)
    attacks = doc["attacks"]
    assert set(attacks) == {
        "generator-threshold", "generator-calibrated",
        "discriminator-threshold", "discriminator-calibrated",
    }
    assert set(doc["member_subjects"]).isdisjoint(doc["nonmember_subjects"])
    d = attacks["discriminator-threshold"]
    assert d["auc"] > 0.65 and d["ci95"]["auc"][0] > 0.55, d
    assert d["members"] > 50 and d["nonmembers"] > 50
    out = overfitted_run / "audit" / doc["site"]
    for name in ("audit.json", "audit.md", "roc.png"):
        assert (out / name).stat().st_size > 0
    assert "| discriminator-threshold |" in (out / "audit.md").read_text()


def test_audit_of_a_unified_site_scores_the_contrasts_it_holds(tmp_path: Path) -> None:
    """A unified model serves four contrasts; a hospital that scans T1 and T2 (the demo's) is
    audited on its T1 and T2 slices, not refused for lacking PD and FLAIR."""
    generate_phantom(
        PhantomConfig(sites=1, subjects_per_site=4, modalities=("T1", "T2"), seed=0),
        tmp_path / "phantom", progress=False,
    )
    cfg = FedsynthConfig.from_flat({
        "data.root": str(tmp_path / "phantom"), "data.cache-dir": str(tmp_path / "cache"),
        "data.test-fraction": 0.5, "data.preprocess.image-size": 32,
        "model.kind": "unified", "data.modalities": "T1,T2,PD,FLAIR",
        "data.site-modalities": "hospA=T1+T2", "train.steps": 2, "privacy.enabled": False,
        "federation.run-dir": str(tmp_path / "run"),
        **dict(kv.split("=") for kv in TINY_MODEL),
    })  # fmt: skip
    run, site = trained_run(cfg)
    doc = audit_run(run, reference=cfg, bootstrap=20)
    # the oracle: every training and every held-out slice of the two contrasts, nothing else
    for attack in doc["attacks"].values():
        assert attack["members"] == len(site.train["T1"]) + len(site.train["T2"])
        assert attack["nonmembers"] == len(site.test["T1"]) + len(site.test["T2"])

    # a thinned audit: at most 3 slices of every subject and contrast, counted here
    def kept(sets: dict) -> int:
        return sum(
            min(3, int(np.sum(s.subjects == u))) for s in sets.values() for u in set(s.subjects)
        )

    doc = audit_run(run, reference=cfg, bootstrap=20, slices_per_subject=3)
    assert doc["slices_per_subject"] == 3
    for attack in doc["attacks"].values():
        assert attack["members"] == kept({m: site.train[m] for m in ("T1", "T2")})
        assert attack["nonmembers"] == kept({m: site.test[m] for m in ("T1", "T2")})


def test_thinned_audit_sets_keep_evenly_spaced_slices_of_every_subject() -> None:
    """Subject a has 10 slices (positions 0..9, stored shuffled), b has 2: at most 4 each,
    spread over a's extent (positions 0, 3, 6, 9); b keeps both. Membership is unchanged."""
    positions = np.array([7, 2, 9, 0, 5, 1, 8, 3, 6, 4, 11, 10])
    subjects = np.array(["a"] * 10 + ["b"] * 2)
    n = len(positions)
    images = positions[:, None, None] * np.ones((n, 4, 4), np.float32)

    def slices(mod: str, who: np.ndarray) -> SliceSet:
        return SliceSet(mod, images, np.ones((n, 4, 4), bool), who, positions)

    sets = MembershipSets({"T1": slices("T1", subjects)}, {"T1": slices("T1", subjects + "x")})
    thin = sets.thinned(4)
    for which in ("members", "nonmembers"):
        got = getattr(thin, which)["T1"]
        by_subject = {u: sorted(got.positions[got.subjects == u].tolist()) for u in got.subjects}
        suffix = "" if which == "members" else "x"
        assert by_subject == {"a" + suffix: [0, 3, 6, 9], "b" + suffix: [10, 11]}
        # each slice is still the slice at that position (rows taken together)
        assert (got.images[:, 0, 0] == got.positions).all()
    assert thin.fold_of("members")["T1"].tolist() == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="slices per subject 0"):
        sets.thinned(0)


def test_audit_without_checkpoints_says_so(overfitted_run: Path, tmp_path: Path) -> None:
    empty = RunDirectory(tmp_path / "empty")
    empty.create(RunDirectory(overfitted_run).config())
    with pytest.raises(CheckpointError, match="no complete round checkpoint"):
        audit_run(empty.path)


def _fedsynth(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "fedsynth.cli", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )
    return done


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A one-setting DP sweep over two tiny sites, run twice through the CLI."""
    tmp = tmp_path_factory.mktemp("sweep")
    data = write_tiny_dataset(tmp / "data", sites=("hospA", "hospB"), n=5)
    out = tmp / "sweep"
    args = [
        "privacy", "sweep", "--scenario", "phantom-3site", "--noise", "1.0", "--data", str(data),
        "--size", "32", "--out", str(out), "--bootstrap", "50",
        "--set", f"data.cache-dir={tmp / 'cache'}", "--set", "train.batch-size=4",
        "--set", "federation.num-rounds=2", "--set", "federation.local-steps=2",
        *(a for kv in TINY_MODEL for a in ("--set", kv)),
    ]
    env = os.environ | {"FLWR_HOME": str(tmp / "flwr")}
    first = _fedsynth(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (result,) = out.glob("runs/*/result.json")
    stamps = {p: p.stat().st_mtime_ns for p in result.parent.rglob("*") if p.is_file()}
    second = _fedsynth(*args, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"out": out, "run": result.parent / "run", "first": first, "second": second,
            "stamps": stamps, "env": env}


def test_sweep_writes_table_figure_and_reuses_a_finished_setting(sweep: dict) -> None:
    out = sweep["out"]
    for name in ("sweep.csv", "sweep.md", "utility_vs_epsilon.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "sweep.md").read_text()
    assert "| σ=1 |" in table and "epsilon_hospA" in table and "failed_training" in table
    assert "simulating" in sweep["first"].stdout
    # The second invocation found the setting's result and trained nothing.
    assert "reusing" in sweep["second"].stdout and "simulating" not in sweep["second"].stdout
    now = {p: p.stat().st_mtime_ns for p in sweep["stamps"]}
    assert now == sweep["stamps"]
    assert (sweep["run"] / "audit" / "hospA" / "audit.json").is_file()


def test_audit_command_on_another_site(sweep: dict, tmp_path: Path) -> None:
    done = _fedsynth(
        "privacy", "audit", "--run", str(sweep["run"]), "--site", "hospB", "--out",
        str(tmp_path / "audit"), "--reference-steps", "2", "--bootstrap", "20",
        "--slices-per-subject", "2", env=sweep["env"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "membership inference — site hospB" in done.stdout
    doc = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert doc["site"] == "hospB" and doc["reference_steps"] == 2
    assert len(doc["attacks"]) == 4
    # two slices of each subject, per contrast of the CycleGAN (T1 and T2)
    assert doc["slices_per_subject"] == 2
    for attack in doc["attacks"].values():
        assert attack["members"] <= 2 * 2 * len(doc["member_subjects"])
        assert attack["nonmembers"] <= 2 * 2 * len(doc["nonmember_subjects"])
    assert (tmp_path / "audit" / "roc.png").stat().st_size > 0
    missing = _fedsynth("privacy", "audit", "--run", str(sweep["run"]), "--site", "nowhere",
                        env=sweep["env"])
    assert missing.returncode == 2 and "nowhere" in missing.stdout


def test_epsilon_check_agrees_with_the_accountant(sweep: dict) -> None:
    checks = check_run(sweep["run"])
    assert [c.site for c in checks] == ["hospA", "hospB"]
    for c in checks:
        assert c.ok, c.problems
        ours = PrivacyAccountant.load(sweep["run"] / "sites" / c.site / "accountant.json")
        assert c.epsilon_recomputed == pytest.approx(ours.epsilon(1e-5), rel=1e-9)
        assert c.steps == {"generators": 4, "discriminators": 4} and c.rounds == 2
    done = _fedsynth("privacy", "check", "--run", str(sweep["run"]), env=sweep["env"])
    assert done.returncode == 0 and "MISMATCH" not in done.stdout, done.stdout


def test_epsilon_check_passes_over_a_node_that_only_errored(sweep: dict, tmp_path: Path) -> None:
    """A ClientApp killed before its first reply (out of memory, a SuperNode killed) leaves
    an unnamed `node-<id>` row with an error and no ε: the named sites are still checked."""
    run = tmp_path / "run"
    shutil.copytree(sweep["run"], run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[0]["sites"]["node-99"] = {"node": 99, "train_status": "error: worker killed"}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    checks = check_run(run)
    assert [c.site for c in checks] == ["hospA", "hospB"] and all(c.ok for c in checks)


def test_a_site_that_failed_the_last_round_keeps_the_epsilon_it_spent(sweep: dict) -> None:
    """A worker killed in the last round (Ray out of memory) leaves the site an error row:
    its ε is what it reported before, not ∞ ("no DP"), and the failure is counted."""
    rows = [json.loads(line) for line in (sweep["run"] / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    spent_before = rows[0]["sites"]["hospB"]["train/epsilon"]
    assert 0 < spent_before < rows[-1]["sites"]["hospA"]["train/epsilon"]
    rows[-1]["sites"]["hospB"] = {"node": 7, "train_status": "error: worker killed"}
    rows[0]["sites"]["node-99"] = {"node": 99, "train_status": "error: worker killed"}
    spent = site_epsilons(rows)
    assert set(spent) == {"hospA", "hospB"}  # a node that never trained spent nothing
    assert spent["hospB"] == spent_before
    assert spent["hospA"] == rows[-1]["sites"]["hospA"]["train/epsilon"]
    assert failed_training(rows) == [
        (rows[0]["round"], "node-99", "error: worker killed"),
        (rows[-1]["round"], "hospB", "error: worker killed"),
    ]
    assert federated_result(rows)["epsilon"] == spent["hospA"]
    # a run without DP reports no ε at all: ∞, and no "epsilon" in its result
    plain = [{"round": 1, "server": {}, "sites": {"hospA": {"train_status": "accepted"}}}]
    assert site_epsilons(plain) == {"hospA": float("inf")} and failed_training(plain) == []
    assert "epsilon" not in federated_result(plain)


def test_epsilon_check_fails_on_a_tampered_history(sweep: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(sweep["run"], run)
    path = run / "sites" / "hospA" / "accountant.json"
    state = json.loads(path.read_text())
    state["players"]["generators"][0][0] *= 2  # claim twice the noise that was added
    path.write_text(json.dumps(state))
    bad = {c.site: c for c in check_run(run)}
    assert bad["hospB"].ok and not bad["hospA"].ok
    assert any("Opacus" in p for p in bad["hospA"].problems)
    done = _fedsynth("privacy", "check", "--run", str(run), env=sweep["env"])
    assert done.returncode == 1 and "MISMATCH" in done.stdout

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[0]["sites"]["hospB"]["train/steps"] = 1.0  # a round that under-reports its steps
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert any("steps" in p for p in {c.site: c for c in check_run(run)}["hospB"].problems)
