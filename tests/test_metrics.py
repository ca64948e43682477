"""Metrics match their stated definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fedsynth.evaluation.metrics import DATA_RANGE, SynthesisMetrics, ssim_map


def reference_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Wang et al. 2004 SSIM with an 11-tap Gaussian (σ 1.5), valid region only."""
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5, mode="constant")  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s[5:-5, 5:-5]


def test_ssim_matches_the_standard_definition() -> None:
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0, 0.5, (32, 32)), -1, 1)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1)
    ours = ssim_map(torch.tensor(x)[None, None], torch.tensor(y)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, reference_ssim(x, y), atol=1e-4)


def test_known_values_per_subject_and_region() -> None:
    target = np.full((4, 32, 32), -1.0, np.float32)
    target[:, 8:24, 8:24] = 0.5
    mask = target > 0
    pred = target.copy()
    pred[mask] += 0.1  # error only inside the brain
    m = SynthesisMetrics()
    m.update(pred, target, mask, ["a", "a", "b", "b"])
    rows = m.per_subject()
    assert set(rows) == {"a", "b"}
    assert rows["a"]["mae_brain"] == pytest.approx(0.1, abs=1e-6)
    assert rows["a"]["psnr_brain"] == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-3)
    assert rows["a"]["mae_whole"] == pytest.approx(0.1 * mask[0].mean(), abs=1e-6)
    assert rows["a"]["nmae_brain"] == pytest.approx(0.05, abs=1e-6)
    assert rows["a"]["psnr_whole"] > rows["a"]["psnr_brain"]
    agg = m.aggregate()
    assert agg["subjects"] == 2 and agg["psnr_brain_sd"] == pytest.approx(0, abs=1e-6)


def test_perfect_prediction_and_sd_across_subjects() -> None:
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, (3, 24, 24)).astype(np.float32)
    mask = np.ones_like(t, bool)
    m = SynthesisMetrics()
    m.update(t, t, mask, ["a", "b", "c"])
    agg = m.aggregate()
    assert agg["ssim_whole"] == pytest.approx(1.0, abs=1e-5)
    assert agg["mae_brain"] == 0.0
    noisy = SynthesisMetrics()
    noisy.update(t + np.array([0.0, 0.1, 0.3])[:, None, None], t, mask, ["a", "b", "c"])
    assert noisy.aggregate()["mae_whole_sd"] == pytest.approx(
        np.std([0, 0.1, 0.3], ddof=1), abs=1e-5
    )


def test_empty_and_too_small() -> None:
    with pytest.raises(ValueError, match="no slices"):
        SynthesisMetrics().aggregate()
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        SynthesisMetrics().update(
            np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), np.ones((1, 8, 8)), ["a"]
        )
