"""Per-sample gradients, DP-SGD, Poisson/subject sampling, accounting and budgets."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant, create_accountant
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
    private_gradient,
)
from fedsynth.privacy.calibrate import calibrate_sigma
from fedsynth.privacy.config import ACCOUNTANTS
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
        assert norm <= c * (1 + 1e-12), (i, norm)  # float64 rounding only: no slack
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


@pytest.mark.parametrize(
    ("automatic", "views"),
    [(None, 1), (True, 1), (False, 2), (True, 2)],
    ids=["defaults", "automatic", "two-views", "automatic-two-views"],
)
def test_private_gradient_is_the_release_of_a_naive_loop(
    automatic: bool | None, views: int
) -> None:
    """Noise off, float64: one sample at a time, the mean of each unit's `views` consecutive
    gradients (augmentation multiplicity), clipped to min(1, C/‖g‖)·g — or C/(‖g‖ + 0.01)·g,
    automatic clipping (Bu et al. 2023) — summed and divided by the expected batch."""
    model = build_model(tiny_config("cyclegan")).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(8, 1, SIZE, SIZE, generator=gen, dtype=torch.float64)
    batch = model.make_batch({"T1": x[:4] * 2 - 1, "T2": x[4:] * 2 - 1}, torch.Generator())
    rows = naive_per_sample(model, "generators", batch)
    units = rows.reshape(-1, views, rows.shape[1]).mean(dim=1)
    c, expected = 0.5, 3.0
    norms = units.norm(dim=1)
    factors = c / (norms + 0.01) if automatic else (c / norms).clamp(max=1.0)
    oracle = (factors[:, None] * units).sum(dim=0) / expected
    options = {} if automatic is None else {"automatic": automatic, "multiplicity": views}
    grads, terms, _ = private_gradient(
        model,
        "generators",
        batch,
        max_grad_norm=c,
        noise_multiplier=0.0,
        expected_batch_size=expected,
        generator=torch.Generator().manual_seed(0),
        **options,
    )
    released = flat(model, "generators", {k: v[None] for k, v in grads.items()})[0]
    # 1e-5: the code's min(1, C/(‖g‖ + 1e-6)) guard against ‖g‖ = 0, not in the oracle
    assert (released - oracle).abs().max() <= 1e-5 * oracle.abs().max()
    assert terms["loss"].shape == (8 // views,)


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
    assert ahead == one.epsilon(1e-5)  # the look-ahead is the history stepping leaves


def releases(steps: range) -> dict[str, list[tuple[float, float]]]:
    """Each player's (σ, q) per step, as `run_accountant` makes them."""
    sigmas = [1.1 if i < 30 else 1.3 for i in steps]
    return {
        "generators": [(s, 0.05) for s in sigmas],
        "discriminators": [(s, 0.04) for s in sigmas],
    }


def stepped_opacus(opacus_cls: type, per_player: dict[str, list[tuple[float, float]]]):
    """The oracle: one Opacus accountant stepped through every release of the generators,
    then every release of the discriminators (the composition of the two histories)."""
    reference = opacus_cls()
    for player in PLAYERS:
        for sigma, q in per_player[player]:
            reference.step(noise_multiplier=sigma, sample_rate=q)
    return reference


OPACUS = [("rdp", RDPAccountant), ("prv", PRVAccountant)]


@pytest.mark.parametrize("delta", [1e-3, 1e-7])
@pytest.mark.parametrize(("mechanism", "opacus_cls"), OPACUS, ids=["rdp", "prv"])
def test_epsilon_at_a_non_default_delta_is_opacus_at_that_delta(
    mechanism: str, opacus_cls: type, delta: float
) -> None:
    """δ ≠ 1e-5 (the default), so an accountant that ignored its δ fails; the σ change at
    step 30 makes multi-entry histories. Now and with a 5-step look-ahead."""
    accountant = run_accountant(mechanism, range(40))
    done = releases(range(40))
    expected = stepped_opacus(opacus_cls, done).get_epsilon(delta=delta)
    assert accountant.epsilon(delta) == pytest.approx(expected, rel=1e-9)
    per_step = {"generators": (1.3, 0.05), "discriminators": (1.3, 0.04)}
    later = {p: done[p] + [per_step[p]] * 5 for p in PLAYERS}
    expected_ahead = stepped_opacus(opacus_cls, later).get_epsilon(delta=delta)
    assert accountant.epsilon(delta, per_step, 5) == pytest.approx(expected_ahead, rel=1e-9)


