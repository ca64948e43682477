"""The registered paired loss (`model.pairing-loss=registered`, RegGAN): the warp against a
shift made by hand, the registration network recovering a shift we applied, per-sample
gradients of the generators' player (R included) against a loop over samples, DP clipping,
noise and accounting covering R, warm starts with and without R, and the config's refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_slices import SIZE, head, tiny_config
from test_pairs import paired_site

from fedsynth.config import FedsynthConfig
from fedsynth.data.config import PreprocessConfig
from fedsynth.models import build_model
from fedsynth.models.base import Partners
from fedsynth.models.checkpoint import save_checkpoint
from fedsynth.models.registration import warp
from fedsynth.models.warm_start import initial_model
from fedsynth.privacy import PrivacyConfig
from fedsynth.privacy.dp_sgd import private_gradient
from fedsynth.privacy.per_sample import per_sample_gradients
from fedsynth.training import TrainConfig, train_local

REGISTERED = {"lambda_paired": 5.0, "pairing_loss": "registered", "registration_channels": 4}


def registered(kind: str = "unified", **overrides: object):
    return build_model(tiny_config(kind, **(REGISTERED | overrides)), seed=1)


def shifted_pairs(n: int = 4, shift: tuple[int, int] = (3, -2)) -> tuple[torch.Tensor, ...]:
    """Heads and the same heads moved by `shift` (rows, columns) pixels: a pair misaligned
    by a known translation."""
    x = torch.cat([head(SIZE, seed=i) for i in range(n)])
    return x, torch.roll(x, shifts=shift, dims=(-2, -1))


def test_warp_by_a_constant_integer_field_is_a_shift() -> None:
    x, _ = shifted_pairs(2)
    flow = torch.zeros(2, 2, SIZE, SIZE)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample 2 px right, 1 px up
    moved = warp(x, flow)
    expected = torch.roll(x, shifts=(1, -2), dims=(-2, -1))  # the oracle: a hand-made shift
    torch.testing.assert_close(moved[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2])


def test_the_registration_network_recovers_a_shift_we_applied() -> None:
    model = registered(lambda_smooth=1.0)
    x, y = shifted_pairs()
    stream = {
        "partner": torch.cat([torch.zeros_like(y), y, torch.zeros_like(y)], dim=1),
        "partner_available": torch.tensor([[0.0, 1.0, 0.0]]).expand(4, -1),
    }
    target = torch.ones(4, dtype=torch.long)
    optimiser = torch.optim.Adam(model.R.parameters(), lr=3e-3)
    before = model.pairing(stream, x, target)[1]["paired"].mean().item()
    for _ in range(250):  # R alone: the "synthetic" image is the unshifted head itself
        weighted, _ = model.pairing(stream, x, target)
        optimiser.zero_grad()
        weighted.mean().backward()
        optimiser.step()
    with torch.no_grad():
        flow = model.R(x, y)
        after = model.pairing(stream, x, target)[1]["paired"].mean().item()
    brain = (x > -1)[:, 0]
    # y(p) = x(p - shift) = x(p + flow): the field is minus the shift, (x: +2, y: -3)
    assert flow[:, 0][brain].mean().item() == pytest.approx(2.0, abs=0.4)
    assert flow[:, 1][brain].mean().item() == pytest.approx(-3.0, abs=0.4)
    assert after < 0.2 * before


def partnered_batch(model, n: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A batch of T1 slices whose T2 partners are the slices shifted by 2 pixels."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, SIZE, SIZE, generator=g, dtype=dtype) * 2 - 1)
    k = model.config.num_modalities
    planes = torch.zeros(n, k, SIZE, SIZE, dtype=dtype)
    planes[:, 0:1], planes[:, 1:2] = x, torch.roll(x, 2, dims=-1)
    available = torch.zeros(n, k, dtype=torch.bool)
    available[:, :2] = True
    available[-1, 1] = False  # the last sample's subject has no T2: no paired term
    partners = Partners({"T1": planes}, {"T1": available})
    return model.make_batch({"T1": x}, torch.Generator().manual_seed(seed), partners)


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_per_sample_gradients_of_the_generators_and_r_match_a_loop(kind: str) -> None:
    """In float64 (float32 rounding can flip a ReLU/|x| kink between the two paths)."""
    model = registered(kind).double()
    batch = partnered_batch(model, dtype=torch.float64)
    grads, terms = per_sample_gradients(model, "generators", batch)
    assert any(k.startswith("R.") for k in grads) and "smooth" in terms
    params = model.group_parameters("generators")
    (stream, tensors), = batch.items()
    for i in range(len(tensors["image"])):  # the oracle: autograd on one sample at a time
        one = {k: v[i : i + 1] for k, v in tensors.items()}
        loss = model(stream, "generators", one)["loss"].sum()
        expected = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), expected, strict=True):
            g = torch.zeros_like(params[name]) if g is None else g
            torch.testing.assert_close(grads[name][i], g, rtol=1e-9, atol=1e-12)
    r_grads = torch.cat([g.flatten(1) for k, g in grads.items() if k.startswith("R.")], dim=1)
    assert r_grads[-1].abs().max() == 0  # no partner: R learns nothing from that sample
    assert r_grads[0].abs().max() > 0


def test_dp_clips_r_with_the_generators_and_noises_it() -> None:
    # Private fine-tuning's norm-bias generators with R in full, R's field already moving and
    # heavy pairing weights: R is then a large part of each paired sample's gradient norm.
    model = registered("cyclegan", lambda_paired=50.0, lambda_smooth=1000.0, trainable="norm-bias")
    torch.nn.init.normal_(model.R.flow.weight, std=0.5)
    batch = partnered_batch(model, n=4)
    clip, sigma, expected_batch = 0.05, 2.0, 4.0
    per_sample, _ = per_sample_gradients(model, "generators", batch)

    def norms(keys) -> torch.Tensor:
        return torch.stack([per_sample[k].flatten(1).pow(2).sum(1) for k in keys]).sum(0).sqrt()

    total, of_r = norms(list(per_sample)), norms([k for k in per_sample if k.startswith("R.")])
    assert (of_r[:-1] > 0.3 * total[:-1]).all()  # R is a large part of a paired sample's norm
    assert (total > clip).all()  # every sample is clipped, over G and R together
    factor = clip / total
    kwargs = dict(max_grad_norm=clip, expected_batch_size=expected_batch)
    quiet, _, _ = private_gradient(
        model, "generators", batch, noise_multiplier=0.0,
        generator=torch.Generator().manual_seed(0), **kwargs,
    )  # fmt: skip
    noisy, _, _ = private_gradient(
        model, "generators", batch, noise_multiplier=sigma,
        generator=torch.Generator().manual_seed(0), **kwargs,
    )  # fmt: skip
    r_keys = [k for k in per_sample if k.startswith("R.")]
    for key in per_sample:  # the oracle: clip the joint per-sample gradient by hand, then sum
        clipped = (factor.view(-1, *[1] * (per_sample[key].dim() - 1)) * per_sample[key]).sum(0)
        torch.testing.assert_close(quiet[key], clipped / expected_batch, rtol=1e-4, atol=1e-7)
    noise = torch.cat([(noisy[k] - quiet[k]).flatten() for k in r_keys])
    assert noise.std().item() == pytest.approx(sigma * clip / expected_batch, rel=0.05)


def test_epsilon_counts_r_as_part_of_the_generators_release() -> None:
    """R adds no release: ε is that of two Gaussian releases per step (generators with R,
    discriminators), as for the L1 model, and as Opacus's RDP accountant says (the oracle)."""
    from opacus.accountants import RDPAccountant

    dp = PrivacyConfig(noise_multiplier=1.3, max_grad_norm=1.0, unit="subject", noise_seed=3)
    train = TrainConfig(steps=3, batch_size=2)
    epsilons = {}
    for loss in ("registered", "l1"):
        cfg = tiny_config("unified", **(REGISTERED | {"pairing_loss": loss}))
        model = build_model(cfg)
        before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("R.")}
        metrics, _ = train_local(model, paired_site(), train, dp)
        epsilons[loss] = metrics["epsilon"]
        if loss == "registered":  # R trained: every tensor moved (clipped gradient + noise)
            after = model.state_dict()
            assert before and all(not torch.equal(v, after[k]) for k, v in before.items())
    oracle = RDPAccountant()
    q = 2 / 4  # batch 2 over the site's 4 subjects
    for _ in range(2 * train.steps):
        oracle.step(noise_multiplier=dp.noise_multiplier, sample_rate=q)
    assert epsilons["registered"] == pytest.approx(epsilons["l1"], rel=1e-12)
    assert epsilons["registered"] == pytest.approx(oracle.get_epsilon(dp.delta), rel=1e-6)


