"""In-memory views of preprocessed slices: what the training engine and the metrics consume.

Everything here is plain numpy, so `training`, `privacy` and `evaluation` never need to
know which layout or cache the slices came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SliceSet:
    """Axial slices of one modality.

    images: (N, H, W) float32 in [-1, 1] (percentile-scaled per volume; background -1).
    masks: (N, H, W) bool, the brain/foreground mask of each slice.
    subjects: (N,) str, the subject each slice comes from (the privacy unit for subject-level DP).
    positions: (N,) int, the slice index (axial z, RAS) inside the subject's volume.
    labels: (N, H, W) uint8 label map (0 background; the dataset's own label values), or None
        when any of the slices' subjects has no label file.
    voxel_ml: (N,) float, the volume of one pixel of each slice in ml (NaN when unknown).
    """

    modality: str
    images: np.ndarray
    masks: np.ndarray
    subjects: np.ndarray
    positions: np.ndarray
    labels: np.ndarray | None = None
    voxel_ml: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        rows = [self.masks, self.subjects, self.positions]
        rows += [a for a in (self.labels, self.voxel_ml) if a is not None]
        if any(len(a) != n for a in rows):
            raise ValueError(f"SliceSet[{self.modality}]: arrays disagree on the number of slices")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def take(self, rows: np.ndarray) -> SliceSet:
        """The slices at `rows`, as a new SliceSet."""
        rows = np.asarray(rows, dtype=np.int64)
        return SliceSet(
            self.modality,
            *(None if a is None else a[rows] for a in (getattr(self, f) for f in _ROW_FIELDS)),
        )

    def unique_subjects(self) -> list[str]:
        return sorted(set(self.subjects.tolist()))

    @classmethod
    def concat(cls, sets: list[SliceSet]) -> SliceSet:
        """One SliceSet of several of the same modality (e.g. pooled sites)."""
        if not sets or len({s.modality for s in sets}) != 1:
            raise ValueError("concat needs one or more SliceSets of a single modality")
        parts = [[getattr(s, f) for s in sets] for f in _ROW_FIELDS]
        return cls(
            sets[0].modality,
            *(None if any(a is None for a in p) else np.concatenate(p) for p in parts),
        )


_ROW_FIELDS = ("images", "masks", "subjects", "positions", "labels", "voxel_ml")


@dataclass(frozen=True)
class SiteData:
    """One site's data, ready to train on and to evaluate.

    train: modality -> training slices. Unpaired: no subject appears under two modalities.
    test: modality -> paired held-out slices of subjects never trained on; row i is the same
        subject and slice position in every modality, so source row i and target row i are a
        ground-truth pair.
    validation: the same for validation subjects (disjoint from test; may be empty): what
        chooses a checkpoint, so the test subjects stay unseen.
    paired: `data.pairing=paired`: a training subject gives every contrast it has, and its
        slices of one position are partners across modalities (`fedsynth.data.pairs`).
    """

    site: str
    train: dict[str, SliceSet] = field(default_factory=dict)
    test: dict[str, SliceSet] = field(default_factory=dict)
    validation: dict[str, SliceSet] = field(default_factory=dict)
    paired: bool = False

    @property
    def modalities(self) -> list[str]:
        return sorted(set(self.train) | set(self.test))

    def num_train_slices(self) -> int:
        return sum(len(s) for s in self.train.values())


def pool_sites(sites: list[SiteData], name: str = "pooled") -> SiteData:
    """All sites' data as one site: the centralized baseline (what federation approximates).

    Training slices of every modality any site has (partners stay partners: a uid names
    its site); paired held-out sets only over the modalities EVERY site holds, so that row i
    stays one subject in each of them. Paired when every site is."""

    def pool(part: str, aligned: bool) -> dict[str, SliceSet]:
        sets = [getattr(s, part) for s in sites]
        mods = set.intersection(*map(set, sets)) if aligned else set().union(*sets)
        return {m: SliceSet.concat([d[m] for d in sets if m in d]) for m in sorted(mods)}

    paired = all(s.paired for s in sites)
    return SiteData(
        name, pool("train", False), pool("test", True), pool("validation", True), paired
    )