@pytest.mark.parametrize("mechanism", ACCOUNTANTS)
def test_epsilon_falls_as_delta_grows(mechanism: str) -> None:
    accountant = run_accountant(mechanism, range(40))
    low, default, high = (accountant.epsilon(d) for d in (1e-3, 1e-5, 1e-7))
    assert 0 < low < default < high


def test_accountant_names_are_mechanisms_of_the_opacus_registry() -> None:
    for name in ACCOUNTANTS:
        assert create_accountant(mechanism=name).mechanism() == name
        assert PrivacyAccountant(name).epsilon(1e-5) == 0.0


def test_validating_a_config_imports_no_opacus() -> None:
    """Opacus costs seconds in every fresh process; a config is validated in all of them."""
    code = (
        "import sys\n"
        "from fedsynth.privacy.config import PrivacyConfig\n"
        "PrivacyConfig(accountant='prv', epsilon_budget=3.0)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'opacus'], 'opacus imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_format_1_state_file_written_before_still_loads(tmp_path) -> None:
    """Sites have state on disk: the JSON written by earlier releases (format 1) is read."""
    path = tmp_path / "accountant.json"
    path.write_text(
        '{"format": 1, "mechanism": "rdp", "unit": "slice", "players": {'
        '"generators": [[1.1, 0.05, 30], [1.3, 0.05, 10]], '
        '"discriminators": [[1.1, 0.04, 30], [1.3, 0.04, 10]]}}'
    )
    accountant = PrivacyAccountant.load(path)
    assert (accountant.mechanism, accountant.unit) == ("rdp", "slice")
    assert accountant.history("generators") == [(1.1, 0.05, 30), (1.3, 0.05, 10)]
    assert accountant.state_dict() == json.loads(path.read_text())
    expected = stepped_opacus(RDPAccountant, releases(range(40))).get_epsilon(delta=1e-3)
    assert accountant.epsilon(1e-3) == pytest.approx(expected, rel=1e-9)


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
        ({"noise_multiplier": -0.5}, "-0.5"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0, got 0.0"),
        ({"delta": 0.0}, "delta must be in \\(0, 1\\), got 0.0"),
        ({"epsilon_budget": -2.0}, "-2.0"),
        ({"sample_rate": 0.0}, "sample_rate must be in \\(0, 1\\] or None, got 0.0"),
        ({"clipping": "sometimes"}, "privacy.clipping must be one of .*got 'sometimes'"),
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


def test_privacy_config_accepts_the_edges_of_its_ranges() -> None:
    edges = PrivacyConfig(
        noise_multiplier=1e-3, max_grad_norm=1e-3, delta=1e-12, epsilon_budget=1e-3,
        sample_rate=1.0, accountant="prv", unit="slice",
    )
    assert edges.sample_rate == 1.0 and edges.epsilon_budget == 1e-3


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float, cls=RDPAccountant):
    """The reference: one Opacus accountant stepped through every release of both players."""
    reference = cls()
    for sigma, q, steps in history:
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=q)
    return reference.get_epsilon(delta=delta)


def test_budget_plan_is_the_last_step_opacus_allows() -> None:
    accountant = run_accountant("rdp", range(10))
    per_step = {"generators": (1.1, 0.05), "discriminators": (1.1, 0.04)}
    past = [(1.1, 0.05, 10), (1.1, 0.04, 10)]

    def eps(k: int) -> float:
        return opacus_epsilon(past + [(1.1, 0.05, k), (1.1, 0.04, k)], 1e-5)

    budget = PrivacyBudget(epsilon=eps(0) + 0.5, delta=1e-5)
    plan = budget.plan(accountant, per_step, 10_000)
    k = plan.steps
    assert isinstance(k, int) and eps(k) <= budget.epsilon < eps(k + 1)
    assert (plan.requested, plan.exhausted) == (10_000, True)
    assert plan.epsilon_after == pytest.approx(eps(k), rel=1e-9)
    assert (
        f"step {k + 1} of 10000 would raise epsilon from {eps(k):.3f} to {eps(k + 1):.3f}"
        in plan.message
    )
    assert f"training stops after {k} step(s)" in plan.message and "RDP" in plan.message
    within = budget.plan(accountant, per_step, k - 3)
    assert (within.steps, within.exhausted, within.message) == (k - 3, False, None)
    assert within.epsilon_after == pytest.approx(eps(k - 3), rel=1e-9)


