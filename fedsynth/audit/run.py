"""`fedsynth privacy audit`: membership inference against one site of a finished run, from
the site's own files only — its data (the partition it trained on, or its own `--data-dir`),
its private state directory (the local discriminators) and the run directory (the config and
the final global checkpoint: the shared generators, i.e. what left the site)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from fedsynth.audit.attacks import MembershipSets, attack_scores, reference_models
from fedsynth.audit.report import write_audit
from fedsynth.audit.roc import AttackResult, evaluate_attack
from fedsynth.client.site import site_data
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint
from fedsynth.server.run_dir import RunDirectory
from fedsynth.training.engine import training_sets

log = logging.getLogger(__name__)


def audited_site(cfg: FedsynthConfig, site: str | None, data_dir: Path | None) -> SiteData:
    """The site's data exactly as its ClientApp saw it (same loader, same split)."""
    if data_dir is not None:
        return site_data(cfg, None, Path(data_dir))
    sites, _ = prepare_sites(cfg.data, progress=False)
    names = [s.site for s in sites]
    if site is None:
        return sites[0]
    if site not in names:
        raise ValueError(f"site {site!r} is not in {cfg.data.root} (sites: {', '.join(names)})")
    return sites[names.index(site)]


def audit_run(
    run_dir: Path,
    site: str | None = None,
    out: Path | None = None,
    data_dir: Path | None = None,
    state_dir: Path | None = None,
    reference: FedsynthConfig | None = None,
    reference_dir: Path | None = None,
    bootstrap: int = 1000,
    slices_per_subject: int | None = None,
) -> dict[str, Any]:
    """Run every attack on one site of `run_dir`; write audit.json/.md and roc.png to `out`
    (default RUN_DIR/audit/SITE) and return the JSON document.

    reference: the recipe of the calibration references (default: the run's config without
    DP); reference_dir: where they are cached (default OUT/references); slices_per_subject:
    score at most that many slices of each subject (`MembershipSets.thinned`; None: all).
    """
    run = RunDirectory(run_dir)
    cfg = run.config()
    last = run.last_round()
    if last == 0:
        raise CheckpointError(
            f"{run.path}: no complete round checkpoint in {run.checkpoints}; nothing to audit"
        )
    data = audited_site(cfg, site, data_dir)
    root = state_dir or cfg.federation.state_dir
    local_path = SiteStateDir.of_site(data.site, root, run.path).model_file
    if not local_path.is_file():
        raise CheckpointError(
            f"{local_path}: site {data.site!r} has no local model in its state directory "
            "(pass --state-dir where the site keeps its state)"
        )
    shared = load_checkpoint(run.checkpoint_path(last)).model
    local = load_checkpoint(local_path).model
    out = Path(out) if out is not None else run.path / "audit" / data.site
    # the contrasts the site trained on (a unified model's site may hold a subset)
    sets = MembershipSets.of_site(data, tuple(training_sets(shared, data)))
    # By default the references train as long as a site of the run did.
    ref_cfg = reference or dataclasses.replace(cfg, train=cfg.federated_train)
    refs = reference_models(sets, ref_cfg, data.site, reference_dir or out / "references")
    if slices_per_subject is not None:
        sets = sets.thinned(slices_per_subject)
    results: list[AttackResult] = []
    for player, model in (("generators", shared), ("discriminators", local)):
        for name, (members, nonmembers) in attack_scores(model, player, sets, refs).items():
            results.append(evaluate_attack(name, members, nonmembers, bootstrap))
    p = cfg.privacy
    context = {
        "run": str(run.path),
        "site": data.site,
        "round": last,
        "privacy": (
            f"DP-SGD sigma={p.noise_multiplier}, C={p.max_grad_norm}, unit={p.unit}, "
            f"delta={p.delta}"
            if p.enabled
            else "off"
        ),
        "generator_target": str(run.checkpoint_path(last)),
        "discriminator_target": str(local_path),
        "reference_steps": ref_cfg.train.steps,
        "slices_per_subject": slices_per_subject or "all",
        "member_subjects": sorted({u for s in sets.members.values() for u in s.unique_subjects()}),
        "nonmember_subjects": sorted(
            {u for s in sets.nonmembers.values() for u in s.unique_subjects()}
        ),
    }
    return write_audit(out, results, context, f"Membership-inference audit — {data.site}")
