"""`fedsynth pretrain`: a public warm start — a model trained on public data only, with its
model card. Private runs start from it (`train.init-checkpoint`) and fine-tune few weights
with DP, which learns where DP from scratch does not (docs/architecture.md §4).

Public data is either the embedded phantom, domain-randomised (every subject on its own
scanner drawn over clinical ranges, `fedsynth.data.phantom.RANDOM_RANGES`), or a public
dataset in a supported layout (IXI, BraTS, …) — see `OVERLAP_WARNING` for the one way the
latter can void a site's guarantee. Training is the baselines' centralized run on the pooled
public sites, without DP: no private image is involved, so ε = 0 for every hospital.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from fedsynth.config import FedsynthConfig
from fedsynth.data.layouts import SITES_FILE
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import pool_sites
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.models.card import OVERLAP_WARNING, write_model_card
from fedsynth.models.checkpoint import save_checkpoint
from fedsynth.simulations.baselines import train_site

log = logging.getLogger(__name__)
CHECKPOINT = "model.safetensors"


def public_phantom(out: Path, subjects: int, cfg: FedsynthConfig, progress: bool = True) -> Path:
    """A domain-randomised phantom cohort of `subjects` subjects at `out` (made once)."""
    if not (Path(out) / SITES_FILE).is_file():
        phantom = PhantomConfig(
            sites=1,
            subjects_per_site=subjects,
            modalities=cfg.data.modalities,
            seed=cfg.data.seed,
            acquisition="randomised",
        )
        generate_phantom(phantom, out, progress=progress)
    return Path(out)


def _data_card(cfg: FedsynthConfig, sites: list, source: str) -> dict[str, Any]:
    """What the warm start saw: source, subjects and slices, and the acquisition protocols."""
    root = Path(cfg.data.root)
    described = json.loads((root / SITES_FILE).read_text()) if (root / SITES_FILE).is_file() else {}
    subjects = {u for s in sites for part in s.train.values() for u in part.unique_subjects()}
    card: dict[str, Any] = {
        "source": source,
        "root": str(root),
        "layout": cfg.data.layout,
        "modalities": list(cfg.data.modalities),
        "sites": [s.site for s in sites],
        "training_subjects": len(subjects),
        "training_slices": sum(s.num_train_slices() for s in sites),
        "protocols": described.get("randomised_ranges")
        or {s["name"]: s["protocols"] for s in described.get("sites", []) if "protocols" in s}
        or "not described by the dataset",
        "lesions": described.get("lesions", "unknown"),
    }
    if source != "phantom":
        card["warning"] = OVERLAP_WARNING
    return card


def pretrain(
    cfg: FedsynthConfig,
    out: Path,
    source: str = "dataset",
    progress: bool = True,
    command: str = "",
) -> Path:
    """Train `cfg`'s model on the public data at `cfg.data.root` (all sites pooled, no DP);
    write OUT/model.safetensors and its model card; return the checkpoint path.

    `source` names the data in the card ("phantom" for the domain-randomised phantom);
    `command` is the command line that reproduces it."""
    if cfg.data.root is None:
        raise ValueError("pretrain needs public data: data.root (or the phantom)")
    if source != "phantom":
        log.warning("public data %s: %s", cfg.data.root, OVERLAP_WARNING)
    cfg = cfg.evolve(privacy={"enabled": False})
    sites, _ = prepare_sites(cfg.data, progress=progress)
    pooled = pool_sites(sites, "public")
    model, _ = train_site(cfg, pooled, "pretrain (public data)", progress)
    m = cfg.model
    validation = evaluate_translation(model, pooled.test, m.source, m.target).aggregate()
    card = {
        "name": f"{m.kind} {m.source}→{m.target}, public warm start",
        "model": dataclasses.asdict(m),
        "data": _data_card(cfg, sites, source),
        "training": {
            "mode": "centralized on the pooled public sites, no DP",
            "steps": cfg.train.steps,
            "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr,
            "seed": cfg.train.seed,
            "config_digest": cfg.digest(),
            "command": command,
        },
        "privacy": {
            "private_data_used": False,
            "epsilon": 0.0,
            "unit": "none: trained on public data only; every site's ε is spent by its own "
            "fine-tuning, reported at its own privacy unit",
        },
        "public_validation": {
            k: round(validation[k], 4)
            for k in ("psnr_brain", "ssim_brain", "mae_brain", "subjects")
        },
    }
    path = save_checkpoint(Path(out) / CHECKPOINT, model, cfg.data.preprocess, {"model_card": card})
    write_model_card(path, card)
    log.info("public warm start %s: %s", path, card["public_validation"])
    return path
