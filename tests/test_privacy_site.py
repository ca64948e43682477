"""What a private site replies, against oracles written in the test: the allow-listed metric
names with values from the config, the data and Opacus; replays, budgets, refused inputs
(`fedsynth.client.site.Site`, on in-memory slices: no NIfTI, no Flower)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from payload_oracle import EVALUATE_METRICS, TRAIN_METRICS, expected_shared_keys
from synthetic_slices import slice_set

from fedsynth.client.site import BudgetExhausted, Site, SiteIdentity
from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData
from fedsynth.models import build_model
from fedsynth.simulations.scenarios import TINY_MODEL

FLAT = TINY_MODEL | {
    "train.batch-size": 4,
    "privacy.unit": "slice",
    "privacy.noise-multiplier": 1.0,
    "federation.num-rounds": 2,
    "federation.local-steps": 2,
}
TRAIN_SLICES, TEST_SLICES = 10, 3  # per modality (T1, T2)
Q = 4 / (2 * TRAIN_SLICES)  # batch size / slices (unit=slice)
PAIRED = slice_set("T1", TEST_SLICES, TEST_SLICES, seed=9)  # T2 rows: the same subjects
DATA = SiteData(
    "hospA",
    train={m: slice_set(m, TRAIN_SLICES, 5, seed=i) for i, m in enumerate(("T1", "T2"))},
    test={"T1": PAIRED, "T2": dataclasses.replace(PAIRED, modality="T2", images=-PAIRED.images)},
)
DP_ONLY = {"epsilon", "delta", "sample_rate", "noise_multiplier", "epsilon-left"}


def config(**overrides: object) -> FedsynthConfig:
    return FedsynthConfig.from_flat(FLAT | overrides)


def site_at(cfg: FedsynthConfig, state: Path) -> Site:
    return Site(cfg, SiteIdentity.of("hospA", state, site_id=7), DATA)


def global_arrays(cfg: FedsynthConfig) -> dict[str, np.ndarray]:
    """The server's generators: state-dict entries under the generator prefixes."""
    model = build_model(cfg.model, seed=123)
    state = model.state_dict()
    return {k: state[k].numpy() for k in expected_shared_keys(model, "cyclegan", ["generators"])}


