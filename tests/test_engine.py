"""The local training engine: DP and non-DP steps, determinism, resume, budget, schedule."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from synthetic_slices import site, slice_set, tiny_config

from fedsynth.client.state_dir import SiteStateDir
from fedsynth.data.config import PreprocessConfig
from fedsynth.data.slices import SiteData
from fedsynth.models import PLAYERS, build_model
from fedsynth.privacy import PrivacyConfig
from fedsynth.privacy.config import UNITS
from fedsynth.training import SHAREABLE_METRICS, TrainConfig, train_local
from fedsynth.training.engine import Proximal

TRAIN = TrainConfig(steps=6, batch_size=4, lr=1e-3)
NON_DP = PrivacyConfig(enabled=False)
DP = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, unit="subject")
KIND_DATA = [("cyclegan", ("T1", "T2")), ("unified", ("T1", "T2", "PD"))]


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("kind", "modalities"), KIND_DATA)
@pytest.mark.parametrize("privacy", [NON_DP, DP], ids=["nondp", "dp"])
def test_steps_run_and_change_every_group(
    kind: str, modalities: tuple, privacy: PrivacyConfig
) -> None:
    model = build_model(tiny_config(kind))
    before = weights(model)
    metrics, state = train_local(model, site(modalities), TRAIN, privacy, steps=2)
    after = model.state_dict()
    for player in PLAYERS:
        assert any(not torch.equal(before[k], after[k]) for k in model.group_keys(player))
    assert state.step == 2 and metrics["steps"] == 2
    assert all(isinstance(v, float) for v in metrics.values())
    if privacy.enabled:
        assert metrics["epsilon"] > 0 and metrics["delta"] == privacy.delta
        assert set(SHAREABLE_METRICS) <= set(metrics)
        assert state.accountant.steps("generators") == state.accountant.steps("discriminators") == 2
    else:
        assert state.accountant is None and metrics["generators/samples"] == 2 * TRAIN.batch_size


def _unified_run(train: TrainConfig, privacy: PrivacyConfig, **kwargs) -> dict:
    model = build_model(tiny_config("unified"))
    train_local(model, site(("T1", "T2", "PD")), train, privacy, steps=2, **kwargs)
    return weights(model)


def test_non_private_training_is_deterministic_under_train_seed() -> None:
    runs = [_unified_run(dataclasses.replace(TRAIN, seed=s), NON_DP) for s in (0, 0, 1)]
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


def test_private_randomness_ignores_train_seed_and_follows_the_secret() -> None:
    """The server knows train.seed: it must not determine DP sampling or noise."""
    same_config = [_unified_run(TRAIN, DP) for _ in range(2)]
    assert not same(*same_config)  # no secret given: a fresh one per run
    by_secret = [_unified_run(TRAIN, DP, secret_seed=s) for s in (7, 7, 8)]
    assert same(by_secret[0], by_secret[1])
    assert not same(by_secret[0], by_secret[2])
    fixed = dataclasses.replace(DP, noise_seed=3)  # the opt-in, NOT private
    assert same(
        _unified_run(TRAIN, fixed, secret_seed=1), _unified_run(TRAIN, fixed, secret_seed=2)
    )


@pytest.mark.parametrize("privacy", [NON_DP, DP], ids=["nondp", "dp"])
def test_resume_equals_uninterrupted_run(privacy: PrivacyConfig, tmp_path) -> None:
    data = site()
    straight = build_model(tiny_config())
    metrics, straight_state = train_local(straight, data, TRAIN, privacy, steps=4, secret_seed=5)

    first = build_model(tiny_config())
    _, state = train_local(first, data, TRAIN, privacy, steps=2, secret_seed=5)
    saved = SiteStateDir(tmp_path / "site")
    saved.save(first, PreprocessConfig(image_size=32), state)

    resumed = build_model(tiny_config(), seed=99)  # weights come from the state directory
    assert saved.load_model(resumed)
    resumed_metrics, resumed_state = train_local(
        resumed, data, TRAIN, privacy, saved.load_state(), steps=2
    )
    assert same(weights(straight), weights(resumed))
    assert resumed_state.step == straight_state.step == 4
    assert resumed_metrics.get("epsilon") == metrics.get("epsilon")


def test_input_state_is_not_modified() -> None:
    data = site()
    model = build_model(tiny_config())
    _, state = train_local(model, data, TRAIN, NON_DP, steps=1)
    start = weights(model)
    outcomes = []
    for _ in range(2):  # the same state twice gives the same result
        model.load_state_dict(start)
        train_local(model, data, TRAIN, NON_DP, state, steps=1)
        outcomes.append(weights(model))
    assert same(*outcomes) and state.step == 1


def test_budget_stops_training_before_exceeding_it(caplog) -> None:
    data = site()
    model = build_model(tiny_config())
    _, state = train_local(model, data, TRAIN, DP, steps=1)
    one_step = state.accountant.epsilon(DP.delta)
    budgeted = dataclasses.replace(DP, epsilon_budget=one_step * 1.5)
    with caplog.at_level(logging.WARNING):
        metrics, state = train_local(model, data, TRAIN, budgeted, state, steps=4)
    assert metrics["budget_exhausted"] == 1 and 0 < metrics["steps"] < 4
    assert metrics["epsilon"] <= budgeted.epsilon_budget
    assert "privacy budget reached" in state.stop_reason
    assert f"site site0: {state.stop_reason}" in caplog.messages
    before = weights(model)
    metrics, state = train_local(model, data, TRAIN, budgeted, state, steps=1)
    assert (
        metrics["steps"] == 0 and metrics["budget_exhausted"] == 1 and same(before, weights(model))
    )


def test_empty_poisson_batches_still_step_and_count() -> None:
    model = build_model(tiny_config())
    before = weights(model)
    tiny_rate = dataclasses.replace(DP, sample_rate=1e-9)
    metrics, state = train_local(model, site(), TRAIN, tiny_rate, steps=2)
    assert metrics["generators/samples"] == metrics["discriminators/samples"] == 0
    assert math.isnan(metrics["generators/cycle"])  # same keys as any other call, no value
    assert state.accountant.steps("generators") == state.accountant.steps("discriminators") == 2
    assert not same(before, weights(model))  # noise-only updates


def test_engine_rejects_bad_requests() -> None:
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match="steps=7"):
        train_local(model, site(), TRAIN, NON_DP, steps=7)
    with pytest.raises(ValueError, match="T2"):
        train_local(model, SiteData("s", {"T1": slice_set("T1", 4, 2)}), TRAIN, NON_DP, steps=1)
    with pytest.raises(ValueError, match="64, 64"):
        big = SiteData("s", {m: slice_set(m, 4, 2, size=64) for m in ("T1", "T2")})
        train_local(model, big, TRAIN, NON_DP, steps=1)
    _, private_state = train_local(model, site(), TRAIN, DP, steps=1)
    with pytest.raises(ValueError, match="enabled=False but the saved state was trained with DP"):
        train_local(model, site(), TRAIN, NON_DP, private_state, steps=1)
    with pytest.raises(ValueError, match="unit 'subject' != config 'slice'"):
        train_local(
            model, site(), TRAIN, dataclasses.replace(DP, unit="slice"), private_state, steps=1
        )
    with pytest.raises(ValueError, match="mechanism 'rdp' != config 'prv'"):
        prv = dataclasses.replace(DP, accountant="prv")
        train_local(model, site(), TRAIN, prv, private_state, steps=1)
    _, plain_state = train_local(model, site(), TRAIN, NON_DP, steps=1)
    with pytest.raises(ValueError, match="enabled=True but the saved state was trained without"):
        train_local(model, site(), TRAIN, DP, plain_state, steps=1)
    with pytest.raises(ValueError, match=r"steps=-1 must be in \[0, 5\]"):
        train_local(model, site(), TRAIN, DP, private_state, steps=-1)


@given(step=st.integers(-10, 10_000), schedule=st.sampled_from(["constant", "linear", "cosine"]))
def test_lr_schedule_is_bounded(step: int, schedule: str) -> None:
    cfg = TrainConfig(steps=1000, lr=1e-3, lr_schedule=schedule, decay_start=0.3)
    lr = cfg.learning_rate(step)
    assert 0 <= lr <= cfg.lr
    assert cfg.learning_rate(step + 1) <= lr
    assert cfg.learning_rate(10**9) == cfg.learning_rate(cfg.steps)


def test_linear_schedule_shape() -> None:
    cfg = TrainConfig(steps=100, lr=1.0, lr_schedule="linear", decay_start=0.5)
    assert cfg.learning_rate(0) == cfg.learning_rate(50) == 1.0
    assert (
        cfg.learning_rate(75) == 0.5 and cfg.learning_rate(99) > 0 and cfg.learning_rate(100) == 0
    )


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({"steps": 0}, "0"),
        ({"batch_size": 2.0}, "2.0"),
        ({"lr": -1.0}, "-1.0"),
        ({"betas": (0.5, 1.0)}, "1.0"),
        ({"lr_schedule": "step"}, "'step'"),
        ({"decay_start": 1.5}, "1.5"),
    ],
)
def test_train_config_rejects_bad_values(overrides: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        TrainConfig(**overrides)


@pytest.mark.parametrize("privacy", [NON_DP, DP], ids=["nondp", "dp"])
def test_fedprox_term_pulls_shared_weights_to_the_anchor(privacy: PrivacyConfig) -> None:
    """FedProx: with a large μ the anchored (shared) tensors move less from the global weights;
    unanchored ones (the discriminators here) are untouched by the term."""
    data = site(("T1", "T2"))
    drift = {}
    for mu in (0.0, 50.0):
        model = build_model(tiny_config())
        start = weights(model)
        anchor = {k: v for k, v in start.items() if k.startswith("G_")}
        proximal = Proximal(mu, anchor) if mu else None
        train_local(model, data, TRAIN, privacy, steps=4, proximal=proximal)
        after = weights(model)
        drift[mu] = sum(float((after[k] - anchor[k]).norm()) for k in anchor)
    assert drift[50.0] < drift[0.0]


@pytest.mark.parametrize("unit", ["subject", "slice"])
def test_dp_releases_use_q_from_units_and_divide_by_the_expected_batch(
    unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spy on every release and accountant step: q = B / units (subjects under unit=subject,
    slices under unit=slice) and the divisor is q·units, never the realised batch; σ, C and
    secure mode are the configured ones."""
    import fedsynth.training.engine as engine
    from fedsynth.privacy.accountant import PrivacyAccountant

    slices, subjects = 12, 4  # per modality; subject names differ between modalities
    units = 2 * (subjects if unit == "subject" else slices)
    q = TRAIN.batch_size / units
    releases, steps = [], []
    real_release, real_step = engine.private_gradient, PrivacyAccountant.step

    def spy_release(model, player, batch, **kwargs):
        releases.append(
            (
                player,
                kwargs["expected_batch_size"],
                kwargs["noise_multiplier"],
                kwargs["max_grad_norm"],
                kwargs["secure_mode"],
                kwargs["automatic"],
                kwargs["multiplicity"],
            )
        )
        return real_release(model, player, batch, **kwargs)

    def spy_step(self, player, sigma, sample_rate):
        steps.append((player, sigma, sample_rate))
        return real_step(self, player, sigma, sample_rate)

    monkeypatch.setattr(engine, "private_gradient", spy_release)
    monkeypatch.setattr(PrivacyAccountant, "step", spy_step)
    secure = unit == "slice"  # and flat clipping, one view; subjects: automatic, two views
    views = 1 if secure else 2
    privacy = dataclasses.replace(
        DP,
        unit=unit,
        noise_multiplier=1.3,
        max_grad_norm=0.7,
        secure_mode=secure,
        clipping="flat" if secure else "automatic",
    )
    model = build_model(tiny_config())
    train = dataclasses.replace(TRAIN, augmentations=views)
    train_local(model, site(slices=slices, subjects=subjects), train, privacy, steps=3)
    expected = (pytest.approx(q * units), 1.3, 0.7, secure, not secure, views)
    assert releases == [(p, *expected) for _ in range(3) for p in PLAYERS]
    assert steps == [(p, 1.3, pytest.approx(q)) for _ in range(3) for p in PLAYERS]


