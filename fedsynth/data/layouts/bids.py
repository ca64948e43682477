"""BIDS-like: `sub-01[/ses-1]/anat/sub-01[_ses-1]_{T1w,T2w,PDw,FLAIR}.nii.gz`, optional
`_desc-brain_mask` and `_dseg`; the site is the `site` column of `participants.tsv`, else the
folder's name."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedsynth.data.layouts.base import FileEntry, NamedFilesLayout
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY
from fedsynth.data.layouts.registry import register_layout
from fedsynth.data.validation import BadInputPolicy

PARTICIPANTS = "participants.tsv"
_KINDS = {"mask": MASK_KEY, "dseg": LABELS_KEY}
_SPELLING = {
    "T1": "T1w",
    "T2": "T2w",
    "PD": "PDw",
    "FLAIR": "FLAIR",
    "T1CE": "ce-gd_T1w",
    MASK_KEY: "desc-brain_mask",
    LABELS_KEY: "dseg",
}


def _participant_sites(root: Path) -> dict[str, str]:
    """participant_id -> site from participants.tsv (a `site` column), if present."""
    tsv = root / PARTICIPANTS
    if not tsv.exists():
        return {}
    with tsv.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if rows and "site" not in rows[0]:
        return {}
    return {r["participant_id"]: r["site"] for r in rows if r.get("site")}


@register_layout
class BIDSLayout(NamedFilesLayout):
    name = "bids"
    pattern = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_[a-z]+-[A-Za-z0-9]+)*_([A-Za-z0-9]+)$")

    def matches(
        self, root: Path, policy: BadInputPolicy | None = None
    ) -> Iterator[tuple[Path, re.Match[str]]]:
        return ((p, m) for p, m in super().matches(root, policy) if p.parent.name == "anat")

    def read(self, root: Path, site: str | None, policy: BadInputPolicy) -> Iterator[FileEntry]:
        sites = _participant_sites(root)
        for path, m in self.matches(root, policy):
            subject, suffix = m.groups()
            kind = "T1CE" if suffix == "T1w" and "_ce-" in path.name else suffix
            subject_site = site or sites.get(subject, root.name)
            yield FileEntry(subject_site, subject, _KINDS.get(kind, kind), path)

    @staticmethod
    def subject_id(site: str, subject: int) -> str:
        return f"sub-{site}{subject:03d}"

    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        sid = self.subject_id(site, subject)
        return {k: root / sid / "anat" / f"{sid}_{_SPELLING[k]}.nii.gz" for k in keys}

    def index(self, root: Path, site: str, subject: int, files: dict[str, Path]) -> None:
        """Add the subject to participants.tsv with its site (once)."""
        sid = self.subject_id(site, subject)
        tsv = root / PARTICIPANTS
        new = not tsv.exists()
        if not new and any(line.split("\t")[0] == sid for line in tsv.read_text().splitlines()):
            return
        with tsv.open("a") as fh:
            if new:
                fh.write("participant_id\tsite\n")
            fh.write(f"{sid}\t{site}\n")
