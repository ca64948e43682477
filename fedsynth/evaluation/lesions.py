"""Lesion fidelity: a synthetic contrast must neither erase a lesion nor invent one.

On subjects whose true label map has a lesion (L = voxels of any lesion class):
- lesion_mae = mean |pred − real| over L (images in [-1, 1]);
- lesion_contrast_error = |CR_pred − CR_real| / CR_real, the relative error of the lesion-to-
  normal-white-matter contrast ratio CR = mean(L) / mean(WM), intensities mapped to [0, 1]
  ((x + 1) / 2, background 0) so the ratio is of non-negative signals;
- dice_lesion_vs_real: Dice of the segmenter's lesion on the synthetic slices against its
  lesion on the real slices (the lesion a reader would find on the real scan).
On lesion-free subjects:
- false_lesion_ml: the volume (ml) the segmenter calls lesion on the slices scored.

All sums run over a subject's test slices; then mean ± sd over the subjects that have the value.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from fedsynth.evaluation.labels import LabelScheme
from fedsynth.evaluation.metrics import summarise
from fedsynth.evaluation.segmentation import dice

# Per-subject running sums, in this order.
_FIELDS = (
    "abs_err", "lesion_px", "pred_lesion", "real_lesion", "pred_wm", "real_wm", "wm_px",
    "seg_inter", "seg_pred", "seg_real", "seg_pred_ml",
)  # fmt: skip


class LesionMetrics:
    """Accumulate per subject with `update()`, then `aggregate()` once."""

    def __init__(self, scheme: LabelScheme) -> None:
        self.lesion = scheme.lesion
        self.wm = scheme.tissue("wm")
        self._sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(_FIELDS)))

    def update(
        self,
        pred: np.ndarray,
        real: np.ndarray,
        truth: np.ndarray,
        seg_pred: np.ndarray,
        seg_real: np.ndarray,
        voxel_ml: np.ndarray,
        subjects: np.ndarray,
    ) -> None:
        """(N, H, W) synthetic and real slices, true labels, the segmenter's labels on each,
        and per slice the pixel volume (ml) and subject."""
        subjects = np.asarray(subjects)
        lesion_t, lesion_p = np.isin(truth, self.lesion), np.isin(seg_pred, self.lesion)
        lesion_r = np.isin(seg_real, self.lesion)
        wm = truth == self.wm if self.wm is not None else np.zeros(truth.shape, bool)
        p01, r01 = (np.asarray(pred) + 1) / 2, (np.asarray(real) + 1) / 2
        for subject in np.unique(subjects):
            rows = subjects == subject
            lt, w = lesion_t[rows], wm[rows]
            lp, lr = lesion_p[rows], lesion_r[rows]
            p, r = p01[rows], r01[rows]
            self._sums[str(subject)] += [
                np.abs(p - r)[lt].sum() * 2,  # back on the [-1, 1] scale
                lt.sum(),
                p[lt].sum(),
                r[lt].sum(),
                p[w].sum(),
                r[w].sum(),
                w.sum(),
                (lp & lr).sum(),
                lp.sum(),
                lr.sum(),
                (lp.sum(axis=(1, 2)) * np.asarray(voxel_ml)[rows]).sum(),
            ]

    def per_subject(self) -> dict[str, dict[str, float]]:
        out = {}
        for subject, sums in sorted(self._sums.items()):
            s = dict(zip(_FIELDS, sums, strict=True))
            if s["lesion_px"] == 0:
                out[subject] = {"false_lesion_ml": float(s["seg_pred_ml"])}
                continue
            row = {"lesion_mae": s["abs_err"] / s["lesion_px"]}
            if s["wm_px"] > 0 and min(s["real_wm"], s["pred_wm"], s["real_lesion"]) > 0:
                cr_pred = (s["pred_lesion"] / s["lesion_px"]) / (s["pred_wm"] / s["wm_px"])
                cr_real = (s["real_lesion"] / s["lesion_px"]) / (s["real_wm"] / s["wm_px"])
                row["lesion_contrast_error"] = abs(cr_pred - cr_real) / cr_real
            row["dice_lesion_vs_real"] = dice(
                np.array([s["seg_inter"], s["seg_pred"], s["seg_real"]])
            )
            out[subject] = row
        return out

    def aggregate(self) -> dict[str, float]:
        return summarise(self.per_subject())
