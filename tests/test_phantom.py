"""Embedded phantom: tissue contrast physics, fidelity to the real MNI T1, determinism, site
heterogeneity, lesions, config validation, and read-back through every layout loader."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedsynth.data import phantom
from fedsynth.data.layouts import LAYOUTS, SubjectRecord, load_dataset
from fedsynth.data.phantom import (
    FULL_SCALE,
    PhantomConfig,
    generate_phantom,
    load_anatomy,
    make_sites,
    simulate_subject,
    site_name,
)

CSF, GM, WM, OEDEMA, TUMOUR = 1, 2, 3, 4, 5
CFG = PhantomConfig(subjects_per_site=1, seed=3)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantom")
    return out, generate_phantom(CFG, out, progress=False)


@pytest.fixture(scope="session")
def first_subjects(generated: tuple[Path, dict]) -> dict[str, SubjectRecord]:
    """The first subject of each site, as the loader finds it."""
    by_site = load_dataset(generated[0]).by_site()
    return {site: recs[0] for site, recs in by_site.items()}


def _load(path: Path | None) -> np.ndarray:
    assert path is not None
    return np.asanyarray(nib.load(path).dataobj)


def _tissue_means(rec: SubjectRecord, modality: str) -> dict[int, float]:
    labels, image = _load(rec.labels), _load(rec.images[modality])
    return {t: float(image[labels == t].mean()) for t in (CSF, GM, WM)}


def test_contrasts_order_tissues_at_every_site(first_subjects: dict[str, SubjectRecord]) -> None:
    for rec in first_subjects.values():  # 1.5 T and 3 T sites
        t1, t2 = _tissue_means(rec, "T1"), _tissue_means(rec, "T2")
        flair = _tissue_means(rec, "FLAIR")
        assert t1[WM] > t1[GM] > t1[CSF], (rec.site, t1)
        assert t2[CSF] > t2[GM] > t2[WM], (rec.site, t2)
        assert flair[CSF] < flair[WM] and flair[CSF] < flair[GM], (rec.site, flair)


def test_simulated_t1_matches_the_real_template(generated: tuple[Path, dict]) -> None:
    out, meta = generated
    assert meta["t1_template_correlation"] >= 0.8
    assert json.loads((out / "dataset.json").read_text()) == meta


def test_files_are_float32_3d_on_the_mni_grid(first_subjects: dict[str, SubjectRecord]) -> None:
    mni = load_anatomy(CFG.resolution).affine
    for rec in first_subjects.values():
        for path in rec.images.values():
            img = nib.load(path)
            assert img.ndim == 3 and img.get_data_dtype() == np.float32
            np.testing.assert_allclose(img.affine, mni)
        for path in (rec.mask, rec.labels):
            assert path is not None and nib.load(path).get_data_dtype() == np.uint8


def test_same_seed_same_volumes_other_seed_different(
    first_subjects: dict[str, SubjectRecord],
) -> None:
    site = make_sites(CFG)[0]
    again = simulate_subject(CFG, site, 0)
    rec = first_subjects[site.name]
    for modality, path in rec.images.items():
        np.testing.assert_array_equal(_load(path), again.images[modality])
    np.testing.assert_array_equal(_load(rec.labels), again.labels)
    other = simulate_subject(dataclasses.replace(CFG, seed=4, modalities=("T1",)), site, 0)
    assert not np.array_equal(other.images["T1"], again.images["T1"])
    assert not np.array_equal(other.labels, again.labels)


def test_sites_differ_in_contrast_and_noise(
    first_subjects: dict[str, SubjectRecord], generated: tuple[Path, dict]
) -> None:
    sites = {s["name"]: s for s in generated[1]["sites"]}
    gm_wm_ratio = {}
    for name, rec in first_subjects.items():
        t1 = _tissue_means(rec, "T1")
        gm_wm_ratio[name] = t1[GM] / t1[WM]
        # Background is pure Rician (Rayleigh) noise: mean = σ·sqrt(π/2).
        corner = _load(rec.images["T2"])[:8, :8, :]
        expected = sites[name]["noise_sigma"] * FULL_SCALE * np.sqrt(np.pi / 2)
        assert corner.mean() == pytest.approx(expected, rel=0.1), name
    # T1 contrast is weaker at 3 T (longer T1s) than at 1.5 T.
    assert gm_wm_ratio["hospA"] > gm_wm_ratio["hospB"] + 0.05
    assert gm_wm_ratio["hospA"] > gm_wm_ratio["hospC"] + 0.05
    protocols = [json.dumps(s["protocols"], sort_keys=True) for s in sites.values()]
    assert len(set(protocols)) == len(protocols)


def test_lesions_only_when_asked(first_subjects: dict[str, SubjectRecord]) -> None:
    assert all(_load(rec.labels).max() <= WM for rec in first_subjects.values())
    cfg = dataclasses.replace(CFG, lesions=True, modalities=("FLAIR",))
    subject = simulate_subject(cfg, make_sites(cfg)[0], 0)
    labels, flair = subject.labels, subject.images["FLAIR"]
    assert (labels == OEDEMA).any() and (labels == TUMOUR).any()
    assert flair[labels == OEDEMA].mean() > flair[labels == WM].mean()  # oedema bright on FLAIR


SKULL, MUSCLE, FAT = 7, 8, 9


def test_heads_have_scalp_fat_bright_and_skull_dark_on_t1() -> None:
    cfg = dataclasses.replace(CFG, heads=True, modalities=("T1", "T2"))
    for site in make_sites(cfg)[:2]:  # 1.5 T and 3 T
        subject = simulate_subject(cfg, site, 0)
        labels, t1, t2 = subject.labels, subject.images["T1"], subject.images["T2"]
        t1_mean = {t: float(t1[labels == t].mean()) for t in (CSF, GM, WM, SKULL, MUSCLE, FAT)}
        assert t1_mean[FAT] > t1_mean[WM] > t1_mean[GM], (site.name, t1_mean)
        assert t1_mean[SKULL] < min(v for t, v in t1_mean.items() if t != SKULL), t1_mean
        assert t2[labels == SKULL].mean() < t2[labels == FAT].mean() < t2[labels == CSF].mean()
        # The brain mask is still the brain: no head tissue inside it, head tissue outside.
        assert not np.isin(labels[subject.mask > 0], (SKULL, MUSCLE, FAT)).any()
        assert (labels[subject.mask == 0] == FAT).sum() > 0.1 * (subject.mask > 0).sum()


def test_lesion_fraction_leaves_some_subjects_lesion_free() -> None:
    cfg = dataclasses.replace(
        CFG, subjects_per_site=8, lesions=True, lesion_fraction=0.5, modalities=("T1",)
    )
    site = make_sites(cfg)[0]
    drawn = [phantom.has_lesion(cfg, site, k) for k in range(8)]
    assert 0 < sum(drawn) < 8
    assert not phantom.has_lesion(dataclasses.replace(cfg, lesions=False), site, 0)


def test_extra_sites_are_named_and_drawn_from_the_seed() -> None:
    five = make_sites(PhantomConfig(sites=5, subjects_per_site=1, seed=1))
    assert [s.name for s in five] == ["hospA", "hospB", "hospC", "hospD", "hospE"]
    assert five == make_sites(PhantomConfig(sites=5, subjects_per_site=1, seed=1))
    other = make_sites(PhantomConfig(sites=5, subjects_per_site=1, seed=2))
    assert other[:3] == five[:3] and other[3:] != five[3:]
    assert site_name(25) == "hospZ" and site_name(26) == "hospAA"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sites": 0}, "0"),
        ({"subjects_per_site": 0}, "0"),
        ({"subjects_per_site": (2, 2)}, "(2, 2)"),
        ({"subjects_per_site": 1000}, "1000"),
        ({"modalities": ("T1", "T1CE")}, "'T1CE'"),
        ({"modalities": ("T1", "bogus")}, "'bogus'"),
        ({"modalities": ("T1", "t1w")}, "'t1w'"),
        ({"modalities": ()}, "modalities"),
        ({"resolution": 3}, "3"),
        ({"seed": -1}, "-1"),
        ({"lesions": "yes"}, "'yes'"),
        ({"heads": 1}, "heads"),
        ({"lesion_fraction": 1.5}, "1.5"),
        ({"layout": "nifti"}, "'nifti'"),
    ],
)
def test_bad_config_names_the_value(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        PhantomConfig(**kwargs)


def test_modality_aliases_are_canonicalised() -> None:
    assert PhantomConfig(modalities=("t1w", "flair")).modalities == ("T1", "FLAIR")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back(layout: str, generated: tuple[Path, dict], tmp_path: Path) -> None:
    if layout == CFG.layout:
        cfg, out = CFG, generated[0]
    else:
        cfg = PhantomConfig(subjects_per_site=(1, 2), sites=2, modalities=("T1", "FLAIR"))
        cfg, out = dataclasses.replace(cfg, layout=layout), tmp_path
        generate_phantom(cfg, out, progress=False)
    ds = load_dataset(out)
    by_site = ds.by_site()
    assert ds.layout == layout
    assert list(by_site) == [site_name(i) for i in range(cfg.sites)]
    assert [len(recs) for recs in by_site.values()] == list(cfg.subject_counts)
    for rec in ds.subjects:
        assert set(rec.images) == set(cfg.modalities)
        assert rec.mask is not None and rec.labels is not None
    assert all((out / f"montage_{site}.png").stat().st_size > 0 for site in by_site)


def test_a_failed_run_leaves_no_dataset_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(phantom, "write_subject", broken_write)
    cfg = PhantomConfig(sites=1, subjects_per_site=1, modalities=("T1",))
    with pytest.raises(OSError, match="disk full"):
        generate_phantom(cfg, tmp_path, progress=False)
    assert not (tmp_path / "dataset.json").exists()
    assert not (tmp_path / "hospA").exists()
