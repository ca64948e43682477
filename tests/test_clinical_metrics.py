"""Clinical metrics against small hand-computed cases: Dice (and MONAI's DiceMetric as a
second oracle), HFEN, k-space band errors, lesion fidelity, label schemes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsynth.evaluation.frequency import FrequencyMetrics, band_masks
from fedsynth.evaluation.labels import LabelScheme, label_scheme
from fedsynth.evaluation.lesions import LesionMetrics
from fedsynth.evaluation.segmentation import SegmentationMetrics

TRUTH = np.array([[[1, 1, 0], [2, 2, 0], [3, 0, 0]]], np.uint8)
PRED = np.array([[[1, 0, 0], [2, 2, 2], [0, 0, 3]]], np.uint8)
CLASSES = {"csf": (1,), "gm": (2,), "wm": (3,), "lesion": (4, 5)}


def test_dice_per_class_by_hand_and_by_monai() -> None:
    seg = SegmentationMetrics(CLASSES)
    seg.update(PRED, TRUTH, np.array(["s1"]))
    row = seg.per_subject()["s1"]
    # csf: |P∩T| 1, |P| 1, |T| 2; gm: 2, 3, 2; wm: 0, 1, 1; no lesion in the truth.
    assert row["dice_csf"] == pytest.approx(2 * 1 / 3)
    assert row["dice_gm"] == pytest.approx(2 * 2 / 5)
    assert row["dice_wm"] == 0.0
    assert math.isnan(row["dice_lesion"])
    assert row["dice_tissue_mean"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)

    from monai.metrics import DiceMetric

    def onehot(a: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(a).long(), 6).permute(0, 3, 1, 2)

    monai = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    ref = monai(onehot(PRED), onehot(TRUTH))[0]
    assert [row["dice_csf"], row["dice_gm"], row["dice_wm"]] == pytest.approx(ref[:3].tolist())


def test_dice_is_per_subject_over_all_its_slices() -> None:
    """Two updates of one subject's slices equal one update of them all (a 3D Dice)."""
    truth, pred = np.concatenate([TRUTH, TRUTH[:, ::-1]]), np.concatenate([PRED, TRUTH[:, ::-1]])
    whole, split = SegmentationMetrics(CLASSES), SegmentationMetrics(CLASSES)
    whole.update(pred, truth, np.array(["a", "a"]))
    split.update(pred[:1], truth[:1], np.array(["a"]))
    split.update(pred[1:], truth[1:], np.array(["a"]))
    assert whole.per_subject()["a"] == pytest.approx(split.per_subject()["a"], nan_ok=True)
    # csf over both slices: |P∩T| 1 + 2, |P| 1 + 2, |T| 2 + 2.
    assert whole.per_subject()["a"]["dice_csf"] == pytest.approx(2 * 3 / 7)


N = 12
X = np.arange(N)[None, :].repeat(N, axis=0)


def wave(k: int, amplitude: float) -> np.ndarray:
    return amplitude * np.cos(2 * np.pi * k * X / N)


def as_model_scale(u: np.ndarray) -> np.ndarray:
    """[0, 1] → [-1, 1], the scale the metrics take (they map back to [0, 1])."""
    return (2 * u - 1)[None]


def test_band_masks_split_radial_frequency() -> None:
    bands = band_masks(N, N)
    assert sum(m.astype(int) for m in bands.values()).max() == 1  # disjoint, every freq once
    assert bands["low"][0, 1] and bands["mid"][0, 3] and bands["high"][0, 5]  # ρ = k / 6


