"""Private fine-tuning of the foundation model (issues 12, 21): what does DP training add to a
model trained long on public data, at hospitals the public cohort does not cover?

Setting: the packaged any-to-any foundation (`fedsynth/pretrained/phantom-unified`, trained on
the domain-randomised public phantom, seed 1000, with lesions) and three private hospitals
that differ from it in a sequence variant: `scanners="long-te"` (T2 echo times 2.0-2.2x the
reference, outside the public ranges; lesions at every private subject). The hospitals scan
T1 and T2 (the demo's setting, scenario "phantom-finetune"): fine-tuning is federated over
them, T1 → T2 at 128 px. Each private site has 60 phantom subjects (--quick: 6) (a quarter
held out, paired); DP is patient-level (`privacy.unit=subject`, each sampled patient adds one
clipped gradient) at δ = 1e-5, σ calibrated so that every site ends within its ε. Scores:
in-brain PSNR / SSIM / MAE of T1 → T2 by the last round's global model on every site's
held-out subjects, pooled per subject (the demo's scoring, `fedsynth.cli.demo.final_result`).
Rows: source-as-is; public-only (the foundation zero-shot); federated non-DP fine-tune and
federated DP fine-tune at ε ≤ 8, 4, 1 (`PRIVATE_FINETUNE`: only norm affines + biases trained
and shared); federated DP from scratch at ε ≤ 8 (the foundation's architecture, every weight).
Each federated run is audited by membership inference at its first site (`fedsynth.audit`,
8 evenly spaced slices per subject scored; the references train on every slice)
and its ε re-verified from the sites' accountant histories (`check_run`); a row in which a site
failed to train in some round (a worker killed) is flagged (`failed_training_ROW`,
`all_rows_complete`): it is not the setting it names.

--quick uses the same foundation on a few 128-px subjects, one round of two steps. The
benchmark is only valid if non-DP fine-tuning beats public-only by >= 2 dB (`valid_setting`).

`--select` (how PRIVATE_FINETUNE's defaults were chosen, `results/private_finetune_selection
.json`) is kept on the T1 → T2 CycleGAN warm start the recipe was chosen with.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import parser, write_result

from fedsynth.cli import quiet_flower
from fedsynth.cli.demo import final_result
from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.pretrained import PHANTOM_WARM_START
from fedsynth.server.report import failed_training
from fedsynth.server.run_dir import RunDirectory
from fedsynth.simulations.baselines import run_baselines
from fedsynth.simulations.pretrain import pretrain, public_phantom
from fedsynth.simulations.scenarios import PRIVATE_FINETUNE, TINY_MODEL, scenario_config
from fedsynth.simulations.sweep import ATTACKS, Setting, run_sweep

FULL = {
    "subjects": 60,
    "rounds": 3,
    "local_steps": 10,
    "budgets": (8.0, 4.0, 1.0),  # the targets' ε first
    "bootstrap": 1000,
    # Scoring every slice of 60 subjects at 128 px (member and reference losses of both
    # players) took over 25 min a run here; 8 evenly spaced slices a subject keep every subject.
    "audit_slices": 8,
}
QUICK = {
    "subjects": 6,
    "rounds": 1,
    "local_steps": 2,
    "budgets": (8.0,),
    "bootstrap": 50,
    "audit_slices": 4,
}
QUICK_MODEL = TINY_MODEL | {"train.batch-size": 4}
DELTA = 1e-5
METRICS = ("psnr_brain", "ssim_brain", "mae_brain")


def private_phantom(root: Path, subjects: int) -> Path:
    """Three private hospitals outside the public cohort's protocol ranges, with lesions."""
    if not (root / "dataset.json").is_file():
        cfg = PhantomConfig(
            sites=3,
            subjects_per_site=subjects,
            modalities=("T1", "T2"),
            seed=0,
            scanners="long-te",
            lesions=True,
        )
        generate_phantom(cfg, root, progress=False)
    return root


def warm_start(work: Path, quick: bool, base: FedsynthConfig) -> Path:
    """The packaged warm start, or (quick) a tiny one pretrained here."""
    if not quick:
        return PHANTOM_WARM_START
    cfg = base.evolve(train={"steps": 4}, data={"seed": 100, "cache_dir": work / "pc"})
    root = public_phantom(work / "public", 3, cfg, progress=False)
    return pretrain(cfg.evolve(data={"root": root}), work / "pretrain", "phantom", False)


