"""A long public training run survives being killed: resuming from its resume point gives
bitwise the weights of an uninterrupted run, a resume point of another run is refused, and
moving the data elsewhere is still the same run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic_slices import site

from fedsynth.config import FedsynthConfig
from fedsynth.models import build_model
from fedsynth.privacy.accountant import PrivacyAccountant
from fedsynth.simulations.baselines import train_site
from fedsynth.training.resume import ResumePoint, run_key
from fedsynth.training.state import LocalState

FLAT = {
    "model.kind": "unified",
    "data.modalities": "T1,T2,PD",
    "data.preprocess.image-size": 32,
    "model.base-channels": 4,
    "model.res-blocks": 1,
    "model.disc-channels": 4,
    "model.disc-layers": 2,
    "model.lambda-structure": 1.0,
    "privacy.enabled": False,
    "train.steps": 6,
    "train.batch-size": 4,
    "train.ema-decay": 0.5,
}


def config(**extra: object) -> FedsynthConfig:
    return FedsynthConfig.from_flat(FLAT | extra)


def test_resumed_run_has_bitwise_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg, data = config(), site(("T1", "T2", "PD"))
    whole, _ = train_site(cfg, data, "whole", chunk=2)
    point = ResumePoint(tmp_path / "resume.pt", run_key(cfg.to_flat()))
    train_site(cfg, data, "first sitting", chunk=2, resume=point, until=4)
    assert LocalState.from_bytes(torch.load(point.path)["state"], None).step == 4
    resumed, _ = train_site(cfg, data, "second sitting", chunk=2, resume=point)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and an interrupted run really had stopped part-way: its weights differ from the end's
    halfway = ResumePoint(tmp_path / "half.pt", point.key)
    early, _ = train_site(cfg, data, "half", chunk=2, resume=halfway, until=2)
    assert not all(torch.equal(a[k], early.state_dict()[k]) for k in a)


def test_a_resume_point_of_another_run_is_refused_and_kept(tmp_path: Path) -> None:
    data = site(("T1", "T2", "PD"))
    path = tmp_path / "resume.pt"
    train_site(config(), data, "a", resume=ResumePoint(path, run_key(FLAT)), until=2)
    before = path.read_bytes()
    other = config(**{"train.lr": 1e-3})
    with pytest.raises(ValueError, match=r"resume\.pt is the resume point of run"):
        train_site(other, data, "b", resume=ResumePoint(path, run_key(other.to_flat())))
    assert path.read_bytes() == before


def test_the_run_key_ignores_where_the_data_lives_and_nothing_else() -> None:
    flat = config().to_flat()
    moved = flat | {"data.root": "/elsewhere", "data.cache-dir": "/tmp/c"}
    assert run_key(moved) == run_key(flat)
    assert run_key(flat | {"train.steps": 7}) != run_key(flat)
    assert run_key(flat | {"data.seed": 3}) != run_key(flat)


def test_a_private_state_is_never_written_to_a_resume_point(tmp_path: Path) -> None:
    accountant = PrivacyAccountant()
    state = LocalState.fresh(0, accountant)
    model = build_model(config().model)
    with pytest.raises(ValueError, match="without DP"):
        ResumePoint(tmp_path / "r.pt", "k").save(model, state)
    assert not (tmp_path / "r.pt").exists()


def test_pretrain_in_two_sittings_from_the_cli(tmp_path: Path) -> None:
    """`fedsynth pretrain --until N --resume FILE` writes a checkpoint whose card says N of
    the planned steps; the same command without --until continues to the end."""
    import json

    from fedsynth.cli import main

    out, resume = tmp_path / "out", tmp_path / "resume.pt"
    command = [
        "pretrain", "--scenario", "phantom-foundation", "--out", str(out),
        "--phantom", str(tmp_path / "public"), "--subjects", "6", "--lesion-fraction", "0.5",
        "--heads", "--steps", "4", "--resume", str(resume),
        "--set", "data.preprocess.image-size=32", "--set", "model.base-channels=4",
        "--set", "model.res-blocks=1", "--set", "model.disc-layers=2",
    ]  # fmt: skip
    assert main([*command, "--until", "2"]) == 0
    card = json.loads((out / "model.card.json").read_text())
    assert (card["training"]["steps"], card["training"]["planned_steps"]) == (2, 4)
    assert card["data"]["lesions"] is True
    assert set(card["public_validation"]["directions"]) == {
        f"{s}->{t}" for s in ("T1", "T2", "PD", "FLAIR") for t in ("T1", "T2", "PD", "FLAIR")
        if s != t
    }
    assert main(command) == 0
    assert json.loads((out / "model.card.json").read_text())["training"]["steps"] == 4
    described = json.loads((tmp_path / "public" / "dataset.json").read_text())
    assert described["lesions"] is True
