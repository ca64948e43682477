"""Manifest CSV: `manifest.csv` with `subject,modality,path[,site]` rows; modality may also be
`mask` or `labels`; relative paths are relative to the CSV; the site is the `site` column, else
the CSV's folder name."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedsynth.data.layouts.base import FileEntry, Layout
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY
from fedsynth.data.layouts.registry import register_layout
from fedsynth.data.validation import BadInputPolicy, DatasetError

MANIFEST_NAME = "manifest.csv"
_COLUMNS = ("subject", "modality", "path", "site")


def _csv_path(root: Path) -> Path:
    return root if root.is_file() else root / MANIFEST_NAME


@register_layout
class ManifestLayout(Layout):
    name = "manifest"

    def detect(self, root: Path) -> bool:
        return root.is_file() and root.suffix == ".csv" or (root / MANIFEST_NAME).exists()

    def read(self, root: Path, site: str | None, policy: BadInputPolicy) -> Iterator[FileEntry]:
        csv_path = _csv_path(root)
        with csv_path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(_COLUMNS[:3]) - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
            rows = list(reader)
        for line, row in enumerate(rows, start=2):
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            kind = row["modality"].strip()
            key = kind.lower() if kind.lower() in (MASK_KEY, LABELS_KEY) else kind
            row_site = site or (row.get("site") or "").strip() or csv_path.parent.name
            yield FileEntry(row_site, row["subject"].strip(), key, path, f"{csv_path}:{line}")

    @staticmethod
    def subject_id(site: str, subject: int) -> str:
        return f"{site}-{subject:03d}"

    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        sid = self.subject_id(site, subject)
        return {k: root / "volumes" / f"{sid}_{k}.nii.gz" for k in keys}

    def index(self, root: Path, site: str, subject: int, files: dict[str, Path]) -> None:
        """Append one row per written file to `root/manifest.csv`."""
        csv_path = root / MANIFEST_NAME
        new = not csv_path.exists()
        sid = self.subject_id(site, subject)
        with csv_path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(_COLUMNS)
            for key, path in files.items():
                w.writerow([sid, key, path.relative_to(root).as_posix(), site])
