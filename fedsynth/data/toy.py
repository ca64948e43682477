"""Toy multi-site NIfTI datasets in a second: ellipsoid "heads" with an inner blob whose
contrast flips between T1 and T2, written with the real layout writers.

For tests and benchmarks that need real files in real layouts (and hundreds of subjects) but
not anatomy; the embedded phantom (fedsynth.data.phantom) is the realistic one.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fedsynth.data.layouts import write_subject

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (24, 28, 20)


def head(rng: np.random.Generator, contrast: float) -> np.ndarray:
    """An ellipsoid 'brain' with an inner 'tissue' blob; `contrast` flips their order."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in SHAPE), indexing="ij")
    outer = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.9) ** 2 < 1
    inner = (x / 0.4) ** 2 + (y / 0.45) ** 2 + (z / 0.5) ** 2 < 1
    vol = np.where(outer, 100.0, 0.0) + np.where(inner, 50.0 * contrast, 0.0)
    return (vol + rng.normal(0, 2, SHAPE)).astype(np.float32).clip(0)


def write_tiny_dataset(
    root: Path,
    layout: str = "bids",
    sites: tuple[str, ...] = ("siteA", "siteB"),
    n: int | tuple[int, ...] = 5,
) -> Path:
    """`n` subjects per site (or one count per site) with T1 and T2, written in `layout` under
    root/<site>/ and a dataset.json naming the sites (the multi-site root the loader reads)."""
    rng = np.random.default_rng(0)
    counts = n if isinstance(n, tuple) else (n,) * len(sites)
    for si, (site, count) in enumerate(zip(sites, counts, strict=True)):
        for k in range(count):
            images = {
                m: nib.Nifti1Image(head(rng, c), AFFINE) for m, c in (("T1", 1.0), ("T2", -1.5))
            }
            write_subject(root / site, layout, site, si * 100 + k, images)
    (root / "dataset.json").write_text(
        '{"sites": [' + ", ".join(f'{{"name": "{s}"}}' for s in sites) + "]}"
    )
    return root
