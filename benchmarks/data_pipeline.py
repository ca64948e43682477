"""Data pipeline speed: phantom simulation, slice-cache build, and slices served per second
from the memory-mapped cache versus re-reading and re-preprocessing the NIfTI files every
epoch (what a pipeline without a cache does)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from common import parser, write_result

from fedsynth.data.cache import SliceCache, build_cache
from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import load_dataset
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.preprocess import preprocess_subject


def epoch_from_cache(cache: SliceCache, batch: int = 16) -> int:
    """One shuffled epoch of batches read from the memmap, as training does."""
    order = np.random.default_rng(0).permutation(len(cache))
    total = 0.0
    for start in range(0, len(order), batch):
        rows = np.sort(order[start : start + batch])
        total += float(np.asarray(cache.images[rows]).sum())
    return len(order)


def epoch_from_nifti(dataset, cfg: PreprocessConfig) -> int:
    """One epoch without a cache: every volume is read and preprocessed again."""
    return sum(
        sum(len(s) for s in preprocess_subject(rec, cfg).images.values())
        for rec in dataset.subjects
    )


def main() -> None:
    args = parser(__doc__).parse_args()
    sites, per_site = (2, 2) if args.quick else (3, 8)
    cfg = PreprocessConfig(image_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate_phantom(
            PhantomConfig(sites=sites, subjects_per_site=per_site), root / "ph", progress=False
        )
        phantom_s = time.perf_counter() - start
        dataset = load_dataset(root / "ph")
        volumes = sum(len(r.images) for r in dataset.subjects)

        start = time.perf_counter()
        cache = build_cache(dataset, cfg, root / "cache", progress=False)
        build_s = time.perf_counter() - start

        epochs = 2 if args.quick else 5
        start = time.perf_counter()
        served = sum(epoch_from_cache(cache) for _ in range(epochs))
        cache_rate = served / (time.perf_counter() - start)

        start = time.perf_counter()
        reread = epoch_from_nifti(dataset, cfg)
        nifti_rate = reread / (time.perf_counter() - start)

    write_result(
        "data_pipeline",
        {
            "phantom_subjects": sites * per_site,
            "phantom_seconds": phantom_s,
            "phantom_subjects_per_s": sites * per_site / phantom_s,
            "cache_build_volumes_per_s": volumes / build_s,
            "cache_slices": len(cache),
            "slices_per_s_from_cache": cache_rate,
            "slices_per_s_rereading_nifti": nifti_rate,
            "cache_speedup_over_nifti": cache_rate / nifti_rate,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
