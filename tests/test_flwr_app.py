"""Flower's own entry, `flwr run .`, runs the measured recipe: pyproject.toml's app config is
the demo's federated step (the packaged foundation model, patient-level DP fine-tuning,
ε ≤ 8), read the way Flower reads it, and an instruction carries no setting a site reads
itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from flwr.common.config import get_fused_config_from_dir, parse_config_args
from opacus.accountants import RDPAccountant

from fedsynth.cli.demo import DEMO_SUBJECTS, demo_config
from fedsynth.config import FedsynthConfig
from fedsynth.pretrained import FOUNDATION
from fedsynth.simulations.scenarios import flwr_app_config

REPO = Path(__file__).resolve().parent.parent
PATHS = ("data.root", "data.cache-dir", "federation.run-dir")


def flwr_run_config(*assignments: str) -> dict:
    """The run config `flwr run . --run-config '…'` gives the apps (Flower's own functions)."""
    return dict(get_fused_config_from_dir(REPO, parse_config_args(list(assignments))))


def test_pyproject_app_config_is_the_scenario_it_mirrors() -> None:
    """Every key, every value: regenerate the section from `flwr_app_config()` on a change."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        table = tomllib.load(fh)["tool"]["flwr"]["app"]["config"]
    flat = flwr_run_config()
    assert flat == flwr_app_config(), "pyproject's [tool.flwr.app.config] is stale"
    assert set(table) == {"data", "model", "train", "privacy", "federation"}


def test_flwr_run_with_only_a_data_root_is_the_demo_s_federated_step(tmp_path: Path) -> None:
    data = tmp_path / "private"
    app = FedsynthConfig.from_flat(flwr_run_config(f'data.root="{data}"'))
    demo = demo_config(tmp_path / "demo", data)
    assert app.data.root == demo.data.root == data
    ours, theirs = app.to_flat(), demo.to_flat()
    assert {k: v for k, v in ours.items() if k not in PATHS} == {
        k: v for k, v in theirs.items() if k not in PATHS
    }
    # What that recipe is, by the measured facts (not by reading the scenario back):
    p, t = app.privacy, app.train
    assert p.enabled and p.unit == "subject" and p.epsilon_budget == 8.0
    assert t.init_checkpoint is not None and app.model.trainable == "norm-bias"
    from fedsynth.pretrained import checkpoint_path

    assert checkpoint_path(t.init_checkpoint) == FOUNDATION


def test_the_recipe_s_sigma_keeps_the_demo_s_hospitals_within_epsilon_8() -> None:
    """Opacus in the test: two releases (G and D) per step, q = batch / training subjects."""
    cfg = FedsynthConfig.from_flat(flwr_run_config())
    train_subjects = DEMO_SUBJECTS - round(DEMO_SUBJECTS * cfg.data.test_fraction)
    q = min(1.0, cfg.train.batch_size / train_subjects)
    accountant = RDPAccountant()
    for _ in range(2 * cfg.federation.total_steps):
        accountant.step(noise_multiplier=cfg.privacy.noise_multiplier, sample_rate=q)
    epsilon = accountant.get_epsilon(delta=cfg.privacy.delta)
    assert 7.0 < epsilon <= cfg.privacy.epsilon_budget == 8.0


def test_flower_refuses_a_key_the_app_does_not_list() -> None:
    with pytest.raises(ValueError, match="not present"):
        flwr_run_config("model.no-such-key=1")
