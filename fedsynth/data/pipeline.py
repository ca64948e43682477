"""Files → per-site training and test data, in one call: find the subjects, open (or build)
the slice cache, partition into sites, split each site unpaired/paired."""

from __future__ import annotations

from fedsynth.data.cache import SliceCache, build_cache
from fedsynth.data.config import DataConfig
from fedsynth.data.layouts import DatasetError, load_dataset
from fedsynth.data.slices import SiteData
from fedsynth.data.splits import federation_data


def prepare_sites(cfg: DataConfig, progress: bool = True) -> tuple[list[SiteData], SliceCache]:
    """Every (simulated) site's data under `cfg.root`, and the cache it was read from."""
    if cfg.root is None:
        raise DatasetError("no data root given (DataConfig.root)")
    dataset = load_dataset(cfg.root, cfg.layout, lenient=cfg.lenient)
    cache = build_cache(dataset, cfg.preprocess, cfg.cache_dir, cfg.lenient, progress)
    return federation_data(cache, cfg), cache
