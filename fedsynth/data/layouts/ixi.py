"""IXI: `IXI012-HH-1211-T1.nii.gz` in any folders; the hospital (Guys, HH, IOP) is the site."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedsynth.data.layouts.base import FileEntry, NamedFilesLayout
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY
from fedsynth.data.layouts.registry import register_layout
from fedsynth.data.validation import BadInputPolicy

_KINDS = {"MASK": MASK_KEY, "SEG": LABELS_KEY}
_SPELLING = {v: k.lower() for k, v in _KINDS.items()}
_SKIP = {"MRA", "DTI"}  # IXI acquisitions that are not structural contrasts


@register_layout
class IXILayout(NamedFilesLayout):
    name = "ixi"
    pattern = re.compile(r"^(IXI\d+)-([A-Za-z0-9]+)-(\d+)-([A-Za-z0-9]+)$")

    def read(self, root: Path, site: str | None, policy: BadInputPolicy) -> Iterator[FileEntry]:
        for path, m in self.matches(root, policy):
            subject, hospital, _, kind = m.groups()
            if kind.upper() not in _SKIP:
                yield FileEntry(site or hospital, subject, _KINDS.get(kind.upper(), kind), path)

    @staticmethod
    def subject_id(site: str, subject: int) -> str:
        return f"IXI{subject:03d}"

    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        """IXI needs digits and an alphanumeric site: `IXI-T1/IXI007-hospA-0007-T1.nii.gz`."""
        sid = f"{self.subject_id(site, subject)}-{site}-{subject:04d}"
        spelled = {k: _SPELLING.get(k, k) for k in keys}
        return {k: root / f"IXI-{s}" / f"{sid}-{s}.nii.gz" for k, s in spelled.items()}