def test_a_budget_met_exactly_is_not_exceeded() -> None:
    """"Within budget" is ε ≤ budget: a budget equal to the ε after k steps allows k steps."""
    accountant = run_accountant("rdp", range(3))
    per_step = {"generators": (1.1, 0.05), "discriminators": (1.1, 0.04)}
    for k, requested in ((37, 100), (37, 37)):
        budget = PrivacyBudget(accountant.epsilon(1e-5, per_step, k), 1e-5)
        assert budget.plan(accountant, per_step, requested).steps == k


@pytest.mark.parametrize(("epsilon", "delta"), [(0.0, 1e-5), (-1.0, 1e-5), (1.0, 0.0), (1.0, 1.0)])
def test_budget_rejects_bad_values(epsilon: float, delta: float) -> None:
    with pytest.raises(ValueError, match=repr(epsilon) if epsilon <= 0 else repr(delta)):
        PrivacyBudget(epsilon, delta)


@pytest.mark.parametrize(
    ("mechanism", "opacus_cls", "target"),
    [("rdp", RDPAccountant, 4.0), ("rdp", RDPAccountant, 30.0), ("prv", PRVAccountant, 4.0)],
    ids=["rdp-sigma-above-1", "rdp-sigma-below-1", "prv"],
)
def test_calibrated_sigma_is_within_a_grid_step_of_the_smallest_opacus_accepts(
    mechanism: str, opacus_cls: type, target: float
) -> None:
    """Two releases per step at rate q, i.e. 2·steps releases in one Opacus accountant; the
    bisection stops within 0.01 and rounds up to the 0.01 grid, so σ - 0.02 must fail."""
    sigma = calibrate_sigma(target, 1e-5, 0.1, 50, mechanism)

    def eps(s: float) -> float:
        return opacus_epsilon([(s, 0.1, 100)], 1e-5, opacus_cls)

    assert round(sigma * 100) == pytest.approx(sigma * 100, abs=1e-9)  # on the 0.01 grid
    assert eps(sigma) <= target < eps(sigma - 0.02)
    with pytest.raises(ValueError, match="unreachable in 10000 steps at q=1.000"):
        calibrate_sigma(0.01, 1e-5, 1.0, 10_000)


def test_accountant_epsilon_edges_and_description() -> None:
    accountant = PrivacyAccountant("rdp", "subject")
    assert accountant.epsilon(1e-5) == 0.0  # nothing released yet
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"delta must be in \\(0, 1\\), got {bad}"):
            accountant.epsilon(bad)
    with pytest.raises(ValueError, match="'encoder'"):
        accountant.epsilon(1e-5, {"encoder": (1.0, 0.1)}, 3)
    for _ in range(3):
        accountant.step("generators", 1.2, 0.1)
    accountant.step("discriminators", 1.2, 0.1)
    assert (accountant.steps("generators"), accountant.steps("discriminators")) == (3, 1)
    assert accountant.history("generators") == [(1.2, 0.1, 3)]
    eps = opacus_epsilon([(1.2, 0.1, 4)], 1e-5)
    assert accountant.epsilon(1e-5) == pytest.approx(eps, rel=1e-9)
    assert accountant.epsilon(1e-5, {"generators": (1.2, 0.1)}, 0) == accountant.epsilon(1e-5)
    assert accountant.describe(1e-5) == (
        f"({eps:.3f}, 1e-05)-DP at subject level (RDP accountant; generators 3, "
        "discriminators 1 releases)"
    )
    assert accountant.describe(1e-5, epsilon=2.5).startswith("(2.500, 1e-05)-DP")


def test_accountant_state_refuses_other_formats() -> None:
    state = run_accountant("rdp", range(2)).state_dict()
    assert state["format"] == 1 and state["players"]["generators"] == [[1.1, 0.05, 2]]
    with pytest.raises(ValueError, match="unsupported accountant state format 2"):
        PrivacyAccountant.from_state_dict(state | {"format": 2})
    with pytest.raises(ValueError, match="format None"):
        PrivacyAccountant.from_state_dict({k: v for k, v in state.items() if k != "format"})


def test_subject_sampling_picks_each_slice_of_a_subject_equally_often() -> None:
    """One slice per sampled subject, uniform over the subject's slices (3 each here)."""
    sets = {"T1": slice_set("T1", 12, 4), "T2": slice_set("T2", 9, 3)}
    index = UnitIndex(sets, "subject")
    gen = torch.Generator().manual_seed(0)
    counts = {m: np.zeros(len(s)) for m, s in sets.items()}
    draws = 1500
    for _ in range(draws):
        for m, rows in index.poisson(1.0, gen).items():
            counts[m][rows] += 1
    for m, c in counts.items():
        assert c == pytest.approx(np.full(len(c), draws / 3), rel=0.12), m
    assert sorted(index.modalities) == ["T1", "T2"]


