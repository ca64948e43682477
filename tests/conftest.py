"""Shared fixtures: tiny synthetic NIfTI datasets written with the real layout writers, and a
tiny untrained checkpoint to translate with."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import write_subject
from fedsynth.models import ModelConfig, build_model
from fedsynth.models.checkpoint import save_checkpoint

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (24, 28, 20)
TINY_MODEL = dict(image_size=32, base_channels=4, res_blocks=1, disc_channels=4, disc_layers=2)


def head(rng: np.random.Generator, contrast: float) -> np.ndarray:
    """An ellipsoid 'brain' with an inner 'tissue' blob; `contrast` flips their order."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in SHAPE), indexing="ij")
    outer = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.9) ** 2 < 1
    inner = (x / 0.4) ** 2 + (y / 0.45) ** 2 + (z / 0.5) ** 2 < 1
    vol = np.where(outer, 100.0, 0.0) + np.where(inner, 50.0 * contrast, 0.0)
    return (vol + rng.normal(0, 2, SHAPE)).astype(np.float32).clip(0)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def deny_access(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a file or folder unreadable. chmod does it for a normal user; root reads anything,
    so for root `open` (files) and `os.scandir` (folders) raise the same PermissionError."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def guard(real):
        def call(target, *args, **kwargs):
            if isinstance(target, (str, os.PathLike)) and Path(target) == path:
                raise denied
            return real(target, *args, **kwargs)

        return call

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(os, "scandir", guard(os.scandir))


def write_tiny_dataset(
    root: Path,
    layout: str = "bids",
    sites: tuple[str, ...] = ("siteA", "siteB"),
    n: int | tuple[int, ...] = 5,
) -> Path:
    """`n` subjects per site (or one count per site) with T1 and T2, written in `layout` under
    root/<site>/ and a dataset.json naming the sites (the multi-site root the loader reads)."""
    rng = np.random.default_rng(0)
    counts = n if isinstance(n, tuple) else (n,) * len(sites)
    for si, (site, count) in enumerate(zip(sites, counts, strict=True)):
        for k in range(count):
            images = {
                m: nib.Nifti1Image(head(rng, c), AFFINE) for m, c in (("T1", 1.0), ("T2", -1.5))
            }
            write_subject(root / site, layout, site, si * 100 + k, images)
    (root / "dataset.json").write_text(
        '{"sites": [' + ", ".join(f'{{"name": "{s}"}}' for s in sites) + "]}"
    )
    return root


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """An untrained T1 <-> T2 CycleGAN on 32-px slices (seeded)."""
    model = build_model(ModelConfig(**TINY_MODEL), seed=1)
    return save_checkpoint(
        tmp_path / "m.safetensors", model, PreprocessConfig(image_size=32), {"round": 3}
    )
