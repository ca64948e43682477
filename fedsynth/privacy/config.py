"""Privacy settings: one typed object with explicit defaults, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

ACCOUNTANTS = ("rdp", "prv")
"""Accountant names: mechanisms of Opacus's registry (`opacus.accountants.create_accountant`),
listed here so that validating a config needs no opacus import (a test checks the registry)."""
UNITS = ("slice", "subject")
CLIPPING = ("flat", "automatic")


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings for the generator and discriminator players of a site.

    enabled: train with DP-SGD (per-sample clipping + Gaussian noise, Poisson sampling).
    noise_multiplier: sigma; each release adds N(0, (sigma * max_grad_norm)^2) per coordinate.
    max_grad_norm: C, the per-unit clipping norm (over all parameters of one player).
    clipping: "flat" (g·min(1, C/‖g‖), Abadi et al.) or "automatic" (g·C/(‖g‖ + 0.01), every
        unit normalised: Bu et al. 2023, no C to tune — the sensitivity is C either way).
    delta: the delta of the reported (epsilon, delta) guarantee.
    epsilon_budget: stop training before the step that would take epsilon past this; None
        means no budget (epsilon is still accounted and reported).
    accountant: "rdp" (Opacus RDPAccountant) or "prv" (Opacus PRVAccountant, tighter).
    unit: "subject" (patient-level DP: subjects are Poisson-sampled and each sampled subject
        contributes one random slice) or "slice" (slice-level DP, weaker: one patient
        contributes many slices).
    sample_rate: Poisson inclusion probability q of each unit; None means
        min(1, batch_size / number of units), i.e. the training batch size is the expected one.
    noise_seed: NOT PRIVATE when set. None (default): the sampling and noise are seeded from a
        secret the site draws from the OS's secure random source (`fedsynth.privacy.secret`).
        An int fixes them for reproducible experiments, and anyone who knows the config can
        then regenerate and subtract the noise.
    secure_mode: draw each noise coordinate as the sum of four Gaussians / 2 (Opacus's defence
        against floating-point attacks on Gaussian sampling); 4x the random numbers.
    """

    enabled: bool = True
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    clipping: str = "flat"
    delta: float = 1e-5
    epsilon_budget: float | None = None
    accountant: str = "rdp"
    unit: str = "subject"
    sample_rate: float | None = None
    noise_seed: int | None = None
    secure_mode: bool = False

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(
                f"PrivacyConfig.noise_multiplier must be > 0, got {self.noise_multiplier!r}"
            )
        if not self.max_grad_norm > 0:
            raise ValueError(f"PrivacyConfig.max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"PrivacyConfig.delta must be in (0, 1), got {self.delta!r}")
        if self.epsilon_budget is not None and not self.epsilon_budget > 0:
            raise ValueError(
                f"PrivacyConfig.epsilon_budget must be > 0 or None, got {self.epsilon_budget!r}"
            )
        if self.clipping not in CLIPPING:
            raise ValueError(
                f"privacy.clipping must be one of {CLIPPING}, got {self.clipping!r}"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"PrivacyConfig.accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}"
            )
        if self.unit not in UNITS:
            raise ValueError(f"PrivacyConfig.unit must be one of {UNITS}, got {self.unit!r}")
        if self.sample_rate is not None and not 0 < self.sample_rate <= 1:
            raise ValueError(
                f"PrivacyConfig.sample_rate must be in (0, 1] or None, got {self.sample_rate!r}"
            )
