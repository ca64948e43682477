"""The slice cache (built once, reused, rebuilt on change, never half-written) and the
unpaired/paired splits and partitions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import fedsynth.data.cache as cache_mod
from fedsynth.data.cache import SliceCache, build_cache
from fedsynth.data.config import DataConfig, PreprocessConfig
from fedsynth.data.layouts import DatasetError, load_dataset
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.splits import partition_subjects, plan_site

CFG = PreprocessConfig(image_size=32)


@pytest.fixture
def counted(monkeypatch):
    """Count preprocess_subject calls, i.e. volumes actually read from NIfTI."""
    calls = []
    real = cache_mod.preprocess_subject

    def spy(rec, cfg):
        calls.append(rec.subject)
        return real(rec, cfg)

    monkeypatch.setattr(cache_mod, "preprocess_subject", spy)
    return calls


def test_cache_built_once_and_reused(tiny_bids: Path, tmp_path: Path, counted) -> None:
    ds = load_dataset(tiny_bids)
    a = build_cache(ds, CFG, tmp_path / "c", progress=False)
    assert len(counted) == 10
    b = build_cache(load_dataset(tiny_bids), CFG, tmp_path / "c", progress=False)
    assert len(counted) == 10 and a.path == b.path
    assert isinstance(b.images, np.memmap) and b.images.shape == (len(b), 32, 32)
    assert set(b.index["modality"].tolist()) == {"T1", "T2"}
    assert [p.name for p in (tmp_path / "c").iterdir()] == [a.path.name]


def test_cache_rebuilt_when_params_or_inputs_change(
    tiny_bids: Path, tmp_path: Path, counted
) -> None:
    ds = load_dataset(tiny_bids)
    a = build_cache(ds, CFG, tmp_path / "c", progress=False)
    b = build_cache(ds, PreprocessConfig(image_size=24), tmp_path / "c", progress=False)
    assert a.path != b.path and b.images.shape[1:] == (24, 24)
    victim = ds.subjects[0].images["T1"]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = build_cache(load_dataset(tiny_bids), CFG, tmp_path / "c", progress=False)
    assert c.path not in (a.path, b.path)
    assert len(counted) == 30


def test_failed_build_leaves_nothing(tiny_bids: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_bids)
    ds.subjects[3].images["T2"].write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="sub-siteA003_T2w.nii.gz: cannot read"):
        build_cache(ds, CFG, tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_lenient_skips_and_counts(tiny_bids: Path, tmp_path: Path, caplog) -> None:
    ds = load_dataset(tiny_bids)
    ds.subjects[3].images["T2"].write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        cache = build_cache(ds, CFG, tmp_path / "c", lenient=True, progress=False)
    assert len(cache.meta["skipped"]) == 1
    assert "cannot read" in cache.meta["skipped"][0]["reason"]
    assert "sub-siteA003" in caplog.text
    assert len(cache.subjects()) == 9


def test_site_without_usable_slices(tiny_bids: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_bids)
    for rec in ds.subjects:
        if rec.site == "siteB":
            rec.images["T1"].write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="site 'siteB' has no usable slices"):
        build_cache(ds, CFG, tmp_path / "c", lenient=True, progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_sites_are_unpaired_and_tests_paired(tiny_bids: Path, tmp_path: Path) -> None:
    cfg = DataConfig(root=tiny_bids, preprocess=CFG, cache_dir=tmp_path / "c")
    sites, cache = prepare_sites(cfg, progress=False)
    assert [s.site for s in sites] == ["siteA", "siteB"]
    for site in sites:
        t1, t2 = (set(site.train[m].unique_subjects()) for m in ("T1", "T2"))
        test = set(site.test["T1"].unique_subjects())
        assert t1 and t2 and test
        assert not (t1 & t2) and not (test & (t1 | t2))
        a, b = site.test["T1"], site.test["T2"]
        np.testing.assert_array_equal(a.subjects, b.subjects)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert len(a) > 0 and a.images.shape[1:] == (32, 32)
    assert isinstance(cache, SliceCache)


def test_plan_balances_and_refuses_tiny_sites() -> None:
    subjects = {f"s{i}": {"T1", "T2"} for i in range(9)} | {"only1": {"T1"}}
    plan = plan_site("x", subjects, ("T1", "T2"), 0.25, seed=0)
    assert len(plan.test) == 2 and "only1" not in plan.test
    assert abs(len(plan.train["T1"]) - len(plan.train["T2"])) <= 1
    assert "only1" in plan.train["T1"]
    with pytest.raises(DatasetError, match="site 'tiny': 2 subjects"):
        plan_site("tiny", {"a": {"T1", "T2"}, "b": {"T1", "T2"}}, ("T1", "T2"), 0.25, 0)


def test_a_site_trains_on_the_contrasts_it_has_and_needs_two() -> None:
    four = ("T1", "T2", "PD", "FLAIR")
    subjects = {f"s{i}": {"T1", "PD"} for i in range(8)}
    plan = plan_site("hospB", subjects, four, 0.25, seed=0)
    assert plan.modalities == ["T1", "PD"] and set(plan.train) == {"T1", "PD"}
    one = {f"s{i}": {"T1"} for i in range(8)}
    with pytest.raises(DatasetError, match="site 'lonely' has T1 of T1/T2/PD/FLAIR"):
        plan_site("lonely", one, four, 0.25, seed=0)


def test_validation_and_test_subjects_are_disjoint_and_paired() -> None:
    subjects = {f"s{i}": {"T1", "T2", "PD"} for i in range(12)}
    plan = plan_site("x", subjects, ("T1", "T2", "PD"), 0.25, seed=3, validation_fraction=0.2)
    train = {u for uids in plan.train.values() for u in uids}
    assert len(plan.test) == 3 and len(plan.validation) == 2
    assert not set(plan.test) & set(plan.validation)
    assert not (set(plan.test) | set(plan.validation)) & train
    assert sorted(train | set(plan.test) | set(plan.validation)) == sorted(subjects)


def test_site_modalities_restrict_each_site() -> None:
    cfg = DataConfig(modalities=("T1", "T2", "PD"), site_modalities="hospA=T2+T1, hospB=PD+T1")
    assert cfg.modalities_of("hospA") == ("T1", "T2")
    assert cfg.modalities_of("hospB") == ("T1", "PD")
    assert cfg.modalities_of("hospC") == ("T1", "T2", "PD")
    for bad in ("hospA", "hospA=", "hospA=T1+FLAIR", "=T1+T2"):
        with pytest.raises(ValueError, match="site_modalities item"):
            DataConfig(modalities=("T1", "T2", "PD"), site_modalities=bad)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_cover_every_subject_once(scheme: str) -> None:
    by_site = {"A": [f"A/{i}" for i in range(20)], "B": [f"B/{i}" for i in range(10)]}
    parts = partition_subjects(by_site, scheme, num_partitions=4, alpha=0.3, seed=1)
    flat = [u for uids in parts.values() for u in uids]
    assert sorted(flat) == sorted(by_site["A"] + by_site["B"])
    assert len(parts) == 4 and all(parts.values())
    sizes = sorted(len(v) for v in parts.values())
    if scheme == "iid":
        assert sizes[-1] - sizes[0] <= 1
    else:
        assert sizes[-1] - sizes[0] >= 3  # quantity skew


def test_iid_partition_mixes_sites(tiny_bids: Path, tmp_path: Path) -> None:
    cfg = DataConfig(
        root=tiny_bids, preprocess=CFG, cache_dir=tmp_path / "c", partition="iid", num_partitions=2
    )
    sites, _ = prepare_sites(cfg, progress=False)
    assert [s.site for s in sites] == ["part0", "part1"]
    uids = {u for s in sites for m in s.train.values() for u in m.unique_subjects()}
    assert {u.split("/")[0] for u in uids} == {"siteA", "siteB"}


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="image_size=4"):
        PreprocessConfig(image_size=4)
    with pytest.raises(ValueError, match="layout='dicom'"):
        DataConfig(layout="dicom")
    with pytest.raises(ValueError, match="unknown modality 'DWI'"):
        DataConfig(modalities=("T1", "DWI"))
    with pytest.raises(ValueError, match="needs num_partitions"):
        DataConfig(partition="iid")
