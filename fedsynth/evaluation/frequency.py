"""Frequency-domain error of synthetic slices: what pixel metrics average away (blur, lost
edges, ringing).

- HFEN, the high-frequency error norm (Ravishankar & Bresler, IEEE TMI 2011):
  ‖LoG(pred) − LoG(target)‖₂ / ‖LoG(target)‖₂, with a Laplacian-of-Gaussian of σ = 1.5 px
  applied in-plane to every slice, norms over all of a subject's slices.
- Relative k-space error per radial band: with F the in-plane 2D DFT of a slice mapped to
  [0, 1] (background 0) and ρ = |k| / k_Nyquist the normalised radial frequency,
  error_band = ‖F(pred) − F(target)‖₂ / ‖F(target)‖₂ over the band's frequencies of all of a
  subject's slices. Bands: low ρ < 1/3, mid 1/3 ≤ ρ < 2/3, high ρ ≥ 2/3 (up to the corners,
  ρ = √2).

Per subject, then mean ± sd over subjects (accumulate with `update()`, `aggregate()` once).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.ndimage import gaussian_laplace

from fedsynth.evaluation.metrics import summarise

LOG_SIGMA = 1.5
BANDS = (("low", 0.0, 1 / 3), ("mid", 1 / 3, 2 / 3), ("high", 2 / 3, np.inf))


def log_filter(images: np.ndarray) -> np.ndarray:
    """In-plane Laplacian of Gaussian (σ = LOG_SIGMA px) of (N, H, W) slices."""
    return gaussian_laplace(np.asarray(images, np.float64), sigma=(0.0, LOG_SIGMA, LOG_SIGMA))


def band_masks(height: int, width: int) -> dict[str, np.ndarray]:
    """Band name -> (H, W) bool mask over the DFT's frequencies (numpy's FFT order)."""
    fy = np.fft.fftfreq(height)[:, None] / 0.5
    fx = np.fft.fftfreq(width)[None, :] / 0.5
    rho = np.sqrt(fx**2 + fy**2)
    return {name: (rho >= lo) & (rho < hi) for name, lo, hi in BANDS}


def band_energies(pred: np.ndarray, target: np.ndarray) -> dict[str, tuple[float, float]]:
    """Band -> (Σ|F(pred) − F(target)|², Σ|F(target)|²) over (N, H, W) slices in [-1, 1]."""
    p = np.fft.fft2((np.asarray(pred, np.float64) + 1) / 2)
    t = np.fft.fft2((np.asarray(target, np.float64) + 1) / 2)
    err, ref = np.abs(p - t) ** 2, np.abs(t) ** 2
    return {
        name: (float(err[:, m].sum()), float(ref[:, m].sum()))
        for name, m in band_masks(*t.shape[-2:]).items()
    }


class FrequencyMetrics:
    """Accumulate per subject; aggregate to HFEN and the band errors, mean ± sd over subjects."""

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, np.ndarray]] = defaultdict(
            lambda: defaultdict(lambda: np.zeros(2))
        )

    def update(
        self, pred: np.ndarray, target: np.ndarray, subjects: np.ndarray | list[str]
    ) -> None:
        """Add (N, H, W) predicted and true slices in [-1, 1] with their subjects."""
        pred, target = np.asarray(pred), np.asarray(target)
        subjects = np.asarray(subjects)
        for subject in np.unique(subjects):
            rows = subjects == subject
            p, t = pred[rows], target[rows]
            lp, lt = log_filter(p), log_filter(t)
            sums = self._sums[str(subject)]
            sums["hfen"] += [((lp - lt) ** 2).sum(), (lt**2).sum()]
            for band, pair in band_energies(p, t).items():
                sums[band] += pair

    def per_subject(self) -> dict[str, dict[str, float]]:
        """subject -> {"hfen": …, "kspace_low_band_rel_error": …, …}."""
        out = {}
        for subject, sums in sorted(self._sums.items()):
            row = {"hfen": _ratio(sums["hfen"])}
            for band, _, _ in BANDS:
                row[f"kspace_{band}_band_rel_error"] = _ratio(sums[band])
            out[subject] = row
        return out

    def aggregate(self) -> dict[str, float]:
        return summarise(self.per_subject())


def _ratio(sums: np.ndarray) -> float:
    err, ref = sums
    return float(np.sqrt(err / ref)) if ref > 0 else float("nan")
