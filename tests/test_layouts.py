"""Each dataset layout is found on real files written in that layout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINE, deny_access, head, write_tiny_dataset

from fedsynth.data.config import DataConfig
from fedsynth.data.layouts import (
    LAYOUTS,
    DatasetError,
    FileEntry,
    Layout,
    detect_layout,
    load_dataset,
    normalise_modality,
    register_layout,
    write_subject,
)
from fedsynth.data.layouts import registry as layout_registry


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


def test_unknown_modality_is_skipped_when_lenient(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "m", n=2)
    anat = root / "siteA" / "sub-siteA000" / "anat"
    (anat / "sub-siteA000_DWI.nii.gz").write_bytes((anat / "sub-siteA000_T1w.nii.gz").read_bytes())
    with pytest.raises(DatasetError, match=r"unknown modality 'DWI' in .*sub-siteA000_DWI"):
        load_dataset(root)
    ds = load_dataset(root, lenient=True)
    assert len(ds.subjects) == 4 and set(ds.subjects[0].images) == {"T1", "T2"}
    [skipped] = ds.skipped
    assert skipped["file"].endswith("sub-siteA000_DWI.nii.gz")
    assert "unknown modality 'DWI'" in skipped["reason"]


def test_unreadable_folder_is_never_skipped_silently(tmp_path: Path, monkeypatch) -> None:
    root = write_tiny_dataset(tmp_path / "u", n=2)
    folder = root / "siteB" / "sub-siteB101" / "anat"
    deny_access(folder, monkeypatch)
    with pytest.raises(DatasetError, match=r"sub-siteB101/anat: cannot open \(permission denied"):
        load_dataset(root)
    ds = load_dataset(root, lenient=True)
    assert len(ds.subjects) == 3 and len(ds.skipped) == 1


# --- the registry: a new layout is one class and one registration line ------------------------


@pytest.fixture
def registry_snapshot():
    """Undo whatever a test registers."""
    before = dict(layout_registry._LAYOUTS)
    yield
    layout_registry._LAYOUTS.clear()
    layout_registry._LAYOUTS.update(before)


class FlatLayout(Layout):
    """A toy layout: every volume flat in one folder as `<subject>__<modality>.nii.gz`."""

    name = "flat"

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any("__" in p.name for p in root.glob("*.nii.gz"))

    def read(self, root: Path, site: str | None, policy) -> Iterator[FileEntry]:
        for path in sorted(root.glob("*__*.nii.gz")):
            subject, kind = path.name.removesuffix(".nii.gz").split("__")
            yield FileEntry(site or root.name, subject, kind, path)

    @staticmethod
    def subject_id(site: str, subject: int) -> str:
        return f"{site}{subject:02d}"

    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        return {k: root / f"{self.subject_id(site, subject)}__{k}.nii.gz" for k in keys}


def test_a_registered_layout_reads_and_writes(tmp_path: Path, registry_snapshot) -> None:
    assert "flat" not in LAYOUTS
    register_layout(FlatLayout)
    assert "flat" in LAYOUTS and DataConfig(layout="flat").layout == "flat"
    rng = np.random.default_rng(0)
    for k in range(3):
        images = {m: nib.Nifti1Image(head(rng, c), AFFINE) for m, c in (("t1w", 1.0), ("T2", -1))}
        write_subject(tmp_path / "clinic", "flat", "clinic", k, images)
    assert detect_layout(tmp_path / "clinic") == "flat"
    ds = load_dataset(tmp_path / "clinic")
    assert ds.layout == "flat" and ds.sites == ["clinic"]
    assert [r.subject for r in ds.subjects] == ["clinic00", "clinic01", "clinic02"]
    assert all(set(r.images) == {"T1", "T2"} for r in ds.subjects)  # names normalised
    with pytest.raises(ValueError, match="already registered"):
        register_layout(FlatLayout)
