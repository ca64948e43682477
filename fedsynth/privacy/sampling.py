"""Which training slices a step uses: Poisson sampling over privacy units (slices or subjects).

Items are (modality, row) slices, stored grouped by unit. With unit "slice" every slice is
its own unit. With unit "subject" each subject is a unit: Poisson sampling includes every
subject independently with probability q, and each included subject contributes ONE of its
slices, chosen uniformly at random (across all its modalities). A subject therefore adds at
most one clipped gradient (norm <= C) to a release, so the subsampled-Gaussian accounting at
rate q is a subject-level (patient-level) guarantee, at the cost of one slice per subject per
step. (The alternative, all of a subject's slices with their summed gradient clipped, costs a
variable and possibly large batch per step.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedsynth.data.slices import SliceSet
from fedsynth.privacy.config import UNITS, PrivacyConfig


def sample_rate(privacy: PrivacyConfig, batch_size: int, num_units: int) -> float:
    """The Poisson rate q of a site's releases: `privacy.sample_rate`, else the one that makes
    `batch_size` the expected batch (min(1, batch_size / num_units)).

    Args:
        privacy: the run's privacy settings.
        batch_size: `train.batch-size`.
        num_units: the site's privacy units (slices or subjects).

    Returns:
        q in (0, 1].
    """
    if privacy.sample_rate is not None:
        return privacy.sample_rate
    return min(1.0, batch_size / num_units)


class UnitIndex:
    """Training slices of several modalities, grouped into privacy units."""

    def __init__(self, sets: Mapping[str, SliceSet], unit: str) -> None:
        if unit not in UNITS:
            raise ValueError(f"unknown privacy unit {unit!r}; expected one of {UNITS}")
        self.unit = unit
        self.modalities = tuple(sets)
        modality = np.concatenate(
            [np.full(len(s), i, dtype=np.int64) for i, s in enumerate(sets.values())]
        )
        row = np.concatenate([np.arange(len(s), dtype=np.int64) for s in sets.values()])
        if len(row) == 0:
            raise ValueError(f"no training slices in modalities {self.modalities}")
        if unit == "slice":
            order = np.arange(len(row))
            counts = np.ones(len(row), dtype=np.int64)
        else:
            subjects = np.concatenate([np.asarray(s.subjects).astype(str) for s in sets.values()])
            order = np.argsort(subjects, kind="stable")
            counts = np.unique(subjects[order], return_counts=True)[1]
        self._modality, self._row = modality[order], row[order]
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    @property
    def num_units(self) -> int:
        return len(self._counts)

    @property
    def num_slices(self) -> int:
        return len(self._row)

    def poisson(self, sample_rate: float, generator: torch.Generator) -> dict[str, np.ndarray]:
        """Each unit independently with probability `sample_rate`; may be empty."""
        chosen = (torch.rand(self.num_units, generator=generator) < sample_rate).numpy()
        return self._pick(np.flatnonzero(chosen), generator)

    def uniform(self, size: int, generator: torch.Generator) -> dict[str, np.ndarray]:
        """`size` distinct units (all if fewer): the fixed-size batch of non-private training."""
        units = torch.randperm(self.num_units, generator=generator)[:size].numpy()
        return self._pick(np.sort(units), generator)

    def _pick(self, units: np.ndarray, generator: torch.Generator) -> dict[str, np.ndarray]:
        """One uniformly random slice of each unit, as modality -> sorted rows."""
        offsets = torch.rand(len(units), generator=generator, dtype=torch.float64).numpy()
        items = self._starts[units] + np.floor(offsets * self._counts[units]).astype(np.int64)
        return {
            m: np.sort(self._row[items][self._modality[items] == i])
            for i, m in enumerate(self.modalities)
        }
