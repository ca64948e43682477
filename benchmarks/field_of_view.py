"""Whole head or brain only: does the shipped foundation (`fedsynth/pretrained/phantom-unified`,
trained on whole-head images) translate skull-stripped images as well as whole heads?

Why: foundation.py scores the foundation on brain-only phantom images and finds every direction
into PD below the linear map. Preprocessing scales each volume on its foreground's median and
lower percentile (`data.preprocess.scaling=median`); with a head around the brain that
foreground holds scalp, skull and muscle, so the same brain lands at a different contrast in
[-1, 1]. A hospital that skull-strips its scans feeds the model a contrast it never saw.

Data: foundation.py's benchmark phantom (seed 0, three sites, every contrast, lesions in half of
the subjects) made twice, `heads` (whole heads) and `brain` (brains alone). Rows, zero-shot, on
each version's held-out test subjects: `source` (copy the input), `linear` (a·x + b fitted on
that version's training pairs, unified.py's generous baseline) and `zeroshot` (the foundation as
shipped). Nothing is trained or tuned here.

Figures: `psnr_brain_ROW_FOV_SRC_TGT` (FOV: heads, brain); `gain_zeroshot_over_linear_FOV_SRC_TGT`
and its `mean_`/`min_` over the 12 directions; `sd_ratio_zeroshot_FOV_SRC_TGT`, the in-brain
intensity sd of the synthetic image over the real target's (1 = the target's contrast).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import Stopwatch, training_benchmark_args, write_result
from foundation import FINETUNE, benchmark_phantom
from unified import fit_linear, score_all

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PHANTOM_MODALITIES
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SliceSet, pool_sites
from fedsynth.data.splits import paired_training
from fedsynth.evaluation.evaluate import synthesise
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.pretrained import FOUNDATION

FULL = {"subjects": 10, "directions": list(itertools.permutations(PHANTOM_MODALITIES, 2))}
QUICK = {"subjects": 6, "directions": [("T1", "PD"), ("T2", "T1")]}
VIEWS = {"heads": True, "brain": False}


def sd_ratio(model, test: dict[str, SliceSet], s: str, t: str) -> float:
    """In-brain intensity sd of the synthetic target over the real target's."""
    src, tgt = test[s], test[t]
    mask = tgt.masks.astype(bool)
    fake = synthesise(model, src.images, s, t)
    return float(np.std(fake[mask]) / np.std(tgt.images[mask]))


def main() -> None:
    args = training_benchmark_args(__doc__)
    setup = QUICK if args.quick else FULL
    directions = setup["directions"]
    model = load_checkpoint(FOUNDATION).model
    figures: dict[str, float] = {}
    timed = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="fedsynth-fov-") as tmp:
        for view, heads in VIEWS.items():
            root = Path(tmp) / view
            with timed(f"data_{view}"):
                benchmark_phantom(root / "phantom", setup["subjects"], heads=heads)
                cfg = FedsynthConfig.from_flat(
                    FINETUNE
                    | {
                        "data.root": str(root / "phantom"),
                        "data.cache-dir": str(root / "cache"),
                        "data.site-modalities": "",
                    }
                )
                sites, cache = prepare_sites(cfg.data, progress=False)
                test = pool_sites(sites).test
                mods = PHANTOM_MODALITIES
                pairs = {
                    m: SliceSet.concat([paired_training(cache, s, mods)[m] for s in sites])
                    for m in mods
                }
            with timed(f"score_{view}"):
                rows = {"source": None, "linear": fit_linear(pairs, directions), "zeroshot": model}
                for row, translator in rows.items():
                    figures |= score_all(translator, test, directions, f"{row}_{view}")
                for s, t in directions:
                    figures[f"sd_ratio_zeroshot_{view}_{s}_{t}"] = sd_ratio(model, test, s, t)
            gains = [
                figures[f"psnr_brain_zeroshot_{view}_{s}_{t}"]
                - figures[f"psnr_brain_linear_{view}_{s}_{t}"]
                for s, t in directions
            ]
            for (s, t), gain in zip(directions, gains, strict=True):
                figures[f"gain_zeroshot_over_linear_{view}_{s}_{t}"] = gain
            figures[f"mean_gain_zeroshot_over_linear_{view}_db"] = statistics.fmean(gains)
            figures[f"min_gain_zeroshot_over_linear_{view}_db"] = min(gains)
            figures[f"test_subjects_{view}"] = len(test[directions[0][0]].unique_subjects())
    figures["image_size"] = 128
    figures |= {f"seconds_{k}": v for k, v in timed.seconds.items()}
    write_result("field_of_view", figures, args.out)


if __name__ == "__main__":
    main()
