"""Synthesis quality on the embedded phantom: T1 → T2, in-brain PSNR / SSIM / MAE on held-out
paired test subjects (mean over subjects), every method with the same step budget.

Rows: source-as-is (the T1 slice scored as if it were the T2: the floor); centralized
CycleGAN (all sites pooled); local-only CycleGAN per site and their mean; the unified
any-to-any model (centralized, over the phantom's four contrasts, scored T1 → T2); the
paired-L1 oracle (the same generator trained with L1 on *paired* slices of the training
subjects: an upper bound only a phantom allows); federated CycleGAN without and with DP
(Flower simulation, FedAvg of the generators, discriminators local).

Step budget: every method trains `STEPS` optimisation steps (federated: rounds × local
steps per site). The DP run is the exception it states: DP-SGD needs a large expected batch
for the noise σC/B not to swamp the signal, so it trains `DP_BATCH` slices per step for
`STEPS × BATCH / DP_BATCH` steps: the same number of training samples per site, at a lower
learning rate (`dp_lr`; noisy Adam steps at 2e-3 wander). Measured on one site at ε ≈ 8:
batch 32 / lr 2e-3 13.8 dB, batch 32 / lr 5e-4 13.3 dB, batch 64 / lr 1e-3 14.6 dB. Its σ is
calibrated to reach the stated (ε, δ) at the end of the run, at slice level (the phantom has
six training subjects per site, too few for subject-level DP).

Intensities: per-volume percentile scaling to [-1, 1] (data range 2; fedsynth.evaluation).
Runs single-threaded by default (`--threads`); the federation's three simulated sites share
the machine's cores.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from common import Stopwatch, training_benchmark_args, write_result

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PHANTOM_MODALITIES, PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SliceSet, pool_sites
from fedsynth.data.splits import paired_training
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.privacy.calibrate import calibrate_sigma
from fedsynth.server.report import federated_result
from fedsynth.simulations.baselines import train_site
from fedsynth.simulations.scenarios import SMALL_MODEL, TINY_MODEL
from fedsynth.simulations.simulate import simulate
from fedsynth.training.oracle import train_paired_oracle

# Every CycleGAN method trains with the scenarios' recipe (fedsynth.simulations.scenarios).
RECIPE: dict[str, object] = SMALL_MODEL | {
    "train.lr-schedule": "linear",
    "train.decay-start": 0.5,
    "train.batch-size": 8,
    "federation.strategy": "fedavg",
    "federation.share": "generators",
}
FULL = {
    "sites": 3,
    "subjects": 8,
    "size": 64,
    "steps": 800,
    "rounds": 20,
    "dp_batch": 64,
    "dp_lr": 1e-3,
    "epsilon": 8.0,
    "max_grad_norm": 1.0,
}
QUICK = {
    "sites": 2,
    "subjects": 3,
    "size": 32,
    "steps": 4,
    "rounds": 2,
    "dp_batch": 8,
    "dp_lr": 1e-3,
    "epsilon": 8.0,
    "max_grad_norm": 1.0,
}
DELTA = 1e-5
METRICS = ("psnr_brain", "ssim_brain", "mae_brain")


def rows(prefix: str, summary: dict[str, float]) -> dict[str, float]:
    """{"psnr_brain_<prefix>": …, "ssim_brain_<prefix>": …, "mae_brain_<prefix>": …}."""
    return {f"{m}_{prefix}": summary[m] for m in METRICS}


def scored(model, test: dict[str, SliceSet], cfg: FedsynthConfig, into=None) -> SynthesisMetrics:
    return evaluate_translation(model, test, cfg.model.source, cfg.model.target, into)


def run_federated(cfg: FedsynthConfig, run_dir: Path, sites: int) -> dict[str, float]:
    """One Flower simulation; the server's pooled evaluation of the final global model."""
    cfg = cfg.evolve(federation={"run_dir": Path(run_dir), "min_nodes": sites})
    # All sites train at once, one thread each, sharing the machine's cores.
    run = simulate(cfg, baselines=False, cpus_per_site=1.0 / sites)
    return federated_result(run.metrics())


