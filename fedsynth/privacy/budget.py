"""An (epsilon, delta) budget: how many more steps fit, and a clear message when none do.

Checked before training rather than inside it: the per-step releases are fixed for a call,
epsilon grows monotonically with steps, so a bisection over the step count finds the last
step that stays within budget and training simply stops before the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedsynth.privacy.accountant import Mechanism, PrivacyAccountant


@dataclass(frozen=True)
class BudgetPlan:
    """How many of the requested steps fit; `message` says why training stops early, if it does."""

    steps: int
    requested: int
    epsilon_after: float
    message: str | None = None

    @property
    def exhausted(self) -> bool:
        return self.steps < self.requested


@dataclass(frozen=True)
class PrivacyBudget:
    """The most a site may spend: epsilon at delta.

    Args:
        epsilon: the largest ε allowed, > 0.
        delta: the δ at which ε is computed, in (0, 1).

    Raises:
        ValueError: `epsilon` or `delta` out of range.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"budget epsilon must be > 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"budget delta must be in (0, 1), got {self.delta!r}")

    def plan(
        self, accountant: PrivacyAccountant, per_step: Mapping[str, Mechanism], requested: int
    ) -> BudgetPlan:
        """How many more steps fit the budget.

        Args:
            accountant: the site's accountant, with the releases made so far.
            per_step: per player, the (σ, q) of the release it makes at every step.
            requested: the steps asked for.

        Returns:
            The plan for the largest k <= `requested` such that k more steps keep ε within
            budget (ε ≤ budget), with a message when k < `requested`.
        """

        cache: dict[int, float] = {}

        def eps(k: int) -> float:
            if k not in cache:
                cache[k] = accountant.epsilon(self.delta, per_step, k)
            return cache[k]

        if eps(requested) <= self.epsilon:
            return BudgetPlan(requested, requested, eps(requested))
        lo, hi = 0, requested  # invariant: eps(lo) <= budget or lo == 0; eps(hi) > budget
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if eps(mid) <= self.epsilon else (lo, mid)
        fits = lo  # by the invariant: 0 when even the steps already taken exceed the budget
        spent = eps(fits)
        message = (
            f"privacy budget reached: step {fits + 1} of {requested} would raise epsilon from "
            f"{spent:.3f} to {eps(fits + 1):.3f} > budget {self.epsilon:g} (delta={self.delta:g}, "
            f"{accountant.unit}-level, {accountant.mechanism.upper()}); "
            f"training stops after {fits} step(s)"
        )
        return BudgetPlan(fits, requested, spent, message)
