"""DP-SGD (Abadi et al. 2016) for one private player: clip each unit's gradient, sum, add noise.

The released gradient is (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q * N): divided by the
*expected* Poisson batch size, never the realised one (which would leak the batch size). An
empty batch still releases noise and still counts as a step for the accountant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedsynth.models.base import Batch, SynthesisModel
from fedsynth.privacy.per_sample import Grads, Terms, per_sample_gradients


def per_sample_norms(per_sample: Grads) -> Tensor:
    """L2 norm of each sample's gradient over all of the player's parameters: (n,)."""
    squares = [g.flatten(1).pow(2).sum(dim=1) for g in per_sample.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


AUTOMATIC_STABILITY = 0.01
"""γ of automatic clipping, C·g/(‖g‖ + γ) (Bu et al. 2023 use 0.01)."""


def clip_factors(
    per_sample: Grads, max_grad_norm: float, automatic: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-sample factors that bring every sample's gradient (over ALL of the player's tensors)
    to norm <= C — min(1, C/‖g_i‖), or C/(‖g_i‖ + γ) with automatic clipping — and the norms
    themselves: ((n,), (n,))."""
    norms = per_sample_norms(per_sample)
    if automatic:
        return max_grad_norm / (norms + AUTOMATIC_STABILITY), norms
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0), norms


def gaussian(shape: torch.Size, generator: torch.Generator, secure_mode: bool) -> Tensor:
    """Standard normal noise. `secure_mode`: the sum of 2n = 4 draws divided by 2 (same
    distribution), Opacus's defence against floating-point attacks on one Gaussian draw
    (Holohan & Braghin 2021, §5.1; Jin et al. 2022)."""
    if not secure_mode:
        return torch.randn(shape, generator=generator)
    return sum(torch.randn(shape, generator=generator) for _ in range(4)) / 2


def clip_and_noise(
    per_sample: Grads,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator,
    automatic: bool = False,
    secure_mode: bool = False,
) -> tuple[Grads, Tensor]:
    """The private gradient from per-sample gradients (n may be 0), and the per-sample norms."""
    if not expected_batch_size > 0:
        raise ValueError(f"expected_batch_size must be > 0, got {expected_batch_size!r}")
    scale, norms = clip_factors(per_sample, max_grad_norm, automatic)
    std = noise_multiplier * max_grad_norm
    private = {}
    for name, g in per_sample.items():
        clipped_sum = torch.einsum("n,n...->...", scale, g)
        noise = gaussian(clipped_sum.shape, generator, secure_mode).to(g.device)
        private[name] = (clipped_sum + std * noise) / expected_batch_size
    return private, norms


def private_gradient(
    model: SynthesisModel,
    player: str,
    batch: Batch,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator,
    automatic: bool = False,
    multiplicity: int = 1,
    secure_mode: bool = False,
) -> tuple[Grads, Terms, Tensor]:
    """One DP-SGD release for `player`: (private gradient, per-sample loss terms, norms).
    With `multiplicity` K the batch holds K consecutive views of each unit, whose gradients
    are averaged before clipping (`per_sample_gradients`)."""
    per_sample, terms = per_sample_gradients(model, player, batch, multiplicity)
    grads, norms = clip_and_noise(
        per_sample,
        max_grad_norm=max_grad_norm,
        noise_multiplier=noise_multiplier,
        expected_batch_size=expected_batch_size,
        generator=generator,
        automatic=automatic,
        secure_mode=secure_mode,
    )
    return grads, terms, norms
