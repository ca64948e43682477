"""Tiny synthetic slices and model configs for the model, privacy and engine tests."""

from __future__ import annotations

import numpy as np

from fedsynth.data.slices import SiteData, SliceSet
from fedsynth.models import ModelConfig

SIZE = 32


def tiny_config(kind: str = "cyclegan", **overrides: object) -> ModelConfig:
    """The smallest sensible model: 8 channels, one residual block, 32 px."""
    fields = dict(
        kind=kind,
        modalities=("T1", "T2", "PD") if kind == "unified" else ("T1", "T2"),
        image_size=SIZE,
        base_channels=8,
        res_blocks=1,
        disc_channels=8,
        disc_layers=2,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def slice_set(
    modality: str, slices: int, subjects: int, seed: int = 0, size: int = SIZE
) -> SliceSet:
    """Random slices in [-1, 1] from `subjects` subjects named after the modality (so no
    subject appears under two modalities, as in real unpaired training data)."""
    rng = np.random.default_rng(seed)
    return SliceSet(
        modality,
        rng.uniform(-1, 1, (slices, size, size)).astype(np.float32),
        np.ones((slices, size, size), dtype=bool),
        np.array([f"{modality}-sub{i % subjects}" for i in range(slices)]),
        np.arange(slices),
    )


def site(
    modalities: tuple[str, ...] = ("T1", "T2"), slices: int = 12, subjects: int = 4
) -> SiteData:
    return SiteData(
        "site0",
        {m: slice_set(m, slices, subjects, seed=i) for i, m in enumerate(modalities)},
    )
