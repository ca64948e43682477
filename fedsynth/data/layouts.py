"""Dataset layouts: find every subject's volumes (and its site) in IXI, BraTS, BIDS-like or
manifest-CSV folders, and write volumes in those same layouts (the phantom uses the writers,
so the readers are tested on real files).

A layout only finds files; it does not open them (that is `preprocess`'s job).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

LAYOUTS = ("ixi", "brats", "bids", "manifest")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Canonical modality names and the spellings each layout uses for them.
_MODALITY_ALIASES = {
    "T1": ("t1", "t1w", "mprage", "t1-weighted"),
    "T1CE": ("t1ce", "t1gd", "t1c", "t1-ce", "t1post"),
    "T2": ("t2", "t2w", "t2-weighted"),
    "PD": ("pd", "pdw", "pd-weighted"),
    "FLAIR": ("flair", "t2flair", "t2-flair"),
}
_ALIAS_TO_MODALITY = {a: m for m, aliases in _MODALITY_ALIASES.items() for a in aliases}
MODALITIES = tuple(_MODALITY_ALIASES)
# Files that travel with a subject but are not image contrasts.
MASK_KEY = "mask"
LABELS_KEY = "labels"


class DatasetError(ValueError):
    """Bad input data: the message names the file (or folder) and the reason."""


def normalise_modality(name: str, where: str | Path = "") -> str:
    """Map t1/T1w/MPRAGE → T1, t2/T2w → T2, pd/PDw → PD, flair → FLAIR, t1ce/T1Gd → T1CE."""
    key = name.strip().lower().replace("_", "-")
    if key in _ALIAS_TO_MODALITY:
        return _ALIAS_TO_MODALITY[key]
    if name.strip().upper() in MODALITIES:
        return name.strip().upper()
    place = f" in {where}" if where else ""
    raise DatasetError(
        f"unknown modality {name!r}{place}: expected one of {', '.join(MODALITIES)} "
        f"(or an alias: {', '.join(sorted(_ALIAS_TO_MODALITY))})"
    )


@dataclass(frozen=True)
class SubjectRecord:
    """One subject's files: modality -> NIfTI path, plus optional brain mask and label map."""

    subject: str
    site: str
    images: dict[str, Path]
    mask: Path | None = None
    labels: Path | None = None

    def files(self) -> list[Path]:
        return [*self.images.values(), *(p for p in (self.mask, self.labels) if p is not None)]


@dataclass
class Dataset:
    """All subjects found under one root, with the layout that found them."""

    root: Path
    layout: str
    subjects: list[SubjectRecord] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        return sorted({s.site for s in self.subjects})

    def by_site(self) -> dict[str, list[SubjectRecord]]:
        out: dict[str, list[SubjectRecord]] = {}
        for rec in self.subjects:
            out.setdefault(rec.site, []).append(rec)
        return out


def _strip_nifti(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(root: Path) -> Iterable[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and _strip_nifti(p.name) is not None)


class _SubjectBuilder:
    """Collects files per (site, subject) and refuses two files for one modality."""

    def __init__(self) -> None:
        self._recs: dict[tuple[str, str], dict[str, Path]] = {}

    def add(self, site: str, subject: str, key: str, path: Path) -> None:
        files = self._recs.setdefault((site, subject), {})
        if key in files and files[key] != path:
            raise DatasetError(
                f"{path}: subject {subject!r} already has a {key} file ({files[key]})"
            )
        files[key] = path

    def build(self) -> list[SubjectRecord]:
        out = []
        for (site, subject), files in sorted(self._recs.items()):
            mask, labels = files.pop(MASK_KEY, None), files.pop(LABELS_KEY, None)
            if files:
                out.append(SubjectRecord(subject, site, dict(sorted(files.items())), mask, labels))
        return out


# --- IXI: IXI012-HH-1211-T1.nii.gz; the hospital (Guys, HH, IOP) is the site ---------------

_IXI = re.compile(r"^(IXI\d+)-([A-Za-z0-9]+)-(\d+)-([A-Za-z0-9]+)$")
_IXI_SKIP = {"MRA", "DTI"}


def read_ixi(root: Path, site: str | None = None) -> list[SubjectRecord]:
    b = _SubjectBuilder()
    for path in _nifti_files(root):
        m = _IXI.match(_strip_nifti(path.name) or "")
        if m is None:
            continue
        subject, hospital, _, kind = m.groups()
        if kind.upper() in _IXI_SKIP:
            continue
        key = {"MASK": MASK_KEY, "SEG": LABELS_KEY}.get(kind.upper())
        b.add(site or hospital, subject, key or normalise_modality(kind, path), path)
    return b.build()


# --- BraTS: BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz ------------------

_BRATS = re.compile(r"^(BraTS[\w-]*?_\d+)_([A-Za-z0-9]+)$")


def read_brats(root: Path, site: str = "brats") -> list[SubjectRecord]:
    b = _SubjectBuilder()
    for path in _nifti_files(root):
        m = _BRATS.match(_strip_nifti(path.name) or "")
        if m is None:
            continue
        subject, kind = m.groups()
        key = {"seg": LABELS_KEY, "mask": MASK_KEY}.get(kind.lower())
        b.add(site, subject, key or normalise_modality(kind, path), path)
    return b.build()


# --- BIDS-like: sub-01[/ses-1]/anat/sub-01[_ses-1]_{T1w,T2w,PDw,FLAIR}.nii.gz ---------------

_BIDS = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_[a-z]+-[A-Za-z0-9]+)*_([A-Za-z0-9]+)$")


