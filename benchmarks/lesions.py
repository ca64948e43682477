"""Which source contrast carries a lesion (issue 21)? Lesion fidelity of the shipped foundation
model (`fedsynth/pretrained/phantom-unified`, zero-shot) into FLAIR and T2 from every other
contrast, against the most a reader of the source itself could find.

Synthetic FLAIR from T1 had lesion Dice 0.03 (`foundation.json`). A model can only draw a lesion
its input shows, so the question is how much of the lesion the source contrast holds. The
*ceiling* row answers it without any synthesis: a segmenter trained on the real source contrast
(the same MONAI UNet and labels as the clinical suite's) finds the lesion on the real source
slices; `dice_lesion_ceiling_SRC` is its Dice against the true lesion. A direction whose ceiling is
low cannot keep lesions however good the generator; one whose ceiling is high must.

Data: foundation.py's benchmark phantom (seed 0, three sites, lesions in half of the subjects; the
foundation was trained on seed 1000), pooled, scored on the held-out subjects. Rows per direction
(`fedsynth.evaluation.suite`): `real` (the target's segmenter on the real target), `source` (copy
the input), `linear` (a·x + b per direction fitted on the training subjects' pairs) and
`foundation`. Figures: `MEASURE_ROW_SRC_TGT` for dice_lesion (against the true lesion),
dice_lesion_vs_real, lesion_contrast_error, false_lesion_ml, dice_tissue_mean and psnr_brain;
`dice_lesion_ceiling_SRC`; `lesion_dice_ratio_to_real_foundation_SRC_TGT`. Nothing is trained
but the segmenters and the linear maps.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from common import Stopwatch, phantom_segmenters, training_benchmark_args, write_result
from foundation import CLINICAL, benchmark_phantom
from unified import fit_linear

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PHANTOM_MODALITIES
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SliceSet, pool_sites
from fedsynth.data.splits import paired_training
from fedsynth.evaluation.suite import (
    REAL_TARGET,
    SOURCE_AS_IS,
    direction_name,
    evaluate_direction,
    evaluate_rows,
)
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.pretrained import FOUNDATION
from fedsynth.simulations.scenarios import FOUNDATION_MODEL

FULL = {"subjects": 16, "segmenter_steps": 200, "sources": PHANTOM_MODALITIES}
QUICK = {"subjects": 8, "segmenter_steps": 2, "sources": ("T1", "T2")}
MEASURES = (
    "dice_lesion",
    "dice_lesion_vs_real",
    "lesion_contrast_error",
    "false_lesion_ml",
    "dice_tissue_mean",
    "psnr_brain",
)
ROW_NAMES = {REAL_TARGET: "real", SOURCE_AS_IS: "source"}


def main() -> None:
    args = training_benchmark_args(__doc__)
    setup = QUICK if args.quick else FULL
    figures: dict[str, float] = {}
    timed = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="fedsynth-lesions-") as tmp:
        root = Path(tmp)
        with timed("phantom"):
            benchmark_phantom(root / "phantom", setup["subjects"])
        cfg = FedsynthConfig.from_flat(
            FOUNDATION_MODEL
            | {"data.root": str(root / "phantom"), "data.cache-dir": str(root / "cache")}
        )
        with timed("data"):
            sites, cache = prepare_sites(cfg.data, progress=False)
            pooled = pool_sites(sites)
        sources = setup["sources"]
        with timed("segmenters"):
            readers = sorted(set(sources) | set(CLINICAL))
            segmentation = phantom_segmenters(
                root / "phantom", cache.meta["layout"], pooled.train, readers,
                setup["segmenter_steps"],
            )  # fmt: skip
        test = pooled.test
        directions = [(s, t) for t in CLINICAL for s in sources if s != t]
        with timed("linear"):
            pairs = {
                m: SliceSet.concat(
                    [paired_training(cache, s, PHANTOM_MODALITIES)[m] for s in sites]
                )
                for m in PHANTOM_MODALITIES
            }
            rows = {
                "linear": fit_linear(pairs, directions),
                "foundation": load_checkpoint(FOUNDATION).model,
            }
        with timed("ceilings"):
            for source in sources:  # the source's own reader on the real source: no synthesis
                own = evaluate_direction(REAL_TARGET, test, (source, source), segmentation)
                figures[f"dice_lesion_ceiling_{source}"] = own.summary["dice_lesion"]
        with timed("evaluate"):
            scored = evaluate_rows(rows, test, directions, segmentation)
        for row, by_direction in scored.items():
            name = ROW_NAMES.get(row, row)
            for s, t in directions:
                summary = by_direction[direction_name((s, t))].summary
                for measure in MEASURES:
                    figures[f"{measure}_{name}_{s}_{t}"] = summary.get(measure, math.nan)
        for s, t in directions:
            real = figures[f"dice_lesion_real_{s}_{t}"]
            figures[f"lesion_dice_ratio_to_real_foundation_{s}_{t}"] = (
                figures[f"dice_lesion_foundation_{s}_{t}"] / real if real > 0 else math.nan
            )
    figures["test_subjects"] = next(iter(scored[REAL_TARGET].values())).summary["subjects"]
    figures |= {f"seconds_{k}": v for k, v in timed.seconds.items()}
    figures["seconds_total"] = sum(timed.seconds.values())
    write_result("lesions", {k: v for k, v in figures.items() if not math.isnan(v)}, args.out)


if __name__ == "__main__":
    main()