def test_band_errors_and_hfen_by_hand() -> None:
    target = 0.5 + wave(1, 0.2) + wave(3, 0.1) + wave(5, 0.1)
    freq = FrequencyMetrics()
    freq.update(as_model_scale(target + wave(5, 0.05)), as_model_scale(target), ["hi"])
    freq.update(as_model_scale(target + wave(1, 0.1)), as_model_scale(target), ["lo"])
    freq.update(as_model_scale(1.5 * target - 0.25), as_model_scale(target), ["gain"])
    freq.update(as_model_scale(np.full((N, N), 0.5)), as_model_scale(target), ["flat"])
    rows = freq.per_subject()
    # A cosine of amplitude a puts a/2·N² at ±k: relative errors are ratios of amplitudes.
    assert rows["hi"]["kspace_high_band_rel_error"] == pytest.approx(0.5)
    assert rows["hi"]["kspace_low_band_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert rows["hi"]["kspace_mid_band_rel_error"] == pytest.approx(0.0, abs=1e-12)
    low = math.sqrt(2 * 0.05**2) / math.sqrt(0.5**2 + 2 * 0.1**2)  # DC 0.5 is in the low band
    assert rows["lo"]["kspace_low_band_rel_error"] == pytest.approx(low)
    # HFEN: the LoG is linear and blind to constants, so a gain of 1.5 gives 0.5 and a flat
    # image (all edges lost) gives 1.
    assert rows["gain"]["hfen"] == pytest.approx(0.5)
    assert rows["flat"]["hfen"] == pytest.approx(1.0)
    assert rows["hi"]["hfen"] > 0 and freq.aggregate()["hfen_sd"] > 0


def test_lesion_fidelity_by_hand() -> None:
    scheme = LabelScheme({1: "CSF", 2: "GM", 3: "WM", 4: "oedema", 5: "tumour core"})
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2] = 3  # WM
    truth[0, 2:, :2] = 4  # lesion, 4 px
    truth[1, :2] = 3  # a lesion-free subject
    u_real = np.where(truth == 4, 0.9, np.where(truth == 3, 0.5, 0.0))
    u_pred = np.where(truth == 4, 0.7, u_real)
    seg_real = truth.copy()
    seg_pred = truth.copy()
    seg_pred[0, 3, 0] = 3  # one lesion pixel lost: Dice vs real 2·3 / (3 + 4)
    seg_pred[1, 3, :] = 5  # 4 invented lesion pixels on the lesion-free subject
    lesions = LesionMetrics(scheme)
    lesions.update(
        2 * u_pred - 1, 2 * u_real - 1, truth, seg_pred, seg_real,
        np.array([0.01, 0.0125]), np.array(["les", "free"]),
    )  # fmt: skip
    rows = lesions.per_subject()
    assert rows["les"]["lesion_mae"] == pytest.approx(0.4)  # |0.7 − 0.9| on the [-1, 1] scale
    assert rows["les"]["lesion_contrast_error"] == pytest.approx(abs(1.4 - 1.8) / 1.8)
    assert rows["les"]["dice_lesion_vs_real"] == pytest.approx(6 / 7)
    assert rows["free"] == {"false_lesion_ml": pytest.approx(4 * 0.0125)}


def test_label_schemes(tmp_path: Path) -> None:
    phantom = tmp_path / "phantom"
    phantom.mkdir()
    (phantom / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "CSF", "2": "GM", "3": "WM",
                               "4": "oedema", "5": "tumour core", "7": "skull"}})
    )  # fmt: skip
    scheme = label_scheme(phantom, "bids", {0, 1, 2, 3, 4, 5, 7})
    assert scheme.classes() == {
        "csf": (1,), "gm": (2,), "wm": (3,), "skull": (7,), "lesion": (4, 5)
    }  # fmt: skip
    brats = label_scheme(tmp_path, "brats", {0, 1, 2, 4})
    assert brats.classes() == {"lesion": (1, 2, 4)} and brats.tissue("wm") is None
    (tmp_path / "dseg.tsv").write_text("index\tname\n1\tGray Matter\n2\tWhite Matter\n")
    assert label_scheme(tmp_path, "bids", {0, 1, 2, 9}).classes() == {
        "gm": (1,), "wm": (2,), "label_9": (9,)
    }  # fmt: skip