def main() -> None:
    args = training_benchmark_args(__doc__)
    size = QUICK if args.quick else FULL
    steps, rounds = size["steps"], size["rounds"]
    figures: dict[str, float] = {}
    timed = Stopwatch()
    seconds = timed.seconds

    with tempfile.TemporaryDirectory(prefix="fedsynth-quality-") as tmp:
        root = Path(tmp)
        modalities = ("T1", "T2") if args.quick else PHANTOM_MODALITIES
        with timed("phantom"):
            generate_phantom(
                PhantomConfig(
                    sites=size["sites"],
                    subjects_per_site=size["subjects"],
                    modalities=modalities,
                    seed=0,
                ),
                root / "phantom",
                progress=False,
            )
        flat = (
            RECIPE
            | (TINY_MODEL if args.quick else {})
            | {
                "data.root": str(root / "phantom"),
                "data.cache-dir": str(root / "cache"),
                "data.modalities": "T1,T2",
                "data.preprocess.image-size": size["size"],
                "train.steps": steps,
                "train.seed": 0,
                "privacy.enabled": False,
                "federation.num-rounds": rounds,
                "federation.local-steps": steps // rounds,
            }
        )
        cfg = FedsynthConfig.from_flat(flat)
        sites, cache = prepare_sites(cfg.data, progress=False)
        pooled = pool_sites(sites)
        figures["steps"] = steps
        figures["batch_size"] = cfg.train.batch_size
        figures["image_size"] = size["size"]
        figures["sites"] = len(sites)
        figures["test_subjects"] = len(pooled.test["T1"].unique_subjects())
        figures["train_slices_per_site_mean"] = sum(s.num_train_slices() for s in sites) / len(
            sites
        )

        floor = SynthesisMetrics()
        for site in sites:
            scored(None, site.test, cfg, floor)
        figures |= rows("source_as_is", floor.aggregate())

        with timed("oracle"):
            pairs = [paired_training(cache, s, cfg.data.modalities) for s in sites]
            pairs_pooled = {m: SliceSet.concat([p[m] for p in pairs]) for m in cfg.data.modalities}
            oracle, _ = train_paired_oracle(cfg.model, pairs_pooled, cfg.train)
            figures |= rows("oracle", scored(oracle, pooled.test, cfg).aggregate())
        figures["oracle_paired_train_slices"] = len(pairs_pooled["T1"])

        with timed("centralized"):
            model, _ = train_site(cfg, pooled, "centralized", progress=False)
            figures |= rows("centralized", scored(model, pooled.test, cfg).aggregate())

        with timed("local"):
            local = SynthesisMetrics()
            for site in sites:
                model, _ = train_site(cfg, site, f"local {site.site}", progress=False)
                figures |= rows(f"local_{site.site}", scored(model, site.test, cfg).aggregate())
                scored(model, site.test, cfg, local)
            figures |= rows("local_mean", local.aggregate())

        with timed("unified"):
            ucfg = cfg.evolve(model={"kind": "unified"}, data={"modalities": tuple(modalities)})
            usites, _ = prepare_sites(ucfg.data, progress=False)
            upooled = pool_sites(usites)
            model, _ = train_site(ucfg, upooled, "unified", progress=False)
            figures |= rows("unified", scored(model, upooled.test, ucfg).aggregate())
            figures["unified_modalities"] = len(modalities)

        with timed("federated"):
            result = run_federated(cfg, root / "fed", len(sites))
            figures |= rows("federated", result)

        with timed("federated_dp"):
            dp_steps = max(1, steps * cfg.train.batch_size // size["dp_batch"])
            dp_rounds = min(rounds, dp_steps)
            dp_steps -= dp_steps % dp_rounds
            units = min(s.num_train_slices() for s in sites)
            q = min(1.0, size["dp_batch"] / units)
            sigma = calibrate_sigma(size["epsilon"], DELTA, q, dp_steps)
            dcfg = cfg.evolve(
                privacy={
                    "enabled": True,
                    "unit": "slice",
                    "noise_multiplier": sigma,
                    "max_grad_norm": size["max_grad_norm"],
                    "delta": DELTA,
                    "sample_rate": q,
                },
                train={"batch_size": size["dp_batch"], "lr": size["dp_lr"]},
                federation={"num_rounds": dp_rounds, "local_steps": dp_steps // dp_rounds},
            )
            result = run_federated(dcfg, root / "fed-dp", len(sites))
            figures |= rows("federated_dp", result)
            figures |= {
                "epsilon_federated_dp": result["epsilon"],
                "epsilon_target_federated_dp": size["epsilon"],
                "log10_delta_federated_dp": math.log10(DELTA),
                "sigma_federated_dp": sigma,
                "max_grad_norm_federated_dp": size["max_grad_norm"],
                "sample_rate_federated_dp": q,
                "expected_batch_federated_dp": size["dp_batch"],
                "lr_federated_dp": size["dp_lr"],
                "steps_federated_dp": dp_steps,
                "rounds_federated_dp": dp_rounds,
                "privacy_unit_is_subject_federated_dp": 0.0,
            }

    figures["gap_centralized_vs_oracle_db"] = (
        figures["psnr_brain_oracle"] - figures["psnr_brain_centralized"]
    )
    figures["gap_federated_vs_centralized_db"] = (
        figures["psnr_brain_centralized"] - figures["psnr_brain_federated"]
    )
    figures["gain_federated_over_local_mean_db"] = (
        figures["psnr_brain_federated"] - figures["psnr_brain_local_mean"]
    )
    figures["gap_federated_dp_vs_federated_db"] = (
        figures["psnr_brain_federated"] - figures["psnr_brain_federated_dp"]
    )
    figures["target_centralized_within_2db_of_oracle"] = float(
        figures["gap_centralized_vs_oracle_db"] <= 2.0
    )
    figures["target_federated_within_1db_of_centralized"] = float(
        figures["gap_federated_vs_centralized_db"] <= 1.0
    )
    figures["target_federated_1db_over_local_mean"] = float(
        figures["gain_federated_over_local_mean_db"] >= 1.0
    )
    figures |= {f"seconds_{k}": v for k, v in seconds.items()}
    figures["seconds_total"] = sum(seconds.values())
    write_result("quality", figures, args.out)


if __name__ == "__main__":
    main()
