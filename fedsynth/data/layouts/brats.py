"""BraTS: `BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz`; one site, `brats`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedsynth.data.layouts.base import FileEntry, NamedFilesLayout
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY
from fedsynth.data.layouts.registry import register_layout
from fedsynth.data.validation import BadInputPolicy

_KINDS = {"seg": LABELS_KEY, "mask": MASK_KEY}
_SPELLING = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair", "PD": "pd"} | {
    v: k for k, v in _KINDS.items()
}


@register_layout
class BraTSLayout(NamedFilesLayout):
    name = "brats"
    pattern = re.compile(r"^(BraTS[\w-]*?_\d+)_([A-Za-z0-9]+)$")

    def read(self, root: Path, site: str | None, policy: BadInputPolicy) -> Iterator[FileEntry]:
        for path, m in self.matches(root, policy):
            subject, kind = m.groups()
            yield FileEntry(site or "brats", subject, _KINDS.get(kind.lower(), kind), path)

    @staticmethod
    def subject_id(site: str, subject: int) -> str:
        return f"BraTS2021_{subject:05d}"

    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        sid = self.subject_id(site, subject)
        return {k: root / sid / f"{sid}_{_SPELLING[k]}.nii.gz" for k in keys}
