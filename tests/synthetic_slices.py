"""Tiny synthetic slices and model configs for the model, privacy and engine tests."""

from __future__ import annotations

import numpy as np
import torch

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


def head(size: int = 32, seed: int = 0, lesion: bool = True) -> torch.Tensor:
    """A disc of 'brain' on background -1 with a bright blob and some texture: (1, 1, H, W)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = 0.2 + 0.1 * torch.rand(size, size, generator=g)
    if lesion:
        img = img + 0.6 * (((x - 0.25) ** 2 + (y + 0.1) ** 2) < 0.04).float()
    return torch.where(x**2 + y**2 < 0.7, img, torch.full_like(img, -1.0))[None, None]