def _bids_sites(root: Path) -> dict[str, str]:
    """participant_id -> site from participants.tsv (a `site` column), if present."""
    tsv = root / "participants.tsv"
    if not tsv.exists():
        return {}
    with tsv.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if rows and "site" not in rows[0]:
        return {}
    return {r["participant_id"]: r["site"] for r in rows if r.get("site")}


def read_bids(root: Path, site: str | None = None) -> list[SubjectRecord]:
    sites = _bids_sites(root)
    default_site = site or root.name
    b = _SubjectBuilder()
    for path in _nifti_files(root):
        if path.parent.name != "anat":
            continue
        stem = _strip_nifti(path.name) or ""
        m = _BIDS.match(stem)
        if m is None:
            continue
        subject, suffix = m.groups()
        if suffix == "mask":
            key = MASK_KEY
        elif suffix == "T1w" and "_ce-" in stem:
            key = "T1CE"
        elif suffix == "dseg":
            key = LABELS_KEY
        else:
            key = normalise_modality(suffix, path)
        b.add(site or sites.get(subject, default_site), subject, key, path)
    return b.build()


# --- manifest CSV: subject,modality,path[,site]; modality may also be `mask` or `labels` ---

MANIFEST_NAME = "manifest.csv"


def read_manifest(csv_path: Path, site: str | None = None) -> list[SubjectRecord]:
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"subject", "modality", "path"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    b = _SubjectBuilder()
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        path = Path(row["path"])
        if not path.is_absolute():
            path = csv_path.parent / path
        if not path.exists():
            raise DatasetError(f"{where}: file {path} does not exist")
        kind = row["modality"].strip()
        key = kind.lower() if kind.lower() in (MASK_KEY, LABELS_KEY) else None
        row_site = site or (row.get("site") or "").strip() or csv_path.parent.name
        b.add(row_site, row["subject"].strip(), key or normalise_modality(kind, where), path)
    return b.build()


# --- detection -----------------------------------------------------------------------------

SITES_FILE = "dataset.json"


def detect_layout(root: Path) -> str:
    """Guess the layout of `root` from its file names."""
    if root.is_file() and root.suffix == ".csv" or (root / MANIFEST_NAME).exists():
        return "manifest"
    for path in _nifti_files(root):
        stem = _strip_nifti(path.name) or ""
        if _IXI.match(stem):
            return "ixi"
        if _BRATS.match(stem):
            return "brats"
        if _BIDS.match(stem) and path.parent.name == "anat":
            return "bids"
    raise DatasetError(
        f"{root}: no NIfTI files in a known layout ({', '.join(LAYOUTS)}); "
        "see README 'Your own data'"
    )


def _read_one(root: Path, layout: str, site: str | None) -> list[SubjectRecord]:
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "ixi":
        return read_ixi(root, site)
    if layout == "brats":
        return read_brats(root, site or "brats")
    if layout == "bids":
        return read_bids(root, site)
    if layout == "manifest":
        csv_path = root if root.is_file() else root / MANIFEST_NAME
        return read_manifest(csv_path, site)
    raise DatasetError(f"unknown layout {layout!r}: expected auto or one of {', '.join(LAYOUTS)}")


