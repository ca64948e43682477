"""The one evaluation of a synthesis model, used by `fedsynth evaluate`, the run report and
the benchmarks: for every direction, on paired held-out slices,

- pixel metrics, in the brain and over the whole slice (`metrics`);
- frequency error: HFEN and relative k-space error per radial band (`frequency`);
- downstream segmentation: per-class Dice of a segmenter trained on real target slices,
  applied to the scored slices (`segmentation`), when the data has label maps;
- lesion fidelity (`lesions`), when the labels name lesion classes.

A "row" is what stands in for the real target: a model's synthetic slices, the source slices
as they are (`SOURCE_AS_IS`, the floor) or the real target itself (`REAL_TARGET`, the ceiling:
its Dice is the segmenter's own; its pixel and frequency errors are 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsynth.data.slices import SliceSet
from fedsynth.evaluation.evaluate import synthesise
from fedsynth.evaluation.frequency import FrequencyMetrics
from fedsynth.evaluation.labels import LabelScheme
from fedsynth.evaluation.lesions import LesionMetrics
from fedsynth.evaluation.metrics import SynthesisMetrics, summarise
from fedsynth.evaluation.segmentation import (
    DEFAULT_SEGMENTER,
    SegmentationMetrics,
    Segmenter,
    SegmenterConfig,
    train_segmenter,
)
from fedsynth.models.base import SynthesisModel

REAL_TARGET = "real target"
SOURCE_AS_IS = "source as-is"
Direction = tuple[str, str]


def served_directions(model: SynthesisModel, available: Sequence[str]) -> list[Direction]:
    """Every (source, target) the model translates whose modalities the data has."""
    mods = [m for m in model.config.modalities if m in available]
    return list(itertools.permutations(mods, 2))


def direction_name(direction: Direction) -> str:
    return f"{direction[0]}→{direction[1]}"


@dataclass
class Evaluation:
    """Per-subject metric rows and their summary (mean, `_sd`, `subjects`)."""

    subjects: dict[str, dict[str, float]]
    summary: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = {"subjects": float(len(self.subjects))} | summarise(self.subjects)


@dataclass(frozen=True)
class Segmentation:
    """What the segmentation metrics need: a segmenter per target and the label scheme."""

    segmenters: Mapping[str, Segmenter]
    scheme: LabelScheme


def train_segmenters(
    train: Mapping[str, SliceSet],
    targets: Sequence[str],
    scheme: LabelScheme,
    cfg: SegmenterConfig = DEFAULT_SEGMENTER,
) -> Segmentation | None:
    """One segmenter per target contrast on its real labelled training slices; None when the
    data has no labels for a target."""
    segmenters = {}
    for target in dict.fromkeys(targets):
        slices = train.get(target)
        if slices is None or slices.labels is None or not scheme.names:
            return None
        segmenters[target] = train_segmenter(slices, cfg)
    return Segmentation(segmenters, scheme)


def score(pred: np.ndarray, real: SliceSet, segmentation: Segmentation | None = None) -> Evaluation:
    """Every metric of `pred` (N, H, W) against the row-aligned real target slices."""
    pixel, freq = SynthesisMetrics(), FrequencyMetrics()
    pixel.update(pred, real.images, real.masks, real.subjects)
    freq.update(pred, real.images, real.subjects)
    parts = [pixel.per_subject(), freq.per_subject()]
    segmenter = segmentation and segmentation.segmenters.get(real.modality)
    if segmentation is not None and segmenter is not None and real.labels is not None:
        scheme = segmentation.scheme
        seg_pred = segmenter.predict(pred, real.masks)
        seg = SegmentationMetrics(scheme.classes())
        seg.update(seg_pred, real.labels, real.subjects)
        parts.append(seg.per_subject())
        if scheme.lesion:
            seg_real = segmenter.predict(real.images, real.masks)
            voxel_ml = real.voxel_ml if real.voxel_ml is not None else np.full(len(real), np.nan)
            lesions = LesionMetrics(scheme)
            lesions.update(
                pred, real.images, real.labels, seg_pred, seg_real, voxel_ml, real.subjects
            )
            parts.append(lesions.per_subject())
    rows: dict[str, dict[str, float]] = {}
    for part in parts:
        for subject, values in part.items():
            rows.setdefault(subject, {}).update(values)
    return Evaluation(rows)


def evaluate_direction(
    model: SynthesisModel | str,
    test: Mapping[str, SliceSet],
    direction: Direction,
    segmentation: Segmentation | None = None,
) -> Evaluation:
    """Score `model` (or REAL_TARGET / SOURCE_AS_IS) on the paired test slices of a direction."""
    source, target = direction
    src, tgt = test[source], test[target]
    if not np.array_equal(src.subjects, tgt.subjects) or not np.array_equal(
        src.positions, tgt.positions
    ):
        raise ValueError(f"{source}/{target} test slices are not row-aligned pairs")
    if model == REAL_TARGET:
        pred = tgt.images
    elif model == SOURCE_AS_IS:
        pred = src.images
    elif callable(getattr(model, "translate", None)):  # a model, or a baseline map
        pred = synthesise(model, src.images, source, target)
    else:
        raise ValueError(f"unknown row {model!r}: a model, {REAL_TARGET!r} or {SOURCE_AS_IS!r}")
    return score(pred, tgt, segmentation)


def evaluate_rows(
    rows: Mapping[str, SynthesisModel | str],
    test: Mapping[str, SliceSet],
    directions: Sequence[Direction],
    segmentation: Segmentation | None = None,
) -> dict[str, dict[str, Evaluation]]:
    """row name -> direction name -> Evaluation, with the real-target and source-as-is rows."""
    every = {REAL_TARGET: REAL_TARGET, SOURCE_AS_IS: SOURCE_AS_IS, **rows}
    return {
        name: {
            direction_name(d): evaluate_direction(row, test, d, segmentation) for d in directions
        }
        for name, row in every.items()
    }