def warm_scaling(quick: bool) -> dict[str, object]:
    """The packaged CycleGAN warm start's intensity scaling (it predates the median scaling:
    percentile), which every run that fine-tunes it must use; --quick's own follows the run."""
    if quick:
        return {}
    return {"data.preprocess.scaling": load_checkpoint(PHANTOM_WARM_START).preprocess.scaling}


CANDIDATES: dict[str, dict[str, dict]] = {
    "recipe": {},
    "all_weights": {"model": {"trainable": "all"}},
    "flat_clipping": {"privacy": {"clipping": "flat"}},
    "no_ema": {"train": {"ema_decay": 0.0}},
    "augment_x2": {"train": {"augmentations": 2}},
    "lr_5e-4": {"train": {"lr": 5e-4}},
}
"""One-at-a-time departures from PRIVATE_FINETUNE, compared by --select on public data."""


def select_recipe(work: Path, quick: bool) -> dict[str, float]:
    """Centralized DP fine-tunes (ε ≤ 8, patient-level) of the warm start on a PUBLIC validation
    cohort — a phantom hospital with the same kind of shift as the private ones (long TE,
    lesions) but its own seed and subjects — scored on that cohort's held-out subjects. The
    private sites and their test splits are never touched."""
    from fedsynth.privacy.calibrate import calibrate_sigma
    from fedsynth.simulations.sweep import max_sample_rate

    root = work / "public-validation"
    if not (root / "dataset.json").is_file():
        phantom = PhantomConfig(
            sites=1,
            subjects_per_site=4 if quick else 24,
            modalities=("T1", "T2"),
            seed=200,
            scanners="long-te",
            lesions=True,
        )
        generate_phantom(phantom, root, progress=False)
    steps = 2 if quick else 40
    base = scenario_config(
        "phantom-3site",
        (QUICK_MODEL if quick else {})
        | PRIVATE_FINETUNE
        | warm_scaling(quick)
        | {
            "data.root": str(root),
            "data.cache-dir": str(work / "cache"),
            "data.preprocess.image-size": 32 if quick else 64,
            "train.batch-size": 4 if quick else 8,
            "train.steps": steps,
            "privacy.delta": DELTA,
        },
    )
    checkpoint = warm_start(work, quick, base)
    base = base.evolve(train={"init_checkpoint": checkpoint})
    sites, _ = prepare_sites(base.data, progress=False)
    figures: dict[str, float] = {}
    for name, change in CANDIDATES.items():
        cfg = base.evolve(**change)
        q = max_sample_rate(cfg, sites)
        sigma = calibrate_sigma(8.0, DELTA, q, steps, cfg.privacy.accountant)
        cfg = cfg.evolve(privacy={"noise_multiplier": sigma})
        result = run_baselines(cfg, sites, work / "select" / name, ("centralized",), False)
        figures |= {f"{k}_{name}": result["centralized"][k] for k in METRICS}
    figures["psnr_brain_public_only"] = run_baselines(
        base, sites, work / "select" / "public", ("public-only",), False
    )["public-only"]["psnr_brain"]
    return figures


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=None, help="keep data and runs here (reused)")
    p.add_argument(
        "--select",
        action="store_true",
        help="compare recipe variants on public data (results/private_finetune_selection.json)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_flower()
    warnings.filterwarnings("ignore", category=UserWarning)
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    keep = Path(args.work) if args.work else None
    tmp = None if keep else tempfile.mkdtemp(prefix="fedsynth-ft-")
    work = keep or Path(tmp)
    if args.select:
        try:
            figures = select_recipe(work, args.quick)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        write_result("private_finetune_selection", figures, args.out)
        return
    try:
        flat = {
            "data.root": str(private_phantom(work / "private", size["subjects"])),
            "data.cache-dir": str(work / "cache"),
            "privacy.delta": DELTA,
            "federation.num-rounds": size["rounds"],
            "federation.local-steps": size["local_steps"],
            "federation.min-nodes": 3,
            # the sites' own evaluation each round is enough for the sweep's table; the rows
            # are scored at the end, as public-only is
            "federation.server-eval": False,
        }
        finetune = scenario_config("phantom-finetune", flat)
        scratch = finetune.evolve(train={"init_checkpoint": None}, model={"trainable": "all"})
        sites, _ = prepare_sites(finetune.data, progress=False)
        before = run_baselines(
            finetune, sites, work / "baselines", ("source-as-is", "public-only"), progress=False
        )
        rows = {"source": before["source-as-is"], "public_only": before["public-only"]}
        settings = [Setting(noise=0.0)] + [Setting(epsilon=e) for e in size["budgets"]]
        share = 1.0 / 3
        sweeps = {
            "sweep-ft": run_sweep(
                finetune, settings, work / "sweep-ft", bootstrap=size["bootstrap"],
                cpus_per_site=share, audit_slices_per_subject=size["audit_slices"],
            ),
            "sweep-scratch": run_sweep(
                scratch, [Setting(epsilon=8.0)], work / "sweep-scratch",
                bootstrap=size["bootstrap"], cpus_per_site=share,
                audit_slices_per_subject=size["audit_slices"],
            ),
        }  # fmt: skip
        # every row scored as public-only is: T1 -> T2 on every site's held-out subjects
        # a site whose training failed (a worker killed) makes the row another setting
        swept = [
            row
            | final_result(finetune, sites, RunDirectory(row["run_dir"]))
            | {"failed_training": len(failed_training(RunDirectory(row["run_dir"]).metrics()))}
            for found in sweeps.values()
            for row in found
        ]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    tags = ["fed_ft_nondp"] + [f"fed_ft_eps{e:g}" for e in size["budgets"]] + ["fed_scratch_eps8"]
    rows |= dict(zip(tags, swept, strict=True))
    figures: dict[str, float] = {
        "subjects_per_private_site": size["subjects"],
        "image_size": finetune.data.preprocess.image_size,
        "log10_delta": -5.0,
        "privacy_unit_subject": 1.0,
        "steps_per_site": size["rounds"] * size["local_steps"],
    }
    for tag, row in rows.items():
        figures |= {f"{k}_{tag}": row[k] for k in METRICS}
        if "failed_training" in row:
            figures[f"failed_training_{tag}"] = row["failed_training"]
        if "epsilon_max" in row and tag != "fed_ft_nondp":
            figures[f"epsilon_{tag}"] = row["epsilon_max"]
            figures[f"sigma_{tag}"] = row["sigma"]
            figures[f"accounting_ok_{tag}"] = float(row["accounting_ok"])
    top = f"fed_ft_eps{max(size['budgets']):g}"
    dp = rows[top]
    figures["auc_generator_eps8"] = max(dp[f"auc_{a}"] for a in ATTACKS if a.startswith("gen"))
    figures["auc_discriminator_eps8"] = max(dp[f"auc_{a}"] for a in ATTACKS if a.startswith("disc"))
    public, nondp = figures["psnr_brain_public_only"], figures["psnr_brain_fed_ft_nondp"]
    eps8 = figures[f"psnr_brain_{top}"]
    figures["finetune_gain_nondp_db"] = nondp - public
    figures["valid_setting"] = float(nondp - public >= 2.0)
    figures["gap_psnr_nondp_minus_eps8_db"] = nondp - eps8
    figures["gap_closed_eps8"] = (eps8 - public) / (nondp - public) if nondp != public else 0.0
    figures["target_eps8_within_2db"] = float(nondp - eps8 <= 2.0)
    figures["target_eps8_closes_half_gap"] = float(figures["gap_closed_eps8"] >= 0.5)
    figures["target_eps8_generator_auc_le_0.55"] = float(figures["auc_generator_eps8"] <= 0.55)
    figures["target_eps8_accounting_verified"] = figures[f"accounting_ok_{top}"]
    low = f"fed_ft_eps{min(size['budgets']):g}"
    figures["target_eps1_beats_public_only"] = float(figures[f"psnr_brain_{low}"] > public)
    figures["all_rows_complete"] = float(
        not any(figures[f"failed_training_{tag}"] for tag in tags)
    )
    figures["seconds_total"] = time.perf_counter() - start
    write_result("private_finetune", figures, args.out)


if __name__ == "__main__":
    main()
