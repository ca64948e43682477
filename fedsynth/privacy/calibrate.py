"""The noise multiplier that meets an (ε, δ) target: what a sweep over budgets needs."""

from __future__ import annotations

import math

from fedsynth.privacy.accountant import PrivacyAccountant


def calibrate_sigma(
    epsilon: float, delta: float, sample_rate: float, steps: int, mechanism: str = "rdp"
) -> float:
    """Smallest σ (rounded up to 0.01) whose two releases per step (G and D) over `steps`
    steps at Poisson rate `sample_rate` stay within (ε, δ) under the `mechanism` accountant.
    Bisection: ε falls monotonically as σ grows."""

    def eps(sigma: float) -> float:
        release = (sigma, sample_rate)
        return PrivacyAccountant(mechanism, "slice").epsilon(
            delta, {"generators": release, "discriminators": release}, steps
        )

    low, high = 0.3, 50.0
    if eps(high) > epsilon:
        raise ValueError(f"ε={epsilon} unreachable in {steps} steps at q={sample_rate:.3f}")
    while high - low > 0.01:
        mid = 0.5 * (low + high)
        low, high = (low, mid) if eps(mid) <= epsilon else (mid, high)
    return math.ceil(high * 100) / 100
