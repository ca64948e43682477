"""GAN losses, each returned per sample (shape (B,)) so DP-SGD can clip every sample's gradient.

Pass reduction="mean" for the usual batch scalar; nothing here mixes samples before reducing.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["none", "mean"]


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def _per_sample_mean(values: Tensor) -> Tensor:
    return values.flatten(1).mean(dim=1)


def lsgan_loss(prediction: Tensor, real: bool, reduction: Reduction = "none") -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean over patches of (D(x) - 1{real})^2."""
    target = 1.0 if real else 0.0
    return _reduce(_per_sample_mean((prediction - target) ** 2), reduction)


def l1_loss(output: Tensor, reference: Tensor, reduction: Reduction = "none") -> Tensor:
    """Mean absolute difference per sample: cycle, identity and reconstruction losses."""
    return _reduce(_per_sample_mean((output - reference).abs()), reduction)


def classification_loss(logits: Tensor, labels: Tensor, reduction: Reduction = "none") -> Tensor:
    """Cross-entropy of modality logits (B, K) against label indices (B,)."""
    return _reduce(F.cross_entropy(logits, labels, reduction="none"), reduction)
