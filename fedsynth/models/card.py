"""Model cards (Mitchell et al. 2019) for public warm starts: what data a checkpoint saw, how
it was trained, and that it saw no private data (ε = 0 with respect to every hospital).

A card is a JSON document next to the checkpoint (NAME.card.json) plus a Markdown rendering
(NAME.card.md); the same JSON is also in the checkpoint's header meta, so the weights never
travel without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsynth.atomic import atomic_write_bytes

CARD_FORMAT = "fedsynth-model-card/1"
OVERLAP_WARNING = (
    "A public dataset may hold the same patients as a private site (IXI and BraTS scans are "
    "also in hospital archives): a warm start trained on a subject a site later fine-tunes "
    "on has seen that subject without DP, and the site's ε does not cover it. Exclude "
    "overlapping subjects before pretraining."
)


def card_paths(checkpoint: Path) -> tuple[Path, Path]:
    """(JSON, Markdown) paths of the card of `checkpoint`."""
    stem = Path(checkpoint).with_suffix("")
    return stem.with_name(stem.name + ".card.json"), stem.with_name(stem.name + ".card.md")


def _markdown(card: Mapping[str, Any]) -> str:
    lines = [f"# Model card — {card['name']}", ""]
    for section, values in card.items():
        if not isinstance(values, Mapping):
            continue
        lines += [f"## {section}", ""]
        lines += [
            f"- **{k}**: {json.dumps(v) if not isinstance(v, str) else v}"
            for k, v in values.items()
        ]
        lines.append("")
    return "\n".join(lines)


def write_model_card(checkpoint: Path, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write the card of `checkpoint` (JSON and Markdown); returns both paths."""
    doc = {"format": CARD_FORMAT, **card}
    json_path, md_path = card_paths(checkpoint)
    atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
    atomic_write_bytes(md_path, _markdown(doc).encode())
    return json_path, md_path


def read_model_card(checkpoint: Path) -> dict[str, Any]:
    """The card written next to `checkpoint`."""
    path = card_paths(checkpoint)[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model card next to {checkpoint}")
    return json.loads(path.read_text())
