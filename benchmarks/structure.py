"""Ablation of the foundation model's objective on PUBLIC validation data: does the MIND
structure term (`model.lambda-structure`) keep anatomy and lesions, and at what weight? And
what does the supervised paired term (`model.lambda-paired`, `data.pairing=paired`) add where
the public data has every contrast of a subject (IXI, BraTS, the phantom)?

Data: a domain-randomised public phantom (heads, lesions in half of the subjects; seed 7, the
seed the unified recipe was chosen on, disjoint from every benchmark's test phantom), one
pooled site; its held-out subjects are the validation set. Nothing here touches a benchmark's
test subjects: this is where the recipe's weight is chosen.

Rows: the unified model (UNIFIED_RECIPE's architecture, no identity term) trained from
scratch with (λ_structure, λ_paired) in `ROWS`, the same steps and seed; λ_paired > 0 trains
on paired data. Scores per row: mean in-brain
PSNR/SSIM over the 12 directions, and for T1 → FLAIR and T1 → T2 the segmentation suite
(tissue and lesion Dice with a MONAI UNet trained on the real training slices, false lesion
volume on lesion-free subjects, lesion contrast error). Figures:
`psnr_brain_mean_ROW`, `ssim_brain_mean_ROW`, `MEASURE_ROW_t1_TGT` with ROW = `struct_L`
(L the structure weight, unpaired), `paired_struct_L` (λ_paired 10), or `real`/`source`.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

from common import Stopwatch, phantom_segmenters, training_benchmark_args, write_result

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import pool_sites
from fedsynth.evaluation.suite import (
    REAL_TARGET,
    SOURCE_AS_IS,
    direction_name,
    evaluate_rows,
    served_directions,
)
from fedsynth.simulations.baselines import train_site
from fedsynth.simulations.scenarios import TINY_MODEL, UNIFIED_RECIPE

FULL = {
    "subjects": 24,
    "size": 64,
    "steps": 600,
    "segmenter_steps": 300,
    "rows": ((0, 0), (1, 0), (4, 0), (0, 10), (1, 10)),
}
QUICK = {"subjects": 6, "size": 32, "steps": 2, "segmenter_steps": 2, "rows": ((0, 0), (1, 10))}
CLINICAL = ("T2", "FLAIR")
MEASURES = (
    "dice_tissue_mean",
    "dice_lesion",
    "false_lesion_ml",
    "lesion_contrast_error",
    "psnr_brain",
)
ROW_NAMES = {REAL_TARGET: "real", SOURCE_AS_IS: "source"}


def row_name(structure: float, paired: float) -> str:
    name = f"struct_{structure:g}".replace(".", "p")
    return f"paired_{name}" if paired else name


def main() -> None:
    args = training_benchmark_args(__doc__)
    setup = QUICK if args.quick else FULL
    figures: dict[str, float] = {}
    timed = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="fedsynth-structure-") as tmp:
        root = Path(tmp)
        with timed("phantom"):
            generate_phantom(
                PhantomConfig(
                    sites=1,
                    subjects_per_site=setup["subjects"],
                    acquisition="randomised",
                    lesions=True,
                    lesion_fraction=0.5,
                    heads=True,
                    seed=7,
                ),
                root / "public",
                progress=False,
            )
        base = (
            UNIFIED_RECIPE
            | (TINY_MODEL if args.quick else {})
            | {
                "data.root": str(root / "public"),
                "data.cache-dir": str(root / "cache"),
                "data.preprocess.image-size": setup["size"],
                "model.lambda-identity": 0.0,
                "train.steps": setup["steps"],
                "train.seed": 0,
            }
        )
        cfg = FedsynthConfig.from_flat(base)
        with timed("data"):
            sites, cache = prepare_sites(cfg.data, progress=False)
            pooled = pool_sites(sites)
        with timed("segmenters"):
            segmentation = phantom_segmenters(
                root / "public", cache.meta["layout"], pooled.train, CLINICAL,
                setup["segmenter_steps"],
            )
        models = {}
        for structure, paired in setup["rows"]:
            name = row_name(structure, paired)
            with timed(name):
                weights = {"lambda_structure": float(structure), "lambda_paired": float(paired)}
                run = cfg.evolve(
                    model=weights, data={"pairing": "paired" if paired else "unpaired"}
                )
                data = pooled
                if paired:
                    data = pool_sites(prepare_sites(run.data, progress=False)[0])
                models[name], _ = train_site(run, data, name)
        with timed("evaluate"):
            directions = served_directions(next(iter(models.values())), list(pooled.test))
            pixel = evaluate_rows(models, pooled.test, directions)
            clinical = evaluate_rows(
                models, pooled.test, [("T1", t) for t in CLINICAL], segmentation
            )
        for row, by_direction in pixel.items():
            name = ROW_NAMES.get(row, row)
            for metric in ("psnr_brain", "ssim_brain"):
                values = [e.summary[metric] for e in by_direction.values()]
                figures[f"{metric}_mean_{name}"] = statistics.fmean(values)
        for row, by_direction in clinical.items():
            name = ROW_NAMES.get(row, row)
            for target in CLINICAL:
                summary = by_direction[direction_name(("T1", target))].summary
                for measure in MEASURES:
                    value = summary.get(measure, math.nan)
                    figures[f"{measure}_{name}_t1_{target.lower()}"] = value
        figures["validation_subjects"] = next(iter(pixel[REAL_TARGET].values())).summary["subjects"]
        figures["steps"] = setup["steps"]
        figures |= {f"seconds_{k}": v for k, v in timed.seconds.items()}
        write_result(
            "structure",
            {k: v for k, v in figures.items() if not math.isnan(v)},
            args.out,
        )


if __name__ == "__main__":
    main()
