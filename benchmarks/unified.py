"""Any-to-any synthesis on the embedded phantom: every direction among T1/T2/PD/FLAIR, in-brain
PSNR/SSIM/MAE on held-out paired subjects (3 sites, 64 px).

Rows per direction SRC_TGT: copy-the-source (the floor); the best global linear intensity map
a·x + b fitted (least squares, inside the brain) on the training subjects' paired slices — a
phantom allows pairing them, so this is a generous baseline; pairwise CycleGAN, centralized
(one per pair of contrasts, serving both directions); the unified model, centralized; the
unified model federated over `phantom-hetero` (hospA T1/T2/FLAIR, hospB T1/PD, hospC T2/FLAIR:
PD <-> T2 and PD <-> FLAIR exist at no single site), at the round the server chose on the
sites' validation subjects (mean PSNR over the directions they hold; the last round's mean is
kept as `psnr_brain_unified_fed_hetero_last_mean`); the unified model trained by each site
alone (local-only). Every model trains the same number of steps; unified rows are mean ± sd
over `SEEDS`. All rows are scored on the same test subjects, which have all four contrasts and
are disjoint from the validation subjects.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import training_benchmark_args, write_result

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PHANTOM_MODALITIES, PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData, SliceSet, pool_sites
from fedsynth.data.splits import paired_training
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.server.report import chosen_round
from fedsynth.simulations.baselines import train_site
from fedsynth.simulations.scenarios import TINY_MODEL, scenario_flat
from fedsynth.simulations.simulate import simulate

FULL = {"subjects": 10, "size": 64, "steps": 600, "rounds": 15, "seeds": (0, 1)}
QUICK = {"subjects": 7, "size": 32, "steps": 2, "rounds": 1, "seeds": (0,)}
METRICS = ("psnr_brain", "ssim_brain", "mae_brain")


class LinearMap(torch.nn.Module):
    """target ≈ a·source + b per direction, fitted on paired training slices in the brain."""

    def __init__(self, coefficients: dict[tuple[str, str], tuple[float, float]]) -> None:
        super().__init__()
        self.coefficients = coefficients

    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        a, b = self.coefficients[(source, target)]
        return (a * images + b).clamp(-1, 1)


def fit_linear(pairs: dict[str, SliceSet], directions) -> LinearMap:
    coefficients = {}
    for s, t in directions:
        mask = pairs[t].masks & pairs[s].masks
        a, b = np.polyfit(pairs[s].images[mask], pairs[t].images[mask], 1)
        coefficients[(s, t)] = (float(a), float(b))
    return LinearMap(coefficients)


def score(model, test: dict[str, SliceSet], s: str, t: str, prefix: str) -> dict[str, float]:
    summary = evaluate_translation(model, test, s, t).aggregate()
    return {f"{m}_{prefix}_{s}_{t}": summary[m] for m in METRICS}


def score_all(model, test: dict[str, SliceSet], directions, prefix: str) -> dict[str, float]:
    """`score` over every direction."""
    return {k: v for s, t in directions for k, v in score(model, test, s, t, prefix).items()}


def main() -> None:
    args = training_benchmark_args(__doc__)
    size = QUICK if args.quick else FULL
    mods = PHANTOM_MODALITIES
    directions = list(itertools.permutations(mods, 2))
    figures: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsynth-unified-") as tmp:
        root = Path(tmp)
        generate_phantom(
            PhantomConfig(sites=3, subjects_per_site=size["subjects"], seed=0),
            root / "phantom",
            progress=False,
        )
        base = (
            scenario_flat("phantom-hetero")
            | (TINY_MODEL if args.quick else {})
            | {
                "data.root": str(root / "phantom"),
                "data.cache-dir": str(root / "cache"),
                "data.preprocess.image-size": size["size"],
                "data.validation-fraction": 0.1,
                "train.steps": size["steps"],
                "federation.num-rounds": size["rounds"],
                "federation.local-steps": size["steps"] // size["rounds"],
            }
        )
        hetero = FedsynthConfig.from_flat(base)
        full = FedsynthConfig.from_flat(base | {"data.site-modalities": ""})
        sites, cache = prepare_sites(full.data, progress=False)
        test = pool_sites(sites).test  # the same subjects in every configuration
        pooled = pool_sites(sites)
        pairs = {
            m: SliceSet.concat([paired_training(cache, s, mods)[m] for s in sites]) for m in mods
        }
        linear = fit_linear(pairs, directions)
        figures |= score_all(None, test, directions, "source")
        figures |= score_all(linear, test, directions, "linear")

        for a, b in itertools.combinations(mods, 2):
            pair_cfg = full.evolve(
                model={"kind": "cyclegan", "source": a, "target": b},
                train={"lr": 2e-3},
                data={"site_modalities": ""},
            )
            pair_data = SiteData("pooled", {m: pooled.train[m] for m in (a, b)}, pooled.test)
            model, _ = train_site(pair_cfg, pair_data, f"cyclegan {a}-{b}", progress=False)
            for s, t in ((a, b), (b, a)):
                figures |= score(model, test, s, t, "pairwise")

        runs: dict[str, list[dict[str, float]]] = {
            "unified": [],
            "unified_fed_hetero": [],
            "unified_fed_hetero_last": [],
        }
        for seed in size["seeds"]:
            cfg = full.evolve(train={"seed": seed}, data={"site_modalities": ""})
            model, _ = train_site(cfg, pooled, f"unified seed {seed}", progress=False)
            runs["unified"].append(score_all(model, test, directions, "unified"))
            fed_cfg = hetero.evolve(
                train={"seed": seed}, federation={"run_dir": root / f"fed-{seed}"}
            )
            run = simulate(fed_cfg, cpus_per_site=1.0 / 3)
            chosen = chosen_round(run.metrics())
            for row, rnd in (
                ("unified_fed_hetero", chosen["round"] if chosen else run.last_round()),
                ("unified_fed_hetero_last", run.last_round()),
            ):
                fed = load_checkpoint(run.checkpoint_path(rnd)).model
                runs[row].append(
                    score_all(fed, test, directions, row) | {f"round_{row}": float(rnd)}
                )
        for rows in runs.values():
            for key in rows[0]:
                values = [r[key] for r in rows]
                figures[key] = statistics.fmean(values)
                figures[f"{key}_sd"] = statistics.pstdev(values)

        hetero_sites, _ = prepare_sites(hetero.data, progress=False)
        for site in hetero_sites:
            model, _ = train_site(hetero, site, f"local {site.site}", progress=False)
            figures |= score_all(model, test, directions, f"unified_local_{site.site}")

    for row in ("source", "linear", "pairwise", "unified", *runs):
        figures[f"psnr_brain_{row}_mean"] = statistics.fmean(
            figures[f"psnr_brain_{row}_{s}_{t}"] for s, t in directions
        )
    local_sites = sorted(
        {k.split("_")[4] for k in figures if k.startswith("psnr_brain_unified_local_")}
    )
    gaps = [
        figures[f"psnr_brain_unified_{s}_{t}"] - figures[f"psnr_brain_linear_{s}_{t}"]
        for s, t in directions
    ]
    best_local = [
        max(figures[f"psnr_brain_unified_local_{site}_{s}_{t}"] for site in local_sites)
        for s, t in directions
    ]
    fed = [figures[f"psnr_brain_unified_fed_hetero_{s}_{t}"] for s, t in directions]
    figures |= {
        "min_gain_unified_over_linear_db": min(gaps),
        "target_every_unified_direction_2db_over_linear": float(min(gaps) >= 2.0),
        "gap_unified_vs_pairwise_mean_db": figures["psnr_brain_pairwise_mean"]
        - figures["psnr_brain_unified_mean"],
        "target_unified_within_05db_of_pairwise": float(
            figures["psnr_brain_unified_mean"] >= figures["psnr_brain_pairwise_mean"] - 0.5
        ),
        "gap_fed_hetero_vs_unified_mean_db": figures["psnr_brain_unified_mean"]
        - figures["psnr_brain_unified_fed_hetero_mean"],
        "target_fed_hetero_within_1db_of_centralized": float(
            figures["psnr_brain_unified_mean"] - figures["psnr_brain_unified_fed_hetero_mean"]
            <= 1.0
        ),
        "directions_fed_beats_best_local": float(
            sum(f > b for f, b in zip(fed, best_local, strict=True))
        ),
        "steps": size["steps"],
        "image_size": size["size"],
        "seeds": len(size["seeds"]),
        "seconds_total": time.perf_counter() - start,
    }
    write_result("unified", figures, args.out)


if __name__ == "__main__":
    main()