def load_dataset(root: str | Path, layout: str = "auto", site: str | None = None) -> Dataset:
    """Find all subjects under `root`.

    A root holding a fedsynth `dataset.json` (the phantom writes one) is a multi-site root:
    each site's folder is read on its own and named after the site. Otherwise the site comes
    from the layout (IXI hospital, participants.tsv `site`, manifest `site` column) or `site`.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    meta = root / SITES_FILE if root.is_dir() else None
    if meta is not None and meta.exists() and site is None:
        sites = json.loads(meta.read_text())["sites"]
        found_layout = layout
        subjects: list[SubjectRecord] = []
        for s in sites:
            sub_root = root / s["name"]
            found_layout = detect_layout(sub_root) if layout == "auto" else layout
            subjects += _read_one(sub_root, found_layout, s["name"])
        if not subjects:
            raise DatasetError(f"{root}: no subjects found in the sites of {SITES_FILE}")
        return Dataset(root, found_layout, subjects)
    found = detect_layout(root) if layout == "auto" else layout
    subjects = _read_one(root, found, site)
    if not subjects:
        raise DatasetError(f"{root}: no subjects found in the {found} layout")
    return Dataset(root, found, subjects)


# --- writers (used by the phantom; one per layout) -----------------------------------------

_BIDS_SUFFIX = {"T1": "T1w", "T2": "T2w", "PD": "PDw", "FLAIR": "FLAIR", "T1CE": "ce-gd_T1w"}
_BRATS_SUFFIX = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair", "PD": "pd"}


def write_subject(
    root: Path,
    layout: str,
    site: str,
    subject: int,
    images: dict[str, nib.Nifti1Image],
    mask: nib.Nifti1Image | None = None,
    labels: nib.Nifti1Image | None = None,
) -> list[Path]:
    """Write one subject's volumes under `root` in `layout`; returns the paths written.

    `subject` is a number; each layout spells the subject id its own way (IXI needs digits
    and an alphanumeric site, e.g. `IXI007-hospA-0007-T1.nii.gz`). For the manifest layout
    the rows are appended to `root/manifest.csv`.
    """
    root = Path(root)
    files: dict[str, Path]
    if layout == "bids":
        sid = f"sub-{site}{subject:03d}"
        anat = root / sid / "anat"
        files = {m: anat / f"{sid}_{_BIDS_SUFFIX[m]}.nii.gz" for m in images}
        files[MASK_KEY] = anat / f"{sid}_desc-brain_mask.nii.gz"
        files[LABELS_KEY] = anat / f"{sid}_dseg.nii.gz"
    elif layout == "ixi":
        sid = f"IXI{subject:03d}-{site}-{subject:04d}"
        files = {m: root / f"IXI-{m}" / f"{sid}-{m}.nii.gz" for m in images}
        files[MASK_KEY] = root / "IXI-mask" / f"{sid}-mask.nii.gz"
        files[LABELS_KEY] = root / "IXI-seg" / f"{sid}-seg.nii.gz"
    elif layout == "brats":
        sid = f"BraTS2021_{subject:05d}"
        files = {m: root / sid / f"{sid}_{_BRATS_SUFFIX[m]}.nii.gz" for m in images}
        files[MASK_KEY] = root / sid / f"{sid}_mask.nii.gz"
        files[LABELS_KEY] = root / sid / f"{sid}_seg.nii.gz"
    elif layout == "manifest":
        sid = f"{site}-{subject:03d}"
        files = {m: root / "volumes" / f"{sid}_{m}.nii.gz" for m in images}
        files[MASK_KEY] = root / "volumes" / f"{sid}_mask.nii.gz"
        files[LABELS_KEY] = root / "volumes" / f"{sid}_labels.nii.gz"
    else:
        raise DatasetError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    volumes = {**images, MASK_KEY: mask, LABELS_KEY: labels}
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for key, img in volumes.items():
        if img is None:
            continue
        files[key].parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, files[key])
        written.append(files[key])
    if layout == "bids":
        _append_participant(root, sid, site)
    if layout == "manifest":
        _append_manifest(
            root, sid, site, {k: files[k] for k, v in volumes.items() if v is not None}
        )
    return written


def _append_participant(root: Path, sid: str, site: str) -> None:
    tsv = root / "participants.tsv"
    new = not tsv.exists()
    if not new and any(line.split("\t")[0] == sid for line in tsv.read_text().splitlines()):
        return
    with tsv.open("a") as fh:
        if new:
            fh.write("participant_id\tsite\n")
        fh.write(f"{sid}\t{site}\n")


def _append_manifest(root: Path, sid: str, site: str, files: dict[str, Path]) -> None:
    csv_path = root / MANIFEST_NAME
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["subject", "modality", "path", "site"])
        for key, path in files.items():
            w.writerow([sid, key, path.relative_to(root).as_posix(), site])
