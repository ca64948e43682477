"""Shared fixtures: tiny synthetic NIfTI datasets written with the real layout writers
(fedsynth.data.toy, which the benchmarks use too), unreadable paths, and a tiny untrained
checkpoint to translate with."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.toy import AFFINE, SHAPE, head, write_tiny_dataset
from fedsynth.models import ModelConfig, build_model
from fedsynth.models.checkpoint import save_checkpoint

__all__ = ["AFFINE", "SHAPE", "TINY_MODEL", "deny_access", "head", "save_nifti"]
__all__ += ["write_tiny_dataset"]
TINY_MODEL = dict(image_size=32, base_channels=4, res_blocks=1, disc_channels=4, disc_layers=2)


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