def _spy_releases(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict, torch.Tensor]]:
    """Record (player, per-sample loss terms, per-sample norms) of every DP-SGD release."""
    import fedsynth.training.engine as engine

    seen, real = [], engine.private_gradient

    def spy(model, player, batch, **kwargs):
        grads, terms, norms = real(model, player, batch, **kwargs)
        seen.append((player, terms, norms))
        return grads, terms, norms

    monkeypatch.setattr(engine, "private_gradient", spy)
    return seen


@pytest.mark.parametrize("max_grad_norm", [1e-4, 1e4], ids=["all-clipped", "none-clipped"])
def test_dp_metrics_are_means_over_the_releases_and_opacus_epsilon(
    max_grad_norm: float, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Metrics recomputed from the spied releases by a plain loop; ε from a fresh Opacus
    accountant over 2 players × 3 steps at q = B / subjects; lr of the last step taken; the
    guarantee logged in words; Adam with the configured betas."""
    from opacus.accountants import RDPAccountant

    seen = _spy_releases(monkeypatch)
    train = dataclasses.replace(TRAIN, lr_schedule="linear", decay_start=0.0, betas=(0.3, 0.9))
    privacy = dataclasses.replace(DP, max_grad_norm=max_grad_norm, noise_multiplier=1.3)
    start = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="fedsynth.training.engine"):
        model = build_model(tiny_config())
        metrics, state = train_local(model, site(), train, privacy, steps=3)
    wall = time.perf_counter() - start
    q = TRAIN.batch_size / 8  # 2 modalities × 4 subjects
    reference = RDPAccountant()
    for _ in range(6):
        reference.step(noise_multiplier=1.3, sample_rate=q)
    eps = reference.get_epsilon(delta=1e-5)
    assert metrics["epsilon"] == pytest.approx(eps, rel=1e-9)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        f"site site0: ({eps:.3f}, 1e-05)-DP at subject level (RDP accountant; "
        "generators 3, discriminators 3 releases)"
    ]
    assert all(o["param_groups"][0]["betas"] == (0.3, 0.9) for o in state.optimizers.values())
    assert (metrics["sample_rate"], metrics["noise_multiplier"], metrics["delta"]) == (
        q, 1.3, 1e-5)
    assert (metrics["steps"], metrics["global_step"], metrics["budget_exhausted"]) == (3, 3, 0)
    assert metrics["lr"] == pytest.approx(TRAIN.lr * (1 - 2 / 6))  # step index 2 of 6
    assert 0 < metrics["seconds_per_step"] * 3 <= wall
    for player in PLAYERS:
        mine = [(terms, norms) for p, terms, norms in seen if p == player]
        n = sum(len(norms) for _, norms in mine)
        assert n > 0 and metrics[f"{player}/samples"] == n
        norms = [float(x) for _, ns in mine for x in ns]
        clipped = sum(x > max_grad_norm for x in norms)
        assert metrics[f"{player}/clip_fraction"] == clipped / n == (max_grad_norm < 1)
        assert metrics[f"{player}/grad_norm"] == pytest.approx(sum(norms) / n)
        for term in ("loss", *build_model(tiny_config()).loss_terms(player)):
            total = sum(float(x) for terms, _ in mine for x in terms[term])
            assert metrics[f"{player}/{term}"] == pytest.approx(total / n), term


def test_q_is_capped_at_one_and_zero_steps_report_no_time() -> None:
    """A batch larger than the units: every unit in every batch (q = 1, not B / units)."""
    privacy = dataclasses.replace(DP, epsilon_budget=1e6)
    big = dataclasses.replace(TRAIN, batch_size=16, lr_schedule="linear", decay_start=0.0)
    metrics, state = train_local(build_model(tiny_config()), site(), big, privacy, steps=1)
    assert metrics["sample_rate"] == 1.0 and state.accountant.history("generators")[0][1] == 1.0
    assert metrics["lr"] == TRAIN.lr  # the rate of step 0, before any decay
    metrics, _ = train_local(build_model(tiny_config()), site(), big, privacy, state, steps=0)
    assert (metrics["steps"], metrics["global_step"], metrics["seconds_per_step"]) == (0, 1, 0)


@pytest.mark.parametrize(
    ("privacy", "subjects_per_modality", "warns"),
    [(DP, 19, False), (DP, 10, False), (DP, 9, True), (NON_DP, 9, False),
     (dataclasses.replace(DP, unit="slice"), 9, False)],
    ids=["dp-38-subjects", "dp-20-subjects", "dp-18-subjects", "nondp", "slice-unit"],
)
def test_patient_level_dp_on_fewer_than_twenty_subjects_warns_once(
    privacy: PrivacyConfig, subjects_per_modality: int, warns: bool, caplog
) -> None:
    """Two modalities whose subjects are distinct, one slice each: 2 × n patients (and 2 × n
    slices, so slice-level DP would have fewer than twenty units too) at the site."""
    model = build_model(tiny_config("cyclegan"))
    data = site(("T1", "T2"), slices=subjects_per_modality, subjects=subjects_per_modality)
    def warnings() -> list[str]:
        return [m for m in caplog.messages if "patient-level DP" in m]

    with caplog.at_level(logging.WARNING, logger="fedsynth.training.engine"):
        _, state = train_local(model, data, TRAIN, privacy, steps=1)
        first = warnings()
        train_local(model, data, TRAIN, privacy, steps=1, state=state)
    n = 2 * subjects_per_modality
    expected = [
        f"site site0: {n} subjects for patient-level DP; q = {min(1, 4 / n):.2f} per release "
        "spends ε fast (privacy.unit=slice gives the weaker slice-level guarantee)"
    ]
    assert first == warnings() == (expected if warns else [])


def test_without_dp_the_unit_ema_and_dp_statistics_stay_out_and_lr_is_used() -> None:
    """Non-DP training samples slices whatever `privacy.unit` says, keeps no weight average
    at decay 0, reports no clipping statistics, and follows `train.lr`."""
    by_unit = [_unified_run(TRAIN, dataclasses.replace(NON_DP, unit=u)) for u in UNITS]
    assert same(*by_unit)
    assert not same(by_unit[0], _unified_run(dataclasses.replace(TRAIN, lr=3e-3), NON_DP))
    metrics, state = train_local(build_model(tiny_config()), site(), TRAIN, NON_DP, steps=1)
    assert not state.ema and not any("clip_fraction" in k or "grad_norm" in k for k in metrics)


def test_augmented_dp_training_is_reproducible_from_the_secret() -> None:
    """Augmentation views are drawn from the site's generator, not torch's global RNG."""
    train = dataclasses.replace(TRAIN, augmentations=2)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(_unified_run(train, DP, secret_seed=4))
    assert same(*runs)


def test_without_a_step_count_training_runs_to_the_configured_total() -> None:
    train = dataclasses.replace(TRAIN, steps=3)
    model = build_model(tiny_config())
    _, state = train_local(model, site(), train, NON_DP, steps=1)
    metrics, state = train_local(model, site(), train, NON_DP, state)
    assert (metrics["steps"], state.step) == (2, 3)
