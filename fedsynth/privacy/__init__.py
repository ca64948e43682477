"""Differential privacy for GAN training: per-sample gradients, DP-SGD, accounting, budgets.

One concern per module, as in Opacus: `per_sample` (torch.func gradients), `dp_sgd`
(clipping + noise), `sampling` (Poisson sampling over slice or subject units), `accountant`
(two-player composition on Opacus accountants), `budget` (stop before exceeding (eps, delta)),
`calibrate` (the sigma that meets an (eps, delta) target).
"""

from fedsynth.privacy.accountant import PrivacyAccountant
from fedsynth.privacy.budget import BudgetPlan, PrivacyBudget
from fedsynth.privacy.config import PrivacyConfig
from fedsynth.privacy.dp_sgd import clip_and_noise, private_gradient
from fedsynth.privacy.per_sample import batch_gradients, per_sample_gradients
from fedsynth.privacy.sampling import UnitIndex

__all__ = [
    "BudgetPlan",
    "PrivacyAccountant",
    "PrivacyBudget",
    "PrivacyConfig",
    "UnitIndex",
    "batch_gradients",
    "clip_and_noise",
    "per_sample_gradients",
    "private_gradient",
]