def test_r_is_shared_with_the_generators_and_trained_in_full() -> None:
    model = build_model(tiny_config("unified", trainable="norm-bias", **REGISTERED))
    shared = model.shared_keys(["generators"])
    r_keys = [k for k in model.state_dict() if k.startswith("R.")]
    assert r_keys and set(r_keys) <= set(shared)
    assert "R.flow.weight" in model.group_parameters("generators")
    assert not any(k.startswith("R.") for k in model.shared_keys(["discriminators"]))


def test_r_leaves_the_synthesis_networks_as_they_were() -> None:
    plain = build_model(tiny_config("unified", lambda_paired=5.0), seed=4)
    with_r = build_model(tiny_config("unified", **REGISTERED), seed=4)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(with_r.state_dict()[key], value, rtol=0, atol=0)
    with torch.no_grad():  # R starts as the identity warp
        x, y = shifted_pairs(2)
        assert with_r.R(x, y).abs().max() == 0


def test_warm_starts_with_and_without_r(tmp_path: Path) -> None:
    pre = PreprocessConfig(image_size=SIZE)
    plain_cfg = tiny_config("unified", lambda_paired=5.0)
    plain = build_model(plain_cfg, seed=2)
    save_checkpoint(tmp_path / "plain.safetensors", plain, pre)
    started = initial_model(tiny_config("unified", **REGISTERED), 0, tmp_path / "plain.safetensors")
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(started.state_dict()[key], value, rtol=0, atol=0)
    assert started.R.flow.weight.abs().max() == 0  # fresh
    save_checkpoint(tmp_path / "reg.safetensors", started, pre)
    back = initial_model(plain_cfg, 0, tmp_path / "reg.safetensors")
    assert not any(k.startswith("R.") for k in back.state_dict())


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_a_registered_step_trains_without_and_with_dp(kind: str) -> None:
    mods = ("T1", "T2") if kind == "cyclegan" else ("T1", "T2", "PD")
    for dp in (
        PrivacyConfig(enabled=False),
        PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, unit="subject", noise_seed=5),
    ):
        model = build_model(tiny_config(kind, modalities=mods, **REGISTERED))
        metrics, _ = train_local(model, paired_site(mods), TrainConfig(steps=2, batch_size=2), dp)
        assert np.isfinite(metrics["generators/paired"]) and metrics["generators/paired"] > 0
        assert np.isfinite(metrics["generators/smooth"])


@pytest.mark.parametrize(
    ("flat", "named"),
    [
        ({"model.pairing-loss": "bogus"}, "'bogus'"),
        ({"model.pairing-loss": "registered"}, "needs lambda_paired > 0"),
        ({"model.pairing-loss": "none", "model.lambda-paired": 2.0}, "lambda_paired=2.0"),
        ({"model.registration-channels": 0}, "registration_channels"),
        ({"model.lambda-smooth": -1.0}, "lambda_smooth"),
    ],
)
def test_bad_pairing_settings_name_the_value(flat: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        FedsynthConfig.from_flat({"data.pairing": "paired"} | flat)


def test_old_recipes_keep_their_l1() -> None:
    """A config (or checkpoint) from before pairing-loss existed means the L1 it always did."""
    cfg = FedsynthConfig.from_flat({"data.pairing": "paired", "model.lambda-paired": 10.0})
    assert cfg.model.pairing_loss == "l1" and not cfg.model.registered
    assert "R" not in dict(build_model(cfg.model).named_children())
    assert math.isclose(FedsynthConfig().model.lambda_paired, 0.0)