def _sha256(arrays: dict[str, np.ndarray]) -> str:
    """The oracle of a round's `input` digest: SHA-256 over name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype.str}:{value.shape}".encode() + value.tobytes())
    return h.hexdigest()


def opacus_epsilon(steps: int) -> float:
    """Two releases (G and D) per step at σ = 1, q = Q."""
    reference = RDPAccountant()
    for _ in range(2 * steps):
        reference.step(noise_multiplier=1.0, sample_rate=Q)
    return reference.get_epsilon(delta=1e-5)


def test_train_reply_is_the_allow_list_with_hand_checked_values(tmp_path: Path) -> None:
    cfg = config()
    arrays = global_arrays(cfg)
    site = site_at(cfg, tmp_path / "a")
    metrics = site.train_round(arrays, 1)
    assert set(metrics) == TRAIN_METRICS
    lr = cfg.train.lr  # step 1 of 4 is before the linear decay starts (half-way)
    expected = {
        "num-examples": 2 * TRAIN_SLICES, "site-id": 7, "privacy-unit": 0, "steps": 2,
        "global_step": 2, "lr": lr, "budget_exhausted": 0, "delta": 1e-5, "sample_rate": Q,
        "noise_multiplier": 1.0, "epsilon-left": math.inf,
    }
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["epsilon"] == pytest.approx(opacus_epsilon(2), rel=1e-9)
    shared = site.shared_arrays()
    assert list(shared) == list(arrays)  # the generators, nothing else, in state-dict order
    state = site.model.state_dict()
    assert all(np.array_equal(v, state[k].numpy()) for k, v in shared.items())
    assert any(not np.array_equal(shared[k], arrays[k]) for k in arrays)  # trained


def test_a_round_asked_again_is_replayed_and_the_run_ends_after_its_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config()
    arrays = global_arrays(cfg)
    first = site_at(cfg, tmp_path / "a")
    metrics = first.train_round(arrays, 1)
    update = first.shared_arrays()
    restarted = site_at(cfg, tmp_path / "a")  # a fresh process, same state directory
    assert restarted.train_round(arrays, 1) == metrics
    assert caplog.messages == ["site hospA: round already trained, replaying its reply"]
    assert restarted.state.step == 2 and len(restarted.identity.state.rounds()) == 1
    assert all(np.array_equal(restarted.shared_arrays()[k], update[k]) for k in update)
    assert restarted.train(1)["global_step"] == 3
    rest = restarted.train(10)  # more than remain: only the run's last step
    assert (rest["steps"], rest["global_step"]) == (1, 4)
    with pytest.raises(BudgetExhausted, match="the run's 4 steps are done"):
        restarted.train(1)


def test_a_budget_stops_the_round_early_and_refuses_the_next(tmp_path: Path) -> None:
    budget = (opacus_epsilon(1) + opacus_epsilon(2)) / 2  # one step fits, two do not
    cfg = config(**{"privacy.epsilon-budget": budget})
    site = site_at(cfg, tmp_path / "a")
    metrics = site.train_round(global_arrays(cfg), 1)
    assert (metrics["steps"], metrics["budget_exhausted"]) == (1, 1)
    assert metrics["epsilon-left"] == pytest.approx(budget - opacus_epsilon(1), rel=1e-9)
    with pytest.raises(BudgetExhausted, match="privacy budget reached"):
        site.train(2)


def test_a_non_private_one_round_reply_has_no_privacy_figures(tmp_path: Path) -> None:
    cfg = config(**{"privacy.enabled": False, "federation.num-rounds": 1})
    metrics = site_at(cfg, tmp_path / "a").train_round(global_arrays(cfg), 1)
    assert set(metrics) == TRAIN_METRICS - DP_ONLY and metrics["privacy-unit"] == -1
    assert (metrics["steps"], metrics["global_step"]) == (2, 2)  # the whole run in one round


def test_proximal_term_reaches_training_only_when_asked(tmp_path: Path) -> None:
    """Same fixed noise seed: only FedProx's μ differs. No μ (train_round's or train's
    default) is μ = 0; μ = 0.5 changes the update."""
    cfg = config(**{"privacy.noise-seed": 1})
    arrays = global_arrays(cfg)
    updates = {}
    for mu in ("default", 0.0, 0.5):
        site = site_at(cfg, tmp_path / str(mu))
        site.train_round(arrays, 1, *(() if mu == "default" else (mu,)))
        updates[mu] = site.shared_arrays()
    direct = site_at(cfg, tmp_path / "direct")
    direct.receive(arrays)
    direct.train(2)
    updates["train"] = direct.shared_arrays()

    def same(a: str, b: object) -> bool:
        return all(np.array_equal(updates[a][k], updates[b][k]) for k in arrays)

    assert same("default", 0.0) and same("train", 0.0) and not same(0.5, 0.0)


def test_receive_loads_exactly_the_shared_tensors_and_refuses_others(tmp_path: Path) -> None:
    cfg = config()
    arrays = global_arrays(cfg)
    site = site_at(cfg, tmp_path / "a")
    dropped = sorted(arrays)[:4]
    extra = arrays | {f"D_A.x{i}": np.zeros(1) for i in range(4)}
    missing = {k: v for k, v in arrays.items() if k not in dropped}
    for wrong, why in ((extra, "extra ['D_A.x0', 'D_A.x1', 'D_A.x2'], missing []"),
                       (missing, f"extra [], missing {dropped[:3]}")):  # three named at most
        with pytest.raises(ValueError) as refused:
            site.receive(wrong)
        assert str(refused.value) == f"global arrays do not match the shared keys ({why})"
    site.receive(arrays)
    assert all(np.array_equal(site.shared_arrays()[k], arrays[k]) for k in arrays)


def test_evaluate_replies_the_allow_list(tmp_path: Path) -> None:
    metrics = site_at(config(), tmp_path / "a").evaluate()
    assert set(metrics) == EVALUATE_METRICS
    assert (metrics["num-examples"], metrics["site-id"]) == (TEST_SLICES, 7)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["mae_brain"] <= 2 and -1 <= metrics["ssim_whole"] <= 1


def test_a_site_without_the_pair_evaluates_nothing_under_the_same_keys(tmp_path: Path) -> None:
    only_t1 = dataclasses.replace(DATA, test={"T1": PAIRED})
    site = Site(config(), SiteIdentity.of("hospA", tmp_path / "a", site_id=7), only_t1)
    metrics = site.evaluate()
    assert set(metrics) == EVALUATE_METRICS
    assert (metrics["num-examples"], metrics["site-id"]) == (0, 7)
    assert all(math.isnan(metrics[k]) for k in EVALUATE_METRICS - {"num-examples", "site-id"})


def test_a_new_round_is_trained_not_replayed(tmp_path: Path) -> None:
    """Replay only the same round of the same run: the next round, or the same round of
    another run (another `federation.run-dir`), is trained; a resumed run is the same run."""
    cfg = config()
    arrays = global_arrays(cfg)
    site = site_at(cfg, tmp_path / "a")
    site.train_round(arrays, 1)
    site.train_round({k: v + 0.01 for k, v in arrays.items()}, 2)
    assert site.state.step == 4 and len(site.identity.state.rounds()) == 2
    other_run = config(**{"federation.run-dir": str(tmp_path / "other-run")})
    elsewhere = site_at(other_run, tmp_path / "b")
    elsewhere.train_round(arrays, 1)
    again = site_at(config(), tmp_path / "b")  # the state directory of that other run
    again.train_round(arrays, 1)
    assert len(again.identity.state.rounds()) == 2
    # The other run, resumed: `federation.resume-from` names it, whatever run-dir says.
    resumed = config(**{"federation.resume-from": str(tmp_path / "other-run")})
    before = site_at(resumed, tmp_path / "c")
    before.train_round(arrays, 1)
    replayed = site_at(resumed, tmp_path / "c")
    replayed.train_round(arrays, 1)
    assert len(replayed.identity.state.rounds()) == 1 and replayed.state.step == 2


def test_with_ema_the_reply_is_the_weight_average_not_the_last_weights(tmp_path: Path) -> None:
    site = site_at(config(**{"train.ema-decay": 0.5}), tmp_path / "a")
    site.train_round(global_arrays(config()), 1)
    reply, last = site.shared_arrays(), site.model.state_dict()
    assert reply.keys() == site.state.ema.keys() & reply.keys() and reply
    assert all(np.array_equal(reply[k], site.state.ema[k].numpy()) for k in reply)
    assert any(not np.array_equal(reply[k], last[k].numpy()) for k in reply)


def test_each_round_s_weight_average_starts_at_the_weights_received(tmp_path: Path) -> None:
    """At decay 0.999 two steps barely move the average: round 2's reply sits at round 2's
    global weights (shifted by 1 here), not at round 1's, where a carried-over average is."""
    site = site_at(config(**{"train.ema-decay": 0.999}), tmp_path / "a")
    first = global_arrays(config())
    site.train_round(first, 1)
    second = {k: v + 1.0 for k, v in first.items()}
    site.train_round(second, 2)
    reply = site.shared_arrays()
    assert all(np.abs(reply[k] - second[k]).max() < 0.1 for k in second)


