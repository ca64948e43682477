"""`fedsynth evaluate` behind the CLI: a checkpoint (or a run directory's last one) scored on a
dataset's paired held-out subjects with the one evaluation (`fedsynth.evaluation.suite`).

The data are split exactly as for training (same config, same seed), so the test subjects are
the ones the run never trained on, and the preprocessing is the checkpoint's own. Segmenters
are trained on the training subjects' real slices of each target contrast.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import pool_sites
from fedsynth.evaluation.labels import label_scheme
from fedsynth.evaluation.outputs import write_evaluation
from fedsynth.evaluation.segmentation import DEFAULT_SEGMENTER, SegmenterConfig
from fedsynth.evaluation.suite import (
    Direction,
    Segmentation,
    evaluate_rows,
    served_directions,
    train_segmenters,
)
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint
from fedsynth.server.report import EVALUATION_DIR, write_report
from fedsynth.server.run_dir import RunDirectory

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    cfg: FedsynthConfig,
    checkpoint: Path,
    out: Path,
    row: str = "model",
    directions: list[Direction] | None = None,
    segmenter: SegmenterConfig | None = DEFAULT_SEGMENTER,
    progress: bool = True,
) -> Path:
    """Score `checkpoint` on `cfg.data`; write the evaluation files under `out` (returns the
    markdown report). `segmenter=None` skips segmentation and lesion metrics."""
    ckpt = load_checkpoint(checkpoint)
    data = dataclasses.replace(cfg.data, preprocess=ckpt.preprocess)
    sites, cache = prepare_sites(data, progress=progress)
    pooled = pool_sites(sites)
    directions = directions or served_directions(ckpt.model, data.modalities)
    if not directions:
        raise CheckpointError(
            f"{checkpoint}: serves {'/'.join(ckpt.model.config.modalities)}, the data has "
            f"{'/'.join(data.modalities)}: no direction to evaluate"
        )
    segmentation: Segmentation | None = None
    targets = [t for _, t in directions]
    labelled = [pooled.train[t].labels for t in targets if t in pooled.train]
    if segmenter is not None and labelled and all(lab is not None for lab in labelled):
        values = set(np.unique(np.concatenate([np.unique(lab) for lab in labelled])).tolist())
        scheme = label_scheme(data.root, cache.meta["layout"], values)
        log.info("training %d segmenter(s) on real %s slices", len(set(targets)), targets)
        segmentation = train_segmenters(pooled.train, targets, scheme, segmenter)
    elif segmenter is not None:
        log.info("no label maps for every target: segmentation and lesion metrics skipped")
    results = evaluate_rows({row: ckpt.model}, pooled.test, directions, segmentation)
    return write_evaluation(results, out, title=f"Evaluation of {Path(checkpoint).name}")


def evaluate_run(
    run_path: Path,
    out: Path | None = None,
    segmenter: SegmenterConfig | None = DEFAULT_SEGMENTER,
    progress: bool = True,
    **overrides: object,
) -> Path:
    """Evaluate a run directory's last complete checkpoint on the run's own data and split,
    into `run/evaluation/` (or `out`), and rewrite the run's report to include it."""
    run = RunDirectory(run_path)
    cfg = FedsynthConfig.from_flat(run.flat_config() | overrides)
    last = run.last_round()
    if last == 0:
        raise CheckpointError(f"{run.path}: no complete checkpoint to evaluate")
    target = out or run.path / EVALUATION_DIR
    path = evaluate_checkpoint(
        cfg, run.checkpoint_path(last), target, "federated", segmenter=segmenter,
        progress=progress,
    )  # fmt: skip
    if out is None:
        write_report(run, cfg)
    return path
