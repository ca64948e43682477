"""Public warm start and parameter-efficient private fine-tuning (issue 12)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from synthetic_slices import site, tiny_config

from fedsynth.config import FedsynthConfig
from fedsynth.data.config import PreprocessConfig
from fedsynth.models import build_model
from fedsynth.models.card import read_model_card
from fedsynth.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from fedsynth.models.warm_start import initial_model
from fedsynth.privacy import PrivacyConfig
from fedsynth.privacy.per_sample import batch_gradients, per_sample_gradients
from fedsynth.training import TrainConfig, train_local
from fedsynth.training.augment import augment
from fedsynth.training.engine import _setup

DP = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, unit="subject", noise_seed=7)
TRAIN = TrainConfig(steps=4, batch_size=4, lr=1e-2)


def test_frozen_parameters_stay_bitwise_unchanged_under_fine_tuning() -> None:
    model = build_model(tiny_config(trainable="norm-bias"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = {k for p in ("generators", "discriminators") for k in model.group_parameters(p)}
    train_local(model, site(), TRAIN, DP)
    after = model.state_dict()
    frozen = set(after) - trained
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert all(k.endswith(".bias") or ".norm." in k for k in trained)
    shared = model.shared_keys(("generators",))
    assert set(shared) == {k for k in trained if k.startswith(("G_AB.", "G_BA."))}


@pytest.mark.parametrize("views", [1, 2])
def test_per_sample_gradients_of_the_trainable_subset_match_a_loop_in_float64(views: int) -> None:
    model = build_model(tiny_config(trainable="norm-bias")).double()
    gen = torch.Generator().manual_seed(0)
    images = {
        m: torch.rand(3, 1, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
        for m in ("T1", "T2")
    }
    views_of = augment(images, views, torch.Generator().manual_seed(1))
    batch = model.make_batch(views_of, gen)
    per_sample, _ = per_sample_gradients(model, "generators", batch, views)
    assert set(per_sample) == set(model.group_parameters("generators"))
    rows = [(m, i) for m in ("T1", "T2") for i in range(3)]
    for n, (m, i) in enumerate(rows):
        one = {m: views_of[m][i * views : (i + 1) * views]}
        expected, _ = batch_gradients(model, "generators", model.make_batch(one, gen))
        for key, g in expected.items():  # mean over the example's views = batch mean
            torch.testing.assert_close(per_sample[key][n], g, rtol=1e-9, atol=1e-12)


def test_ema_does_not_touch_the_accountant() -> None:
    runs = {}
    for decay in (0.0, 0.9):
        model = build_model(tiny_config(trainable="norm-bias"))
        train = dataclasses.replace(TRAIN, ema_decay=decay)
        metrics, state = train_local(model, site(), train, DP)
        runs[decay] = (metrics["epsilon"], state.accountant.state_dict(), model.state_dict(), state)
    (eps0, acc0, w0, s0), (eps9, acc9, w9, s9) = runs[0.0], runs[0.9]
    assert eps0 == eps9 and acc0 == acc9
    assert all(torch.equal(w0[k], w9[k]) for k in w0)  # the raw trajectory is the same
    assert s0.ema is None and s9.ema and any(not torch.equal(s9.ema[k], w9[k]) for k in s9.ema)


def test_architecture_mismatched_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "public.safetensors",
        build_model(tiny_config(base_channels=4)),
        FedsynthConfig().data.preprocess,
    )
    with pytest.raises(CheckpointError) as err:
        initial_model(tiny_config(), 0, path)
    text = str(err.value)
    assert "base_channels: 4 vs 8" in text and '"base_channels": 4' in text
    assert '"base_channels": 8' in text and "train.init-checkpoint" in text
    # Loss weights and the trainable subset are the fine-tuning run's own.
    loose = tiny_config(base_channels=4, lambda_cycle=1.0, trainable="norm-bias")
    assert initial_model(loose, 1, path).config.trainable == "norm-bias"


def test_warm_start_on_another_intensity_scale_is_refused(tmp_path: Path) -> None:
    """A model trained on percentile-scaled slices reads median-scaled ones as another
    contrast: a fine-tune must not start from it silently; the same scale is accepted."""
    percentile = PreprocessConfig(scaling="percentile")
    path = save_checkpoint(tmp_path / "p.safetensors", build_model(tiny_config()), percentile)
    with pytest.raises(CheckpointError, match="data.preprocess.scaling: 'percentile' vs 'median'"):
        initial_model(tiny_config(), 0, path, PreprocessConfig())
    assert initial_model(tiny_config(), 0, path, percentile).config == tiny_config()


def test_checkpoint_from_before_scaling_existed_loads_as_percentile(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "old.safetensors", build_model(tiny_config()), PreprocessConfig()
    )
    with safe_open(str(path), "pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    flat = json.loads(header["config"])
    del flat["data.preprocess.scaling"], flat["data.preprocess.median-span"]
    header["config"] = json.dumps(flat)
    save_file(tensors, str(path), metadata=header)
    assert load_checkpoint(path).preprocess.scaling == "percentile"


def _pretrain_config(tiny_bids: Path, tmp_path: Path) -> FedsynthConfig:
    return FedsynthConfig.from_flat(
        {
            "data.root": str(tiny_bids),
            "data.cache-dir": str(tmp_path / "cache"),
            "data.preprocess.image-size": 32,
            "model.base-channels": 4,
            "model.res-blocks": 1,
            "model.disc-channels": 4,
            "model.disc-layers": 2,
            "train.steps": 2,
            "train.batch-size": 2,
            "privacy.enabled": True,
        }
    )


def test_model_card_is_written(tiny_bids: Path, tmp_path: Path) -> None:
    from fedsynth.simulations.pretrain import pretrain

    path = pretrain(_pretrain_config(tiny_bids, tmp_path), tmp_path / "pre", progress=False)
    card = read_model_card(path)
    assert card["privacy"]["private_data_used"] is False and card["privacy"]["epsilon"] == 0.0
    assert card["training"]["steps"] == 2 and card["data"]["training_subjects"] > 0
    assert "overlap" in card["data"]["warning"]
    assert json.loads(read_header(path)["meta"])["model_card"]["name"] == card["name"]
    assert (path.parent / "model.card.md").read_text().startswith("# Model card")


def test_subject_level_sampling_charges_a_whole_patient_as_one_unit() -> None:
    data = site(slices=20, subjects=4)  # 4 patients per modality, 5 slices each
    model = build_model(tiny_config())
    session, _ = _setup(model, data, TRAIN, DP, None, None, None)
    assert session.index.num_units == 8  # patients, not the 40 slices
    assert session.release.sample_rate == TRAIN.batch_size / 8
    _, state = train_local(model, data, TRAIN, DP, steps=1)
    assert state.accountant.state_dict()["players"]["generators"][0][1] == 0.5
    assert state.accountant.unit == "subject"


def test_continuation_starts_from_the_weights_and_keeps_the_whole_lineage(
    tiny_bids: Path, tmp_path: Path
) -> None:
    """`pretrain --continue-from`: at a negligible lr the weights stay the parent's (it
    started from them: a fresh start of the same run lands far away); the card counts
    every step and keeps each ancestor's command, a continuation of a continuation too."""
    from fedsynth.simulations.pretrain import pretrain

    cfg = _pretrain_config(tiny_bids, tmp_path)
    first = pretrain(cfg, tmp_path / "a", progress=False, command="run-a")
    frozen = cfg.evolve(train={"lr": 1e-12, "steps": 3})
    second = pretrain(frozen, tmp_path / "b", progress=False, command="run-b", continue_from=first)
    third = pretrain(frozen, tmp_path / "c", progress=False, command="run-c", continue_from=second)
    fresh = pretrain(cfg.evolve(train={"seed": 5}), tmp_path / "d", progress=False)
    parent, child, other = (
        load_checkpoint(p).model.state_dict() for p in (first, third, fresh)
    )
    assert parent.keys() == child.keys()
    assert max((parent[k] - child[k]).abs().max().item() for k in parent) < 1e-8
    assert max((parent[k] - other[k]).abs().max().item() for k in parent) > 1e-2
    training = read_model_card(third)["training"]
    assert (training["steps"], training["steps_this_run"]) == (2 + 3 + 3, 3)
    assert training["continued_from"]["command"] == "run-b"
    assert training["continued_from"]["continued_from"]["command"] == "run-a"
    assert "continued_from" not in training["continued_from"]["continued_from"]
