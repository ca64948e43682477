"""What a dataset's label values mean: tissue classes (CSF, GM, WM) and lesion classes.

Sources, first found wins: the `labels` map of a fedsynth `dataset.json` (the phantom writes
one; users may too), a BIDS `dseg.tsv` (columns `index`, `name`) at the dataset root, the
BraTS convention for the `brats` layout (1 necrotic core, 2 oedema, 3/4 enhancing tumour),
else "label N" for every value seen. Classes named like a tumour or oedema form the lesion;
CSF, GM and WM are recognised by name, so Dice figures keep their names across datasets.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

BRATS_LABELS = {
    1: "necrotic tumour core",
    2: "oedema",
    3: "enhancing tumour",  # BraTS 2023
    4: "enhancing tumour",  # BraTS 2021 and earlier
}
TISSUES = {
    "csf": ("csf", "cerebrospinal fluid"),
    "gm": ("gm", "grey matter", "gray matter"),
    "wm": ("wm", "white matter"),
}
LESION_WORDS = ("oedema", "edema", "tumour", "tumor", "necrotic", "enhancing", "lesion")


@dataclass(frozen=True)
class LabelScheme:
    """Label value -> name (0 is background and never listed)."""

    names: dict[int, str]

    def tissue(self, key: str) -> int | None:
        """The label value of tissue `key` (csf, gm, wm), if the scheme has it."""
        for value, name in self.names.items():
            if name.strip().lower() in TISSUES[key] and not self.is_lesion(value):
                return value
        return None

    def is_lesion(self, value: int) -> bool:
        name = self.names.get(value, "").lower()
        return any(word in name for word in LESION_WORDS)

    @property
    def lesion(self) -> tuple[int, ...]:
        return tuple(v for v in sorted(self.names) if self.is_lesion(v))

    def classes(self) -> dict[str, tuple[int, ...]]:
        """Reported classes: csf/gm/wm where present, every other non-lesion label under a slug
        of its name, and `lesion` = the union of lesion labels."""
        out: dict[str, tuple[int, ...]] = {}
        named = {self.tissue(k): k for k in TISSUES}
        for value in sorted(self.names):
            if self.is_lesion(value):
                continue
            out[named.get(value) or _slug(self.names[value])] = (value,)
        if self.lesion:
            out["lesion"] = self.lesion
        return out


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def label_scheme(root: Path | None, layout: str, values: set[int]) -> LabelScheme:
    """The scheme of the dataset at `root` (see the module docstring), restricted to the
    label `values` actually present."""
    names: dict[int, str] = {}
    meta = root / "dataset.json" if root is not None and root.is_dir() else None
    dseg = root / "dseg.tsv" if root is not None and root.is_dir() else None
    if meta is not None and meta.is_file() and "labels" in (doc := json.loads(meta.read_text())):
        names = {int(k): str(v) for k, v in doc["labels"].items()}
    elif dseg is not None and dseg.is_file():
        with dseg.open(newline="") as fh:
            names = {int(r["index"]): r["name"] for r in csv.DictReader(fh, delimiter="\t")}
    elif layout == "brats":
        names = dict(BRATS_LABELS)
    return LabelScheme({v: names.get(v, f"label {v}") for v in sorted(values) if v != 0})
