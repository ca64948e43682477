"""Image-quality metrics for synthesis, with their definitions stated.

Intensity normalisation: every volume is percentile-scaled to [-1, 1] (DataConfig), so the
data range R is 2 and metrics are computed on that scale.

- PSNR = 10·log10(R² / MSE), with MSE over all of a subject's test slices (volume PSNR);
- SSIM: standard windowed SSIM (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, C = (K·R)², via MONAI; the SSIM map is averaged over all windows
  (whole) or over windows centred inside the brain mask (brain);
- MAE = mean |pred − target|; NMAE = MAE / R.

Each comes in two regions: the whole slice, and inside the brain/foreground mask. Metrics are
computed per subject, then summarised as mean ± sd over subjects (MONAI's accumulate-then-
aggregate interface: `update()` batches, `aggregate()` once).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

DATA_RANGE = 2.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
NORMALISATION = (
    "per-volume scaling of the foreground to [-1, 1] (data.preprocess.scaling; by default "
    "0.5th percentile → -1, median → -0.6), data range 2"
)
METRICS = ("psnr", "ssim", "mae", "nmae")
REGIONS = ("whole", "brain")


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Standard SSIM map of (N, 1, H, W) images; 'valid' windows: (N, 1, H-10, W-10)."""
    # Imported here: MONAI takes ~3 s to import, which every ServerApp (its report) and
    # every deployment ClientApp process would otherwise pay before its first round.
    from monai.metrics.regression import compute_ssim_and_cs

    full, _ = compute_ssim_and_cs(
        pred.float(),
        target.float(),
        spatial_dims=2,
        kernel_size=(SSIM_WINDOW, SSIM_WINDOW),
        kernel_sigma=(SSIM_SIGMA, SSIM_SIGMA),
        data_range=DATA_RANGE,
    )
    return full


class SynthesisMetrics:
    """Accumulate slices grouped by subject; aggregate per subject, then across subjects."""

    def __init__(self) -> None:
        # subject -> region -> running sums: squared error, abs error, pixels, ssim, windows
        self._sums: dict[str, dict[str, np.ndarray]] = defaultdict(
            lambda: {r: np.zeros(5) for r in REGIONS}
        )

    def update(
        self,
        pred: np.ndarray | torch.Tensor,
        target: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor,
        subjects: np.ndarray | list[str],
    ) -> None:
        """Add (N, H, W) predicted and true slices in [-1, 1], their masks and subjects."""
        p = torch.as_tensor(np.asarray(pred), dtype=torch.float32).reshape(-1, 1, *pred.shape[-2:])
        t = torch.as_tensor(np.asarray(target), dtype=torch.float32).reshape(p.shape)
        m = torch.as_tensor(np.asarray(mask)).reshape(p.shape).bool()
        if p.shape[-1] < SSIM_WINDOW or p.shape[-2] < SSIM_WINDOW:
            raise ValueError(f"slices {tuple(p.shape[-2:])} are smaller than the SSIM window")
        ssim = ssim_map(p, t)
        h = SSIM_WINDOW // 2
        m_centre = m[..., h : m.shape[-2] - h, h : m.shape[-1] - h]
        diff = p - t
        for i, subject in enumerate(np.asarray(subjects).tolist()):
            for region, px, win in (
                ("whole", torch.ones_like(m[i]), torch.ones_like(m_centre[i])),
                ("brain", m[i], m_centre[i]),
            ):
                d = diff[i][px]
                self._sums[subject][region] += np.array(
                    [
                        float((d**2).sum()),
                        float(d.abs().sum()),
                        int(px.sum()),
                        float(ssim[i][win].sum()),
                        int(win.sum()),
                    ]
                )

    def per_subject(self) -> dict[str, dict[str, float]]:
        """subject -> {"psnr_brain": …, "ssim_whole": …, …}."""
        out = {}
        for subject, regions in sorted(self._sums.items()):
            row = {}
            for region, (se, ae, n, ssim, windows) in regions.items():
                mse = se / max(n, 1)
                row[f"psnr_{region}"] = 10 * np.log10(DATA_RANGE**2 / max(mse, 1e-12))
                row[f"mae_{region}"] = ae / max(n, 1)
                row[f"nmae_{region}"] = row[f"mae_{region}"] / DATA_RANGE
                row[f"ssim_{region}"] = ssim / windows if windows else float("nan")
            out[subject] = row
        return out

    def aggregate(self) -> dict[str, float]:
        """{"psnr_brain": mean, "psnr_brain_sd": sd, …, "subjects": n} over subjects."""
        rows = self.per_subject()
        return {"subjects": float(len(rows))} | summarise(rows)


def summarise(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean and sd (ddof 1) over subjects of every per-subject value; a subject's NaN (a value
    it does not have, e.g. lesion metrics of a lesion-free subject) is left out."""
    if not rows:
        raise ValueError("no slices were added to the metrics")
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for r in rows.values() for k in r):
        values = np.array([r.get(key, np.nan) for r in rows.values()], dtype=float)
        values = values[~np.isnan(values)]
        out[key] = float(values.mean()) if len(values) else float("nan")
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out
