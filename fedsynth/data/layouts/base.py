"""What every layout shares: the records a layout produces, the `Layout` interface, and the
builder that turns a layout's files into subjects under the bad-input policy."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import nibabel as nib

from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY, normalise_modality
from fedsynth.data.validation import BadInputPolicy, DatasetError, cannot_open, check_readable

NIFTI_SUFFIXES = (".nii.gz", ".nii")


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
    """All subjects found under one root, the layout that found them, (lenient mode) the
    files skipped on the way, and the uids ("site/subject") the dataset holds out from
    training (`fedsynth.data.layouts.loader.HELD_OUT_KEY`; empty: the splits choose)."""

    root: Path
    layout: str
    subjects: list[SubjectRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    held_out: frozenset[str] = frozenset()

    @property
    def sites(self) -> list[str]:
        return sorted({s.site for s in self.subjects})

    def by_site(self) -> dict[str, list[SubjectRecord]]:
        out: dict[str, list[SubjectRecord]] = {}
        for rec in self.subjects:
            out.setdefault(rec.site, []).append(rec)
        return out


class FileEntry(NamedTuple):
    """One file a layout found: whose it is and what it holds.

    kind: a modality spelling (normalised later), `MASK_KEY` or `LABELS_KEY`.
    where: how to point at the entry in an error if not by its path (a manifest's file:line).
    """

    site: str
    subject: str
    kind: str
    path: Path
    where: str | None = None


def strip_nifti(name: str) -> str | None:
    """The name without its NIfTI suffix, or None if it is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def nifti_files(root: Path, policy: BadInputPolicy | None = None) -> list[Path]:
    """Every NIfTI-named entry under `root`, sorted. A folder that cannot be listed goes to
    `policy` (it is never skipped silently); without one (detection) it is ignored. Dangling
    links are listed too: they fail when read, with the reason."""

    def unlistable(err: OSError) -> None:
        if policy is not None:
            policy.reject(cannot_open(err.filename, err), file=str(err.filename))

    found = []
    for folder, _, names in os.walk(root, onerror=unlistable):
        found += [Path(folder) / n for n in names if strip_nifti(n) is not None]
    return sorted(found)


class Layout(ABC):
    """One dataset layout: recognise it, list its files, write a subject in it.

    A new layout is a subclass with a unique `name`, registered with `@register_layout`
    (`fedsynth.data.layouts.registry`).
    """

    name: ClassVar[str]

    @abstractmethod
    def detect(self, root: Path) -> bool:
        """Does `root` look like this layout? (Cheap, never raises on odd files.)"""

    @abstractmethod
    def read(self, root: Path, site: str | None, policy: BadInputPolicy) -> Iterable[FileEntry]:
        """Every file of this layout under `root`; `site` (if given) overrides the layout's own."""

    @staticmethod
    @abstractmethod
    def subject_id(site: str, subject: int) -> str:
        """The id `read` finds for subject number `subject` of `site` when written here."""

    @abstractmethod
    def paths(self, root: Path, site: str, subject: int, keys: Iterable[str]) -> dict[str, Path]:
        """Where subject number `subject` of `site` keeps each of `keys` (modalities,
        `MASK_KEY`, `LABELS_KEY`) in this layout."""

    def index(  # noqa: B027 — an optional hook: most layouts keep no index
        self, root: Path, site: str, subject: int, files: dict[str, Path]
    ) -> None:
        """Bookkeeping after a subject is written (participants.tsv, manifest rows); none here."""

    def write(
        self, root: Path, site: str, subject: int, volumes: dict[str, nib.Nifti1Image]
    ) -> list[Path]:
        """Save `volumes` (key -> image) of one subject; returns the paths written."""
        files = self.paths(root, site, subject, volumes)
        root.mkdir(parents=True, exist_ok=True)
        for key, img in volumes.items():
            files[key].parent.mkdir(parents=True, exist_ok=True)
            nib.save(img, files[key])
        self.index(root, site, subject, files)
        return list(files.values())


class NamedFilesLayout(Layout):
    """A layout whose file names say the subject and the contrast (IXI, BraTS, BIDS)."""

    pattern: ClassVar[re.Pattern[str]]

    def matches(
        self, root: Path, policy: BadInputPolicy | None = None
    ) -> Iterator[tuple[Path, re.Match[str]]]:
        """Each NIfTI file whose name (without suffix) matches `pattern`, with the match."""
        for path in nifti_files(root, policy):
            m = self.pattern.match(strip_nifti(path.name) or "")
            if m is not None:
                yield path, m

    def detect(self, root: Path) -> bool:
        return next(iter(self.matches(root)), None) is not None


class SubjectBuilder:
    """Collects a layout's files per (site, subject): normalises modality names, checks each file
    opens, refuses a second file for one modality; a bad file goes to the policy."""

    def __init__(self, policy: BadInputPolicy) -> None:
        self.policy = policy
        self._recs: dict[tuple[str, str], dict[str, Path]] = {}

    def add(self, entry: FileEntry) -> None:
        try:
            key = entry.kind
            if key not in (MASK_KEY, LABELS_KEY):
                key = normalise_modality(key, entry.where or entry.path)
            files = self._recs.get((entry.site, entry.subject), {})
            if key in files and files[key] != entry.path:
                raise DatasetError(
                    f"{entry.path}: subject {entry.subject!r} already has a {key} file "
                    f"({files[key]})"
                )
            check_readable(entry.path)
        except DatasetError as err:
            self.policy.reject(err, file=str(entry.path), site=entry.site, subject=entry.subject)
            return
        self._recs.setdefault((entry.site, entry.subject), {})[key] = entry.path

    def build(self) -> list[SubjectRecord]:
        out = []
        for (site, subject), files in sorted(self._recs.items()):
            mask, labels = files.pop(MASK_KEY, None), files.pop(LABELS_KEY, None)
            if files:
                out.append(SubjectRecord(subject, site, dict(sorted(files.items())), mask, labels))
        return out
