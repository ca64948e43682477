"""Membership-inference attacks on a synthesis model, as a hospital's honest auditor runs them.

Members are the site's training slices; non-members its held-out test slices (subjects never
trained on, drawn from the same subjects pool by the split). Each attack gives every slice a
score, higher meaning "member":

- threshold attacks (Yeom et al. 2018): the model's own per-example loss. Against the shared
  generators (what leaves the site) the cycle-reconstruction error (CycleGAN `cycle`, unified
  `rec`); against the site's local discriminator its realness loss on the real slice
  (`real`: (D(x) - 1)^2). A model that memorised its training slices reconstructs them better
  and calls them "real" more confidently.
- calibrated attacks (Watson et al. 2022, difficulty calibration): the same loss minus the
  loss of a reference model trained WITHOUT that slice, so slices that are simply easy (thin
  edge slices, smooth anatomy) stop looking like members. The references are cross-fitted:
  the site's subjects (members and non-members alike) are split in two folds by subject, one
  reference is trained per fold without DP, and each slice is scored against the reference of
  the other fold. Both folds mix members and non-members, so calibration itself is unbiased.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData, SliceSet
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fedsynth.training import train_local

log = logging.getLogger(__name__)

FOLDS = 2


@dataclass(frozen=True)
class MembershipSets:
    """The slices an audit scores (modality -> slices), scored in modality order."""

    members: dict[str, SliceSet]
    nonmembers: dict[str, SliceSet]

    @classmethod
    def of_site(cls, data: SiteData, modalities: tuple[str, ...]) -> MembershipSets:
        """Training slices vs held-out test slices of the modalities the model trains on."""
        missing = [m for m in modalities if m not in data.train or m not in data.test]
        if missing:
            raise ValueError(
                f"site {data.site!r}: no training or held-out slices of {missing} to audit"
            )
        members = {m: data.train[m] for m in modalities}
        nonmembers = {m: data.test[m] for m in modalities}
        shared = set().union(*(s.unique_subjects() for s in members.values())) & set().union(
            *(s.unique_subjects() for s in nonmembers.values())
        )
        if shared:
            raise ValueError(
                f"site {data.site!r}: subjects {sorted(shared)[:3]} are both trained on and "
                "held out; the membership labels would be wrong"
            )
        return cls(members, nonmembers)

    def thinned(self, per_subject: int) -> MembershipSets:
        """The same subjects with at most `per_subject` slices each, evenly spaced along the
        subject's axial positions: a cheaper audit of the same membership labels and folds
        (every subject keeps a slice). The references still train on every slice."""
        if per_subject < 1:
            raise ValueError(f"slices per subject {per_subject}: expected >= 1")

        def thin(s: SliceSet) -> SliceSet:
            rows = []
            for subject in s.unique_subjects():
                own = np.flatnonzero(s.subjects == subject)
                own = own[np.argsort(s.positions[own], kind="stable")]
                picks = np.linspace(0, len(own) - 1, min(per_subject, len(own)))
                rows.append(own[np.unique(picks.round().astype(np.int64))])
            return s.take(np.sort(np.concatenate(rows)))

        return MembershipSets(
            {m: thin(s) for m, s in self.members.items()},
            {m: thin(s) for m, s in self.nonmembers.items()},
        )

    def fold_of(self, which: str) -> dict[str, np.ndarray]:
        """Cross-fitting fold (0/1) of every slice of `which` ("members" or "nonmembers"), by
        subject: subjects sorted and dealt alternately, per modality for members (so each fold
        trains every modality), across modalities for non-members (a held-out subject's
        modalities share its anatomy, so they share a fold)."""
        sets: dict[str, SliceSet] = getattr(self, which)
        if which == "members":
            return {m: _deal(s.unique_subjects(), s.subjects) for m, s in sets.items()}
        subjects = sorted(set().union(*(s.unique_subjects() for s in sets.values())))
        return {m: _deal(subjects, s.subjects) for m, s in sets.items()}

    def folds(self, which: str) -> np.ndarray:
        """`fold_of` aligned with the concatenated slices (modality order)."""
        return np.concatenate(list(self.fold_of(which).values()))

    def fold_data(self, fold: int, site: str) -> SiteData:
        """Training data of the reference model of `fold`: that fold's members and
        non-members of every modality."""
        folds = {w: self.fold_of(w) for w in ("members", "nonmembers")}
        train = {
            m: SliceSet.concat(
                [
                    getattr(self, w)[m].take(np.flatnonzero(folds[w][m] == fold))
                    for w in ("members", "nonmembers")
                ]
            )
            for m in self.members
        }
        return SiteData(f"{site}-reference-{fold}", train, {})


def _deal(subjects: list[str], of: np.ndarray) -> np.ndarray:
    """Fold of each entry of `of`: its subject's index in `subjects`, mod FOLDS."""
    rank = {u: i % FOLDS for i, u in enumerate(subjects)}
    return np.array([rank[u] for u in np.asarray(of).astype(str)], dtype=np.int64)


