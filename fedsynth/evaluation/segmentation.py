"""Downstream segmentation: is a synthetic contrast usable for the task a hospital runs on it?

The evaluating party trains a small MONAI UNet (DP-free: it never leaves that party) on *real*
slices of the target contrast with their label maps, then segments real and synthetic slices
of held-out subjects. Dice per class against the true labels on real slices is the segmenter's
own ceiling; on synthetic slices it says how much the synthesis costs the task.

Dice of class c for one subject, over all its test slices (a 3D Dice):
    Dice_c = 2 |P_c ∩ T_c| / (|P_c| + |T_c|),
left out (NaN) for a subject whose truth has no c (MONAI's `ignore_empty`); then mean ± sd
over subjects. Predictions outside the brain/foreground mask are background.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedsynth.data.slices import SliceSet
from fedsynth.evaluation.metrics import summarise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterConfig:
    """A 2D MONAI UNet (instance norm, residual units) trained with Dice + cross-entropy.

    channels/strides: the UNet's levels; steps: Adam steps of `batch_size` random slices
    at `lr`, with random left-right flips; seed: weights and batches.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    res_units: int = 0
    steps: int = 300
    batch_size: int = 8
    lr: float = 5e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"strides {self.strides}: expected one per level after the first")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"steps/batch_size/lr must be positive, got {self}")


DEFAULT_SEGMENTER = SegmenterConfig()


class Segmenter:
    """A trained UNet and the label values its output channels stand for (channel 0 = 0)."""

    def __init__(self, net: torch.nn.Module, values: np.ndarray) -> None:
        self.net, self.values = net, np.asarray(values, np.uint8)

    def predict(self, images: np.ndarray, masks: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, H, W) slices in [-1, 1] -> (N, H, W) uint8 label values, 0 outside `masks`."""
        self.net.eval()
        out = np.zeros(np.shape(images), np.uint8)
        with torch.no_grad():
            for start in range(0, len(out), batch_size):
                batch = torch.as_tensor(np.asarray(images[start : start + batch_size]))
                logits = self.net(batch.float()[:, None])
                out[start : start + batch_size] = self.values[logits.argmax(1).numpy()]
        out[~np.asarray(masks, bool)] = 0
        return out


def train_segmenter(slices: SliceSet, cfg: SegmenterConfig = DEFAULT_SEGMENTER) -> Segmenter:
    """Train on real slices with labels (`slices.labels`); every label value seen is a class."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    if slices.labels is None or len(slices) == 0:
        raise ValueError(f"{slices.modality}: no labelled slices to train a segmenter on")
    values = np.union1d([0], np.unique(slices.labels))
    lookup = np.zeros(256, np.int64)
    lookup[values] = np.arange(len(values))
    torch.manual_seed(cfg.seed)
    net = UNet(2, 1, len(values), cfg.channels, cfg.strides, num_res_units=cfg.res_units)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    net.train()
    for step in range(cfg.steps):
        rows = np.sort(rng.choice(len(slices), min(cfg.batch_size, len(slices)), replace=False))
        x = torch.from_numpy(np.asarray(slices.images[rows], np.float32))[:, None]
        y = torch.from_numpy(lookup[slices.labels[rows]])[:, None]
        if rng.random() < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.debug("segmenter step %d: loss %.3f", step, loss.item())
    return Segmenter(net, values)


def dice_counts(
    pred: np.ndarray, truth: np.ndarray, classes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Class -> [|P ∩ T|, |P|, |T|] of label maps `pred` and `truth`."""
    out = {}
    for name, values in classes.items():
        p, t = np.isin(pred, values), np.isin(truth, values)
        out[name] = np.array([(p & t).sum(), p.sum(), t.sum()], dtype=np.float64)
    return out


def dice(counts: np.ndarray) -> float:
    """2|P∩T| / (|P| + |T|); NaN when the truth is empty (the class is not in the subject)."""
    inter, p, t = counts
    return float(2 * inter / (p + t)) if t > 0 else float("nan")


class SegmentationMetrics:
    """Per-class Dice of predicted against true label maps, per subject then over subjects.
    `dice_tissue_mean` is the mean of the CSF, GM and WM Dice a subject has."""

    def __init__(self, classes: Mapping[str, tuple[int, ...]]) -> None:
        self.classes = dict(classes)
        self._sums: dict[str, dict[str, np.ndarray]] = defaultdict(
            lambda: {c: np.zeros(3) for c in self.classes}
        )

    def update(self, pred: np.ndarray, truth: np.ndarray, subjects: np.ndarray) -> None:
        subjects = np.asarray(subjects)
        for subject in np.unique(subjects):
            rows = subjects == subject
            for name, c in dice_counts(pred[rows], truth[rows], self.classes).items():
                self._sums[str(subject)][name] += c

    def per_subject(self) -> dict[str, dict[str, float]]:
        out = {}
        for subject, sums in sorted(self._sums.items()):
            row = {f"dice_{name}": dice(c) for name, c in sums.items()}
            tissue = [row[f"dice_{t}"] for t in ("csf", "gm", "wm") if f"dice_{t}" in row]
            if tissue and not np.isnan(tissue).all():
                row["dice_tissue_mean"] = float(np.nanmean(tissue))
            out[subject] = row
        return out

    def aggregate(self) -> dict[str, float]:
        return summarise(self.per_subject())