def test_uniform_batches_are_distinct_units_and_bad_indexes_are_refused() -> None:
    index = subject_index("subject")
    gen = torch.Generator().manual_seed(0)
    rows = index.uniform(5, gen)
    sets = {"T1": slice_set("T1", 12, 4), "T2": slice_set("T2", 9, 3)}
    subjects = [s for m, r in rows.items() for s in sets[m].subjects[r]]
    assert len(subjects) == len(set(subjects)) == 5
    again = index.uniform(5, torch.Generator().manual_seed(0))
    assert all(np.array_equal(again[m], rows[m]) for m in rows)  # the generator decides all
    assert sum(len(r) for r in index.uniform(50, gen).values()) == 7  # all units, once each
    with pytest.raises(ValueError, match="'voxel'"):
        UnitIndex(sets, "voxel")
    with pytest.raises(ValueError, match="no training slices"):
        UnitIndex({"T1": slice_set("T1", 0, 1)}, "slice")
    assert UnitIndex({"T1": slice_set("T1", 1, 1)}, "slice").num_units == 1


def test_release_refuses_a_non_positive_expected_batch() -> None:
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"expected_batch_size must be > 0, got {bad}"):
            clip_and_noise(
                {"w": torch.zeros(0, 3)}, max_grad_norm=1.0, noise_multiplier=1.0,
                expected_batch_size=bad, generator=torch.Generator(),
            )


def test_secure_mode_reaches_the_release_with_the_same_spread() -> None:
    """`private_gradient` passes secure_mode on: with one seed its noise differs from the plain
    draw, with the same σC/B spread (the batch is empty, so the release is pure noise)."""
    model = build_model(tiny_config())
    kwargs = dict(max_grad_norm=2.0, noise_multiplier=1.5, expected_batch_size=3.0)
    releases = {}
    for secure in (False, True):
        mode = {"secure_mode": True} if secure else {}  # plain by default
        grads, _, _ = private_gradient(
            model, "generators", {}, generator=torch.Generator().manual_seed(0), **mode, **kwargs
        )
        releases[secure] = torch.cat([g.flatten() for g in grads.values()]).double()
    assert not torch.equal(releases[False], releases[True])
    for noise in releases.values():
        assert float(noise.std()) == pytest.approx(1.5 * 2.0 / 3.0, rel=0.03)


def test_batch_gradient_of_one_sample_and_refusal_of_none() -> None:
    model = build_model(tiny_config()).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, SIZE, SIZE, generator=gen, dtype=torch.float64)
    batch = model.make_batch({"T1": x * 2 - 1}, torch.Generator().manual_seed(0))
    mean, terms = batch_gradients(model, "discriminators", batch)
    slow = naive_per_sample(model, "discriminators", batch)
    fast = flat(model, "discriminators", {k: v[None] for k, v in mean.items()})
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    assert terms["loss"].shape == (1,)
    with pytest.raises(ValueError, match="^batch_gradients needs a non-empty batch$"):
        batch_gradients(model, "discriminators", {})


@pytest.mark.parametrize("secure_mode", [None, True], ids=["default", "secure"])
def test_noise_is_one_draw_or_four_halved_per_coordinate(secure_mode: bool | None) -> None:
    """The noise, drawn by hand from the same seed: σC/B times one standard normal per
    coordinate (the default), or the sum of four over 2 (secure mode), tensor by tensor."""
    empty = {"w": torch.zeros(0, 5), "b": torch.zeros(0, 3)}
    mode = {} if secure_mode is None else {"secure_mode": secure_mode}
    private, _ = clip_and_noise(
        empty, max_grad_norm=2.0, noise_multiplier=1.5, expected_batch_size=4.0,
        generator=torch.Generator().manual_seed(0), **mode,
    )
    gen = torch.Generator().manual_seed(0)
    for key, n in (("w", 5), ("b", 3)):
        draws = [torch.randn(n, generator=gen) for _ in range(4 if secure_mode else 1)]
        expected = sum(draws) / (2 if secure_mode else 1) * 1.5 * 2.0 / 4.0
        torch.testing.assert_close(private[key], expected, rtol=1e-6, atol=1e-7)