def example_losses(
    model: SynthesisModel,
    sets: dict[str, SliceSet],
    player: str,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """The attacked per-example loss term of `player` for every slice, modality by modality.

    Random choices inside the loss (the unified model's target labels) come from a generator
    seeded with `seed`, so the target and reference models see the same draws.
    """
    term = model.membership_terms[player]
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for modality, s in sets.items():
            for start in range(0, len(s), batch_size):
                x = torch.from_numpy(np.asarray(s.images[start : start + batch_size], np.float32))
                batch = model.make_batch({modality: x[:, None]}, generator)
                for stream, tensors in batch.items():
                    out.append(model(stream, player, tensors)[term].double().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def reference_models(
    sets: MembershipSets, cfg: FedsynthConfig, site: str, cache: Path
) -> list[SynthesisModel]:
    """One non-private reference model per fold, trained on that fold with the engine and
    `cfg`'s recipe; cached as checkpoints under `cache`, keyed by config digest and site."""
    cfg = cfg.evolve(privacy={"enabled": False})
    models = []
    for fold in range(FOLDS):
        path = Path(cache) / f"{site}-{cfg.digest()}-fold{fold}.safetensors"
        try:
            models.append(load_checkpoint(path).model)
            log.info("reference model %d/%d: reusing %s", fold + 1, FOLDS, path)
            continue
        except CheckpointError:
            pass
        data = sets.fold_data(fold, site)
        model = cfg.initial_model(cfg.train.seed + fold + 1)
        empty = [m for m in sets.members if len(data.train.get(m, ())) == 0]
        if empty:
            raise ValueError(
                f"site {site!r}: the calibrated attacks need two reference models each trained "
                f"on half of the site's subjects; fold {fold} has no {', '.join(empty)} slices "
                "(at least two training subjects per modality are needed)"
            )
        log.info("reference model %d/%d: training %d steps", fold + 1, FOLDS, cfg.train.steps)
        train_local(model, data, cfg.train, cfg.privacy)
        save_checkpoint(path, model, cfg.data.preprocess, {"site": site, "fold": fold})
        models.append(model)
    return models


def attack_scores(
    target: SynthesisModel,
    player: str,
    sets: MembershipSets,
    references: list[SynthesisModel] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """attack name -> (member scores, non-member scores), higher = more likely a member."""
    name = player.removesuffix("s")
    out = {}
    raw = {w: example_losses(target, getattr(sets, w), player) for w in ("members", "nonmembers")}
    out[f"{name}-threshold"] = (-raw["members"], -raw["nonmembers"])
    if references:
        calibrated = {}
        for which in ("members", "nonmembers"):
            folds = sets.folds(which)
            ref = np.stack([example_losses(r, getattr(sets, which), player) for r in references])
            # each slice against the reference that did not train on it
            other = ref[(folds + 1) % FOLDS, np.arange(len(folds))]
            calibrated[which] = other - raw[which]
        out[f"{name}-calibrated"] = (calibrated["members"], calibrated["nonmembers"])
    return out