def test_the_round_log_records_each_instruction_and_the_step_reached(tmp_path: Path) -> None:
    cfg = config()
    site = site_at(cfg, tmp_path / "a")
    arrays = global_arrays(cfg)
    started = time.perf_counter()
    site.train_round(arrays, 1)
    assert 0 < site.engine_seconds <= time.perf_counter() - started
    shifted = {k: v + 0.01 for k, v in arrays.items()}
    site.train_round(shifted, 2)
    rows = site.identity.state.rounds()
    assert [(r["round"], r["step"]) for r in rows] == [(1, 2), (2, 4)]
    assert {r["run"] for r in rows} == {str(cfg.federation.run_dir)}
    assert [r["input"] for r in rows] == [_sha256(arrays), _sha256(shifted)]


def test_evaluate_scores_the_site_model_against_a_hand_computed_mae(tmp_path: Path) -> None:
    """Whole-slice MAE, one slice per test subject: mean |G(T1) − T2| by hand."""
    site = site_at(config(), tmp_path / "a")
    site.receive(global_arrays(config()))
    model = site.model.eval()
    with torch.no_grad():
        fake = model.G_AB(torch.from_numpy(PAIRED.images[:, None]))[:, 0].numpy()
    target = DATA.test["T2"].images
    expected = float(np.abs(fake - target).mean())
    copied = float(np.abs(PAIRED.images - target).mean())
    metrics = site.evaluate()
    assert metrics["mae_whole"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - copied) > 0.05  # the oracle tells the model from copying the source
