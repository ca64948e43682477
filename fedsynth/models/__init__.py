"""Synthesis networks (CycleGAN, unified StarGAN-style generator), their losses and groups."""

from __future__ import annotations

import torch

from fedsynth.models.base import PLAYERS, Batch, Stream, SynthesisModel
from fedsynth.models.blocks import init_weights
from fedsynth.models.config import ModelConfig
from fedsynth.models.cyclegan import CycleGAN
from fedsynth.models.registry import known_kinds, model_class, register_model
from fedsynth.models.unified import UnifiedGAN


def build_model(config: ModelConfig, seed: int = 0) -> SynthesisModel:
    """The networks of `config`, initialised deterministically from `seed` without touching
    the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config.kind)(config)
        init_weights(model)
        if config.registered:
            model.add_registration()
    return model


__all__ = [
    "PLAYERS",
    "Batch",
    "CycleGAN",
    "ModelConfig",
    "Stream",
    "SynthesisModel",
    "UnifiedGAN",
    "build_model",
    "known_kinds",
    "register_model",
]
