"""The price and the effect of privacy on the phantom benchmark: a `fedsynth privacy sweep`
of the federated CycleGAN T1 → T2 (3 phantom hospitals, 64 px, FedAvg of the generators,
discriminators local) over no DP and two (ε, δ=1e-5) targets, each run audited by
membership inference at its first site.

Per setting: σ, ε per site (max), in-brain PSNR/SSIM/MAE of the final global generators on
the held-out paired subjects, and the AUC / TPR at 1% FPR of the four attacks (generator and
discriminator; loss threshold and difficulty-calibrated), plus whether the independent Opacus
recomputation of ε agrees with what the sites reported.

Budget: the non-DP run trains ROUNDS × LOCAL_STEPS steps at batch 8; DP runs see the same
number of training samples per site at an expected Poisson batch of DP_BATCH slices (DP-SGD
noise σC/B swamps the signal at batch 8), i.e. fewer, larger steps; σ is calibrated to the ε
target at the end of the run (slice-level unit: 6 training subjects per site are too few for
subject-level DP). Targets: at ε ≤ 8, PSNR within 2 dB of non-DP and generator AUC ≤ 0.55.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import RESULTS, parser, write_result

from fedsynth.cli import quiet_flower
from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.simulations.scenarios import TINY_MODEL, scenario_config
from fedsynth.simulations.sweep import ATTACKS, Setting, run_sweep

FULL = {
    "sites": 3,
    "subjects": 8,
    "size": 64,
    "rounds": 10,
    "local_steps": 40,
    "batch": 8,
    "dp_batch": 32,
    "budgets": (8.0, 2.0),
    "bootstrap": 1000,
}
QUICK = {
    "sites": 2,
    "subjects": 5,
    "size": 32,
    "rounds": 2,
    "local_steps": 2,
    "batch": 4,
    "dp_batch": 8,
    "budgets": (8.0,),
    "bootstrap": 100,
}
DELTA = 1e-5


def main() -> None:
    p = parser(__doc__)
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_flower()
    warnings.filterwarnings("ignore", category=UserWarning)
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsynth-privacy-") as tmp:
        root = Path(tmp)
        generate_phantom(
            PhantomConfig(
                sites=size["sites"],
                subjects_per_site=size["subjects"],
                modalities=("T1", "T2"),
                seed=0,
            ),
            root / "phantom",
            progress=False,
        )
        flat = (TINY_MODEL if args.quick else {}) | {
            "data.root": str(root / "phantom"),
            "data.cache-dir": str(root / "cache"),
            "data.preprocess.image-size": size["size"],
            "train.batch-size": size["batch"],
            "train.lr-schedule": "linear",
            "privacy.delta": DELTA,
            "privacy.unit": "slice",
            "federation.num-rounds": size["rounds"],
            "federation.local-steps": size["local_steps"],
            "federation.min-nodes": size["sites"],
        }
        base: FedsynthConfig = scenario_config("phantom-3site", flat)
        ratio = size["dp_batch"] // size["batch"]
        private = base.evolve(
            train={"batch_size": size["dp_batch"]},
            federation={"local_steps": max(1, size["local_steps"] // ratio)},
        )
        settings = [Setting(noise=0.0)] + [Setting(epsilon=e) for e in size["budgets"]]
        rows = run_sweep(
            base,
            settings,
            root / "sweep",
            private,
            bootstrap=size["bootstrap"],
            cpus_per_site=1.0 / size["sites"],
        )
        if not args.quick:
            for name in ("sweep.md", "utility_vs_epsilon.png"):
                shutil.copy(root / "sweep" / name, RESULTS / f"privacy_{name}")

    figures: dict[str, float] = {"sites": size["sites"], "image_size": size["size"]}
    tags = ["nondp"] + [f"eps{e:g}" for e in size["budgets"]]
    for tag, row in zip(tags, rows, strict=True):
        figures |= {
            f"sigma_{tag}": row["sigma"],
            f"epsilon_max_{tag}": row["epsilon_max"] if tag != "nondp" else -1.0,
            f"batch_size_{tag}": row["batch_size"],
            f"steps_{tag}": row["steps"],
            f"psnr_brain_{tag}": row["psnr_brain"],
            f"ssim_brain_{tag}": row["ssim_brain"],
            f"mae_brain_{tag}": row["mae_brain"],
        }
        for attack in ATTACKS:
            figures[f"auc_{attack}_{tag}"] = row[f"auc_{attack}"]
            figures[f"tpr_at_0.01_fpr_{attack}_{tag}"] = row[f"tpr_at_0.01_fpr_{attack}"]
        if "accounting_ok" in row:
            figures[f"accounting_ok_{tag}"] = float(row["accounting_ok"])
    dp8 = tags[1]
    figures["log10_delta"] = -5.0
    figures["max_grad_norm_dp"] = rows[1]["max_grad_norm"]
    figures["gap_psnr_nondp_minus_eps8_db"] = (
        figures["psnr_brain_nondp"] - figures[f"psnr_brain_{dp8}"]
    )
    generator_auc = max(figures[f"auc_{a}_{dp8}"] for a in ATTACKS if a.startswith("generator"))
    figures["target_eps8_psnr_within_2db"] = float(figures["gap_psnr_nondp_minus_eps8_db"] <= 2)
    figures["target_eps8_generator_auc_le_0.55"] = float(generator_auc <= 0.55)
    figures["epsilon_le_8_at_eps8"] = float(figures[f"epsilon_max_{dp8}"] <= 8.0)
    figures["seconds_total"] = time.perf_counter() - start
    write_result("privacy", figures, args.out)


if __name__ == "__main__":
    main()
