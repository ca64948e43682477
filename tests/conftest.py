"""Shared fixtures: tiny synthetic NIfTI datasets written with the real layout writers
(fedsynth.data.toy, which the benchmarks use too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.data.toy import AFFINE, SHAPE, head, write_tiny_dataset

__all__ = ["AFFINE", "SHAPE", "head", "write_tiny_dataset"]


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")
