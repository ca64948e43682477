"""Each dataset layout is found on real files written in that layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tiny_dataset

from fedsynth.data.layouts import DatasetError, detect_layout, load_dataset, normalise_modality


@pytest.mark.parametrize("layout", ["bids", "ixi", "brats", "manifest"])
def test_layout_round_trip(tmp_path: Path, layout: str) -> None:
    root = write_tiny_dataset(tmp_path / layout, layout=layout, n=3)
    assert detect_layout(root / "siteA") == layout
    ds = load_dataset(root)
    assert ds.layout == layout
    assert ds.sites == ["siteA", "siteB"]
    assert len(ds.subjects) == 6
    for rec in ds.subjects:
        assert set(rec.images) == {"T1", "T2"}
        assert all(p.exists() for p in rec.files())


def test_ixi_hospital_is_the_site(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "ixi", layout="ixi", sites=("HH", "Guys", "IOP"), n=2)
    # Read the flat IXI folders of one hospital without dataset.json: the name gives the site.
    ds = load_dataset(root / "Guys")
    assert ds.sites == ["Guys"]
    assert {r.subject for r in ds.subjects} == {"IXI100", "IXI101"}


def test_bids_participants_site_column(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "b", n=2)
    ds = load_dataset(root / "siteB")
    assert ds.sites == ["siteB"] and len(ds.subjects) == 2


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("t1", "T1"),
        ("T1w", "T1"),
        ("MPRAGE", "T1"),
        ("t2w", "T2"),
        ("PDw", "PD"),
        ("flair", "FLAIR"),
        ("T2_FLAIR", "FLAIR"),
        ("t1ce", "T1CE"),
        ("T1Gd", "T1CE"),
    ],
)
def test_modality_names_are_normalised(alias: str, canonical: str) -> None:
    assert normalise_modality(alias) == canonical


def test_unknown_modality_names_the_file(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "m", layout="manifest", n=2)
    csv = root / "siteA" / "manifest.csv"
    csv.write_text(csv.read_text().replace(",T2,", ",DWI,", 1))
    with pytest.raises(DatasetError, match=r"unknown modality 'DWI' in .*manifest.csv:\d"):
        load_dataset(root)


def test_manifest_missing_file_and_columns(tmp_path: Path) -> None:
    csv = tmp_path / "manifest.csv"
    csv.write_text("subject,modality,path\ns1,T1,nope.nii.gz\n")
    with pytest.raises(DatasetError, match="nope.nii.gz: cannot open .no such file"):
        load_dataset(csv)
    csv.write_text("subject,path\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset(csv)


def test_unrecognised_folder(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no NIfTI files in a known layout"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")
