"""Per-sample gradients, DP-SGD, Poisson/subject sampling, accounting and budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from synthetic_slices import SIZE, slice_set, tiny_config

from fedsynth.models import PLAYERS, build_model
from fedsynth.privacy import (
    PrivacyAccountant,
    PrivacyBudget,
    PrivacyConfig,
    UnitIndex,
    batch_gradients,
    clip_and_noise,
    per_sample_gradients,
)
from fedsynth.privacy.dp_sgd import clip_factors


def naive_per_sample(model, player, batch) -> torch.Tensor:
    """Reference: ordinary autograd on one sample at a time, flattened to (n, P)."""
    params = list(model.group_parameters(player).values())
    rows = []
    for stream, tensors in batch.items():
        for i in range(len(tensors["image"])):
            one = {k: v[i : i + 1] for k, v in tensors.items()}
            grads = torch.autograd.grad(model(stream, player, one)["loss"].sum(), params)
            rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def flat(model, player, grads: dict) -> torch.Tensor:
    return torch.cat([grads[k].flatten(1) for k in model.group_parameters(player)], dim=1)


@pytest.mark.parametrize("size", [SIZE, 128], ids=["32px", "128px-thin-conv-path"])
@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
@pytest.mark.parametrize("player", PLAYERS)
def test_per_sample_gradients_match_one_sample_at_a_time(kind: str, player: str, size: int) -> None:
    """In float64: the method is exact, while float32 rounding can flip a ReLU/|x| kink and
    make both the reference and vmap differ by ~1e-3 on a rare sample. At 128 px the thin
    7x7 input/output convolutions take their own per-sample weight-gradient path."""
    model = build_model(tiny_config(kind, image_size=size, base_channels=4)).double()
    x = torch.rand(
        5, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    batch = model.make_batch(
        {"T1": x[:3] * 2 - 1, "T2": x[3:] * 2 - 1}, torch.Generator().manual_seed(0)
    )
    grads, terms = per_sample_gradients(model, player, batch)
    fast, slow = flat(model, player, grads), naive_per_sample(model, player, batch)
    assert fast.shape == slow.shape == (5, slow.shape[1])
    relative = (fast - slow).abs().amax(dim=1) / slow.abs().amax(dim=1)
    assert relative.max() <= 1e-9
    assert terms["loss"].shape == (5,)
    mean, _ = batch_gradients(model, player, batch)
    mean_flat = flat(model, player, {k: v[None] for k, v in mean.items()})[0]
    assert (mean_flat - slow.mean(0)).abs().max() <= 1e-9 * slow.abs().max()


def test_empty_batch_gives_empty_per_sample_gradients_and_pure_noise() -> None:
    model = build_model(tiny_config())
    grads, terms = per_sample_gradients(model, "discriminators", {})
    assert terms == {} and all(g.shape[0] == 0 for g in grads.values())
    private, norms = clip_and_noise(
        grads,
        max_grad_norm=2.0,
        noise_multiplier=1.5,
        expected_batch_size=4.0,
        generator=torch.Generator().manual_seed(0),
    )
    noise = torch.cat([g.flatten() for g in private.values()])
    assert norms.shape == (0,)
    assert noise.std().item() == pytest.approx(1.5 * 2.0 / 4.0, rel=0.05)


def _clipping_case() -> dict[str, torch.Tensor]:
    """Six samples over three tensors; some have a tiny first tensor and a huge last one
    (a norm over one tensor would leave them unclipped), one is already inside the ball."""
    gen = torch.Generator().manual_seed(0)
    per_sample = {
        "a": torch.randn(6, 3, 4, generator=gen, dtype=torch.float64) * 1e-3,
        "b": torch.randn(6, 2, generator=gen, dtype=torch.float64),
        "c": torch.randn(6, 5, 1, generator=gen, dtype=torch.float64) * 10,
    }
    for g in per_sample.values():
        g[0] *= 0.01  # sample 0: norm well below C
    return per_sample


def _oracle_clip(per_sample: dict[str, torch.Tensor], c: float) -> list[dict[str, torch.Tensor]]:
    """Clip one sample at a time with its norm over every tensor: a plain loop."""
    out = []
    for i in range(len(next(iter(per_sample.values())))):
        norm = math.sqrt(sum(float((g[i] ** 2).sum()) for g in per_sample.values()))
        factor = min(1.0, c / norm)
        out.append({k: g[i] * factor for k, g in per_sample.items()})
    return out


def test_every_clipped_sample_has_global_norm_at_most_c() -> None:
    per_sample, c = _clipping_case(), 1.0
    factors, _ = clip_factors(per_sample, c)
    for i in range(6):
        norm = math.sqrt(sum(float(((g[i] * factors[i]) ** 2).sum()) for g in per_sample.values()))
        assert norm <= c * (1 + 1e-6), (i, norm)
    unclipped = math.sqrt(sum(float((g[0] ** 2).sum()) for g in per_sample.values()))
    assert unclipped < c and factors[0] == 1.0  # inside the ball: left as it is


def test_release_is_the_oracle_clipped_sum_over_the_expected_batch() -> None:
    per_sample, c, expected_batch = _clipping_case(), 1.0, 3.0
    private, _ = clip_and_noise(
        per_sample,
        max_grad_norm=c,
        noise_multiplier=0.0,
        expected_batch_size=expected_batch,
        generator=torch.Generator().manual_seed(0),
    )
    clipped = _oracle_clip(per_sample, c)
    for key in per_sample:
        oracle = sum(sample[key] for sample in clipped) / expected_batch
        torch.testing.assert_close(private[key], oracle, rtol=1e-6, atol=1e-9)


def subject_index(unit: str) -> UnitIndex:
    return UnitIndex({"T1": slice_set("T1", 12, 4), "T2": slice_set("T2", 9, 3)}, unit)


def test_subject_sampling_takes_one_slice_per_sampled_subject() -> None:
    index = subject_index("subject")
    sets = {"T1": slice_set("T1", 12, 4), "T2": slice_set("T2", 9, 3)}
    assert (index.num_units, index.num_slices) == (7, 21)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows = index.poisson(0.5, gen)
        subjects = [s for m, r in rows.items() for s in sets[m].subjects[r]]
        assert len(subjects) == len(set(subjects))
    everyone = index.poisson(1.0, gen)
    assert sum(len(r) for r in everyone.values()) == 7
    assert sum(len(r) for r in index.poisson(0.0, gen).values()) == 0


def test_slice_sampling_is_poisson_over_slices() -> None:
    index = subject_index("slice")
    assert index.num_units == 21
    gen = torch.Generator().manual_seed(0)
    assert sum(len(r) for r in index.poisson(1.0, gen).values()) == 21
    sizes = [sum(len(r) for r in index.poisson(0.2, gen).values()) for _ in range(500)]
    assert np.mean(sizes) == pytest.approx(0.2 * 21, rel=0.1)
    assert len(set(sizes)) > 3  # the batch size varies
    assert sum(len(r) for r in index.uniform(8, gen).values()) == 8


def run_accountant(
    mechanism: str, steps: range, accountant: PrivacyAccountant | None = None
) -> PrivacyAccountant:
    accountant = accountant or PrivacyAccountant(mechanism, "subject")
    for i in steps:
        sigma = 1.1 if i < 30 else 1.3  # a schedule change makes a multi-entry history
        accountant.step("generators", sigma, 0.05)
        accountant.step("discriminators", sigma, 0.04)
    return accountant


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_reloaded_accountant_reports_exactly_the_uninterrupted_epsilon(
    mechanism: str, tmp_path
) -> None:
    uninterrupted = run_accountant(mechanism, range(50))
    path = tmp_path / "site" / "accountant.json"
    run_accountant(mechanism, range(25)).save(path)
    assert [p.name for p in path.parent.iterdir()] == ["accountant.json"]  # no temp file left
    resumed = run_accountant(mechanism, range(25, 50), PrivacyAccountant.load(path))
    assert resumed.epsilon(1e-5) == uninterrupted.epsilon(1e-5) > 0
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert json.loads(path.read_text())["unit"] == "subject"


@pytest.mark.parametrize(
    ("mechanism", "opacus_cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)]
)
def test_two_players_compose_to_more_than_one(mechanism: str, opacus_cls: type) -> None:
    both = PrivacyAccountant(mechanism)
    one = PrivacyAccountant(mechanism)
    for _ in range(100):
        both.step("generators", 1.0, 0.05)
        both.step("discriminators", 1.0, 0.05)
        one.step("generators", 1.0, 0.05)
    assert both.epsilon(1e-5) > one.epsilon(1e-5) > 0
    # Two releases per step compose like 2T releases of one Opacus accountant.
    reference = opacus_cls()
    for _ in range(200):
        reference.step(noise_multiplier=1.0, sample_rate=0.05)
    assert both.epsilon(1e-5) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    # Looking ahead gives the epsilon that actually stepping would.
    ahead = one.epsilon(1e-5, {"generators": (1.0, 0.05), "discriminators": (1.0, 0.05)}, 10)
    for _ in range(10):
        one.step("generators", 1.0, 0.05)
        one.step("discriminators", 1.0, 0.05)
    assert ahead == pytest.approx(one.epsilon(1e-5), rel=1e-9)


def test_budget_stops_before_the_step_that_would_exceed_it() -> None:
    accountant = run_accountant("rdp", range(10))
    per_step = {"generators": (1.1, 0.05), "discriminators": (1.1, 0.04)}
    budget = PrivacyBudget(epsilon=accountant.epsilon(1e-5) + 0.5, delta=1e-5)
    plan = budget.plan(accountant, per_step, 10_000)
    assert plan.exhausted and 0 < plan.steps < 10_000
    assert accountant.epsilon(1e-5, per_step, plan.steps) <= budget.epsilon
    assert accountant.epsilon(1e-5, per_step, plan.steps + 1) > budget.epsilon
    assert "privacy budget reached" in plan.message and "subject-level" in plan.message
    assert not budget.plan(accountant, per_step, plan.steps).exhausted
    spent = PrivacyBudget(epsilon=accountant.epsilon(1e-5) / 2, delta=1e-5)
    assert spent.plan(accountant, per_step, 5).steps == 0


def test_accountant_rejects_bad_names_and_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="'gdp'"):
        PrivacyAccountant("gdp")
    with pytest.raises(ValueError, match="'patient'"):
        PrivacyAccountant("rdp", "patient")
    with pytest.raises(ValueError, match="'encoder'"):
        PrivacyAccountant().step("encoder", 1.0, 0.1)
    bad = tmp_path / "accountant.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="accountant.json"):
        PrivacyAccountant.load(bad)


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({"noise_multiplier": 0.0}, "0.0"),
        ({"max_grad_norm": -1.0}, "-1.0"),
        ({"delta": 1.0}, "1.0"),
        ({"epsilon_budget": 0.0}, "0.0"),
        ({"accountant": "gdp"}, "'gdp'"),
        ({"unit": "voxel"}, "'voxel'"),
        ({"sample_rate": 1.5}, "1.5"),
    ],
)
def test_privacy_config_rejects_bad_values(overrides: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        PrivacyConfig(**overrides)


@pytest.mark.parametrize("secure_mode", [False, True])
def test_noise_has_the_configured_spread(secure_mode: bool) -> None:
    """σ·C per coordinate, in plain and in secure mode (4 draws / 2: the same distribution)."""
    grads = {"w": torch.zeros(0, 200_000)}  # an empty batch: the release is pure noise
    private, _ = clip_and_noise(
        grads,
        max_grad_norm=2.0,
        noise_multiplier=1.5,
        expected_batch_size=1.0,
        generator=torch.Generator().manual_seed(0),
        secure_mode=secure_mode,
    )
    noise = private["w"].double()
    assert abs(float(noise.mean())) < 0.03
    assert float(noise.std()) == pytest.approx(3.0, rel=0.01)
