"""Exponential moving average of the generators' trained weights (the standard GAN stabiliser,
and De et al. 2022's DP-SGD recipe). It is computed from released weights only, so it is
post-processing of the DP output: no privacy cost, and the accountant never sees it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fedsynth.models.base import SynthesisModel

EMA_PLAYER = "generators"


def start_ema(model: SynthesisModel) -> dict[str, Tensor]:
    """An average that starts at the generators' current trained weights."""
    return {k: p.detach().clone() for k, p in model.group_parameters(EMA_PLAYER).items()}


@torch.no_grad()
def update_ema(ema: dict[str, Tensor], model: SynthesisModel, decay: float) -> None:
    """ema <- decay·ema + (1 − decay)·w, in place, for every averaged weight."""
    params = model.group_parameters(EMA_PLAYER)
    for key, value in ema.items():
        value.lerp_(params[key].detach(), 1.0 - decay)


@torch.no_grad()
def load_ema(model: SynthesisModel, ema: Mapping[str, Tensor]) -> None:
    """Put the averaged weights into `model` (what a run reports and a site shares)."""
    params = model.group_parameters(EMA_PLAYER)
    for key, value in ema.items():
        params[key].copy_(value)
