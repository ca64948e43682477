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
from fedsynth.data.slices import SliceSet, pool_sites
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.evaluation.suite import served_directions
from fedsynth.models import SynthesisModel
from fedsynth.models.card import OVERLAP_WARNING, write_model_card
from fedsynth.models.checkpoint import load_checkpoint, save_checkpoint
from fedsynth.models.warm_start import initial_model
from fedsynth.pretrained import checkpoint_path
from fedsynth.simulations.baselines import train_site
from fedsynth.training.resume import ResumePoint, run_key

log = logging.getLogger(__name__)
CHECKPOINT = "model.safetensors"


def public_phantom(
    out: Path,
    subjects: int,
    cfg: FedsynthConfig,
    progress: bool = True,
    lesion_fraction: float = 0.0,
    heads: bool = False,
) -> Path:
    """A domain-randomised phantom cohort of `subjects` subjects at `out` (made once): a
    `lesion_fraction` share of them with a lesion, whole heads with `heads`."""
    if not (Path(out) / SITES_FILE).is_file():
        phantom = PhantomConfig(
            sites=1,
            subjects_per_site=subjects,
            modalities=cfg.data.modalities,
            seed=cfg.data.seed,
            acquisition="randomised",
            lesions=lesion_fraction > 0,
            lesion_fraction=lesion_fraction if lesion_fraction > 0 else 1.0,
            heads=heads,
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


VALIDATION_METRICS = ("psnr_brain", "ssim_brain", "mae_brain")


def _served(model: SynthesisModel) -> str:
    m = model.config
    if m.kind == "unified":
        return "any-to-any over " + "/".join(m.modalities)
    return f"{m.source}→{m.target}"


def public_validation(model: SynthesisModel, test: dict[str, SliceSet]) -> dict[str, Any]:
    """Scores on the public cohort's held-out subjects: for one direction (CycleGAN's source →
    target) the metrics themselves, for an any-to-any model one entry per direction
    (`SRC->TGT`) and their mean."""
    directions = served_directions(model, list(test))
    if model.config.kind != "unified":
        directions = [(model.config.source, model.config.target)]
    scores = {}
    for s, t in directions:
        summary = evaluate_translation(model, test, s, t).aggregate()
        scores[f"{s}->{t}"] = {k: round(summary[k], 4) for k in VALIDATION_METRICS}
        scores[f"{s}->{t}"]["subjects"] = summary["subjects"]
    if len(scores) == 1:
        return next(iter(scores.values()))
    mean = {
        k: round(sum(v[k] for v in scores.values()) / len(scores), 4) for k in VALIDATION_METRICS
    }
    return {"mean": mean, "directions": scores}


def pretrain(
    cfg: FedsynthConfig,
    out: Path,
    source: str = "dataset",
    progress: bool = True,
    command: str = "",
    resume: Path | None = None,
    until: int | None = None,
    continue_from: Path | str | None = None,
) -> Path:
    """Train `cfg`'s model on the public data at `cfg.data.root` (all sites pooled, no DP);
    write OUT/model.safetensors and its model card; return the checkpoint path.

    `source` names the data in the card ("phantom" for the domain-randomised phantom);
    `command` is the command line that reproduces it. With `resume`, training continues
    from that resume point and saves it as it goes (a long run survives being killed);
    `until` writes the checkpoint at that step of the schedule (the card says which).
    `continue_from` (a checkpoint of this architecture, or a packaged model's name) starts
    from its weights whatever preprocessing it was trained with — how a public model moves
    to a new intensity scale — and the card counts its steps with this run's."""
    if cfg.data.root is None:
        raise ValueError("pretrain needs public data: data.root (or the phantom)")
    if source != "phantom":
        log.warning("public data %s: %s", cfg.data.root, OVERLAP_WARNING)
    cfg = cfg.evolve(privacy={"enabled": False})
    sites, _ = prepare_sites(cfg.data, progress=progress)
    pooled = pool_sites(sites, "public")
    point = ResumePoint(resume, run_key(cfg.to_flat())) if resume is not None else None
    start, lineage = None, {}
    if continue_from is not None:
        path = checkpoint_path(continue_from)
        start = initial_model(cfg.model, cfg.train.seed, path)
        before = load_checkpoint(path)
        trained = before.meta.get("model_card", {}).get("training", {})
        lineage = {
            "checkpoint": str(continue_from),
            "steps": int(trained.get("steps", 0)),
            "scaling": before.preprocess.scaling,
            "command": trained.get("command", "unknown"),
            # a continuation of a continuation keeps the whole chain back to the first run
            **{k: v for k, v in trained.items() if k == "continued_from"},
        }
    model, _ = train_site(
        cfg, pooled, "pretrain (public data)", progress, 25, point, until, start
    )
    steps = cfg.train.steps if until is None else min(until, cfg.train.steps)
    m = cfg.model
    card = {
        "name": f"{m.kind} {_served(model)}, public warm start",
        "model": dataclasses.asdict(m),
        "data": _data_card(cfg, sites, source),
        "training": {
            "mode": "centralized on the pooled public sites, no DP",
            "steps": steps + lineage.get("steps", 0),
            "steps_this_run": steps,
            "planned_steps": cfg.train.steps,
            "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr,
            "seed": cfg.train.seed,
            "config_digest": cfg.digest(),
            "command": command,
            **({"continued_from": lineage} if lineage else {}),
        },
        "privacy": {
            "private_data_used": False,
            "epsilon": 0.0,
            "unit": "none: trained on public data only; every site's ε is spent by its own "
            "fine-tuning, reported at its own privacy unit",
        },
        "public_validation": public_validation(model, pooled.test),
    }
    path = save_checkpoint(Path(out) / CHECKPOINT, model, cfg.data.preprocess, {"model_card": card})
    write_model_card(path, card)
    log.info("public warm start %s: %s", path, card["public_validation"])
    return path
