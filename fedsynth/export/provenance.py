"""Where a checkpoint came from, in one record that every export carries: the file's digest,
its model card (and the card's digest), and the privacy it was trained under (ε per site, δ,
unit). A synthetic image or a bundle is then traceable to the exact weights that made it.

The card is, in order: the card next to the checkpoint (packaged and pretrained models,
`fedsynth.models.card`); for a round checkpoint of a run directory, a card derived from the
run's config and that round's metrics line (ε per site as the sites reported it); else the
checkpoint header's own metadata, with the privacy marked unknown.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsynth import __version__
from fedsynth.models.card import card_paths, read_model_card
from fedsynth.models.checkpoint import read_header
from fedsynth.server.run_dir import RunDirectory

NOT_FOR_DIAGNOSIS = "synthetic images: not for diagnosis"
"""The warning every synthetic image and every export carries (Cohen et al., MICCAI 2018:
distribution-matching translators can add or remove pathology)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_json(doc: Any) -> str:
    """Digest of a JSON document in canonical form (sorted keys, no spaces)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """checkpoint: the file; digest: sha256 of its bytes; card: its model card; epsilon: site
    -> ε (empty when no private data was used, None when unknown); delta, unit: the run's;
    private: whether private data trained it (None: unknown)."""

    checkpoint: Path
    digest: str
    card: dict[str, Any]
    epsilon: dict[str, float] | None
    delta: float | None
    unit: str
    private: bool | None

    @property
    def card_digest(self) -> str:
        return sha256_json(self.card)

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.checkpoint.name))

    def privacy(self) -> dict[str, Any]:
        """ε per site, δ and unit as plain JSON (sidecars, bundle metadata)."""
        return {
            "private_data_used": self.private,
            "epsilon_per_site": self.epsilon,
            "delta": self.delta,
            "unit": self.unit,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "generator": f"fedsynth {__version__}",
            "model": self.name,
            "model_digest": self.digest,
            "model_card_digest": self.card_digest,
            **self.privacy(),
        }


def provenance(checkpoint: Path) -> Provenance:
    """The provenance of `checkpoint` (a `CheckpointError` if it is not a fedsynth one)."""
    checkpoint = Path(checkpoint)
    header = read_header(checkpoint)
    digest = sha256_file(checkpoint)
    if card_paths(checkpoint)[0].is_file():
        card = read_model_card(checkpoint)
        privacy = card.get("privacy", {})
        public = privacy.get("private_data_used") is False
        return Provenance(
            checkpoint,
            digest,
            card,
            {} if public else privacy.get("epsilon_per_site"),
            0.0 if public else privacy.get("delta"),
            "none (public data only)" if public else str(privacy.get("unit", "unknown")),
            not public,
        )
    meta = json.loads(header.get("meta", "{}"))
    run = RunDirectory(checkpoint.parent.parent)
    if checkpoint.parent.name == "checkpoints" and (run.path / "config.json").is_file():
        return _run_provenance(checkpoint, digest, run, meta)
    card = {"name": checkpoint.name, "checkpoint_meta": meta}
    return Provenance(checkpoint, digest, card, None, None, "unknown", None)


def _run_provenance(
    checkpoint: Path, digest: str, run: RunDirectory, meta: dict[str, Any]
) -> Provenance:
    """A card for round `meta["round"]` of a federated run, from its config and metrics."""
    cfg = run.config()
    flat = run.flat_config()
    number = meta.get("round")
    rows = [r for r in run.metrics() if r.get("round") == number]
    sites = rows[-1]["sites"] if rows else {}
    p = cfg.privacy
    epsilon = None
    if p.enabled:
        epsilon = {
            site: float(values["train/epsilon"])
            for site, values in sorted(sites.items())
            if math.isfinite(values.get("train/epsilon", math.nan))
        }
    card = {
        "name": f"federated run {run.path.name}, round {number}",
        "model": {k: v for k, v in flat.items() if k.startswith("model.")},
        "data": {
            "modalities": list(cfg.data.modalities),
            "sites": sorted(sites),
            "image_size": cfg.data.preprocess.image_size,
        },
        "training": {
            "mode": f"federated, {cfg.federation.strategy}, shared: {cfg.federation.share}",
            "rounds": number,
            "steps_per_site": (number or 0) * cfg.federation.local_steps,
            "warm_start": str(cfg.train.init_checkpoint or "none"),
            "config_digest": meta.get("config_digest"),
        },
        "privacy": {
            "private_data_used": True,
            "dp": p.enabled,
            "epsilon_per_site": epsilon,
            "delta": p.delta if p.enabled else None,
            "unit": p.unit if p.enabled else "none: trained without DP",
            "noise_multiplier": p.noise_multiplier if p.enabled else None,
        },
    }
    return Provenance(
        checkpoint,
        digest,
        card,
        epsilon,
        p.delta if p.enabled else None,
        p.unit if p.enabled else "none: trained without DP",
        True,
    )
