"""Read a dataset root (one site, or a multi-site root with `dataset.json`) with the registered
layouts, and write one subject in a layout."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib

from fedsynth.data.layouts.base import Dataset, SubjectBuilder, SubjectRecord
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY
from fedsynth.data.layouts.registry import detect_layout, get_layout
from fedsynth.data.validation import BadInputPolicy, DatasetError

SITES_FILE = "dataset.json"
HELD_OUT_KEY = "held_out"
"""A site entry of dataset.json may list subject ids under this key: subjects held out from
training (every contrast, aligned), where the splits take the test and validation subjects
from (the phantom writes it when its training subjects are partly paired or misaligned)."""


def _read_one(
    root: Path, layout: str, site: str | None, policy: BadInputPolicy
) -> list[SubjectRecord]:
    builder = SubjectBuilder(policy)
    for entry in get_layout(layout).read(root, site, policy):
        builder.add(entry)
    return builder.build()


def load_dataset(
    root: str | Path, layout: str = "auto", site: str | None = None, lenient: bool = False
) -> Dataset:
    """Find all subjects under `root`.

    A root holding a fedsynth `dataset.json` (the phantom writes one) is a multi-site root:
    each site's folder is read on its own and named after the site, and the subjects its
    sites list under `HELD_OUT_KEY` are `Dataset.held_out`. Otherwise the site comes
    from the layout (IXI hospital, participants.tsv `site`, manifest `site` column) or `site`.
    A bad file (unknown modality, a second file for one modality, unreadable) stops here, or
    with `lenient` is skipped and listed in `Dataset.skipped`.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    policy = BadInputPolicy(lenient)
    meta = root / SITES_FILE if root.is_dir() else None
    if meta is not None and meta.exists() and site is None:
        found, subjects, held = layout, [], set()
        for s in json.loads(meta.read_text())["sites"]:
            sub_root = root / s["name"]
            found = detect_layout(sub_root) if layout == "auto" else layout
            subjects += _read_one(sub_root, found, s["name"], policy)
            held |= {f"{s['name']}/{sid}" for sid in s.get(HELD_OUT_KEY, [])}
        if not subjects:
            raise DatasetError(f"{root}: no subjects found in the sites of {SITES_FILE}")
        return Dataset(root, found, subjects, policy.skipped, frozenset(held))
    found = detect_layout(root) if layout == "auto" else layout
    subjects = _read_one(root, found, site, policy)
    if not subjects:
        raise DatasetError(f"{root}: no subjects found in the {found} layout")
    return Dataset(root, found, subjects, policy.skipped)


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
    and an alphanumeric site, e.g. `IXI007-hospA-0007-T1.nii.gz`). Layouts with an index
    (BIDS participants.tsv, manifest.csv) add the subject to it.
    """
    extra = {MASK_KEY: mask, LABELS_KEY: labels}
    volumes = {**images, **{k: v for k, v in extra.items() if v is not None}}
    return get_layout(layout).write(Path(root), site, subject, volumes)
