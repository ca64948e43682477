"""Typed settings of the data layer: preprocessing (which keys the slice cache) and splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedsynth.data.layouts import LAYOUTS, normalise_modality

PARTITIONS = ("by-site", "iid", "dirichlet")
PAIRINGS = ("unpaired", "paired")
SCALINGS = ("median", "percentile")
BACKGROUND = -1.0
"""The value of every preprocessed voxel outside the foreground (the bottom of [-1, 1])."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Volume → slices. Every field is part of the slice-cache key.

    Intensities, per volume, linearly to [-1, 1] (clipped) from the voxels inside the
    foreground mask; voxels outside it are BACKGROUND (-1). `scaling`:
    - "median" (default): the `lower_percentile` maps to -1 and lower + `median_span` ×
      (median − lower) to +1, so the median sits at -1 + 2 / median_span. Normal tissue lands
      at the same value whatever the lesion load: a lesion is normal tissue's median only if
      it fills half the brain.
    - "percentile": `lower_percentile`..`upper_percentile` to [-1, 1]. A bright lesion that
      fills a few % of the brain pulls the upper percentile onto itself, which moves every
      normal tissue (measured on the phantom: FLAIR white matter at +0.7 without a lesion,
      -0.1 with one), so a model cannot tell from the source how bright a normal FLAIR is.
      Checkpoints written before `scaling` existed load as "percentile".
    Slices: axial (RAS z), cropped in-plane to the foreground
    bounding box plus `crop_margin` voxels, kept when at least `min_foreground` of the slice
    is foreground, padded to square and resized to `image_size` × `image_size`.
    """

    image_size: int = 64
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    scaling: str = "median"
    median_span: float = 5.0
    min_foreground: float = 0.05
    # Without a mask file, foreground = voxels above floor + this fraction of (99th percentile
    # − floor), floor = the volume's minimum (its background: 0, or negative for signed data).
    foreground_threshold: float = 0.1
    # In-plane crop to the subject's foreground bounding box plus this many voxels (-1: none).
    crop_margin: int = 4

    def __post_init__(self) -> None:
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size}: expected 8..1024 pixels")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError(
                f"percentiles ({self.lower_percentile}, {self.upper_percentile}): "
                "expected 0 <= lower < upper <= 100"
            )
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling={self.scaling!r}: expected one of {SCALINGS}")
        if not self.median_span > 1:
            raise ValueError(f"median_span={self.median_span}: expected > 1")
        if not 0 <= self.min_foreground < 1:
            raise ValueError(f"min_foreground={self.min_foreground}: expected 0 <= x < 1")
        if not 0 < self.foreground_threshold < 1:
            raise ValueError(f"foreground_threshold={self.foreground_threshold}: expected (0, 1)")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it becomes per-site training and test sets."""

    root: Path | None = None
    layout: str = "auto"
    modalities: tuple[str, ...] = ("T1", "T2")
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Share of each site's paired subjects held out for testing (never trained on).
    test_fraction: float = 0.25
    # Share held out for validation (choosing a checkpoint; never the test subjects); 0: none.
    validation_fraction: float = 0.0
    # Contrasts each site may use, e.g. "hospA=T1+T2+FLAIR,hospB=T1+PD" (others: all it has).
    # Simulates hospitals that acquired different contrasts from a dataset that has them all.
    site_modalities: str = ""
    # "unpaired": every training subject gives one contrast (no pairs are ever formed, the
    # default); "paired": every training subject gives every contrast it has, and a slice's
    # partners are the same subject's slices at its position in the other contrasts
    # (`fedsynth.data.pairs`; a single-contrast subject trains unpaired), so a model can add a
    # supervised term (model.lambda-paired, model.pairing-loss) where pairs exist.
    pairing: str = "unpaired"
    partition: str = "by-site"
    num_partitions: int | None = None
    dirichlet_alpha: float = 0.5
    seed: int = 0
    # Lenient: a bad file is skipped with a warning and counted instead of stopping the run.
    lenient: bool = False
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise ValueError(
                f"layout={self.layout!r}: expected auto or one of {', '.join(LAYOUTS)}"
            )
        mods = tuple(normalise_modality(m) for m in self.modalities)
        if len(mods) < 2 or len(set(mods)) != len(mods):
            raise ValueError(f"modalities={self.modalities}: expected two or more distinct")
        object.__setattr__(self, "modalities", mods)
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction}: expected 0 < x < 1")
        if not 0 <= self.validation_fraction < 1 - self.test_fraction:
            raise ValueError(
                f"validation_fraction={self.validation_fraction}: expected 0 <= x < "
                f"1 - test_fraction ({1 - self.test_fraction:g})"
            )
        self.site_contrasts()  # checks the format
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing={self.pairing!r}: expected one of {PAIRINGS}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition={self.partition!r}: expected one of {PARTITIONS}")
        if self.partition != "by-site" and not (self.num_partitions or 0) >= 1:
            raise ValueError(f"partition={self.partition!r} needs num_partitions >= 1")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha={self.dirichlet_alpha}: expected > 0")

    def site_contrasts(self) -> dict[str, tuple[str, ...]]:
        """`site_modalities` parsed: site -> the contrasts it may use (in `modalities` order)."""
        out: dict[str, tuple[str, ...]] = {}
        for item in filter(None, (i.strip() for i in self.site_modalities.split(","))):
            site, sep, names = item.partition("=")
            mods = {normalise_modality(m.strip()) for m in names.split("+") if m.strip()}
            if not sep or not site.strip() or not mods or not mods <= set(self.modalities):
                raise ValueError(
                    f"site_modalities item {item!r}: expected SITE=MOD+MOD with modalities "
                    f"from {'/'.join(self.modalities)}"
                )
            out[site.strip()] = tuple(m for m in self.modalities if m in mods)
        return out

    def modalities_of(self, site: str) -> tuple[str, ...]:
        """The contrasts `site` may train on: its `site_modalities` entry, else all."""
        return self.site_contrasts().get(site, self.modalities)
