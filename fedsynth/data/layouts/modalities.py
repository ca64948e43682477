"""Canonical modality names and the spellings layouts use for them (t1/T1w/MPRAGE → T1, …)."""

from __future__ import annotations

from pathlib import Path

from fedsynth.data.validation import DatasetError

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
