"""`fedsynth evaluate`: a run directory's last checkpoint, or any checkpoint on a dataset,
through the one evaluation (pixel, frequency, downstream segmentation, lesion fidelity)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsynth.cli.common import add_config_args, config_from_args, console, flat_from_args
from fedsynth.evaluation.segmentation import DEFAULT_SEGMENTER


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fedsynth.evaluation.segmentation import SegmenterConfig
    from fedsynth.server.evaluation import evaluate_checkpoint, evaluate_run

    segmenter = None if args.no_segmentation else SegmenterConfig(steps=args.segmenter_steps)
    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("give a run directory or --checkpoint (with --data), not both")
    if args.run is not None:
        path = evaluate_run(args.run, args.out, segmenter, **flat_from_args(args))
    else:
        cfg = config_from_args(args)
        if cfg.data.root is None:
            raise ValueError("--checkpoint needs --data (the dataset to evaluate on)")
        out = args.out or Path("evaluation")
        path = evaluate_checkpoint(cfg, args.checkpoint, out, segmenter=segmenter)
    console.print(f"[green]wrote[/] {path} (subjects.csv, summary.json, figures alongside)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a run or checkpoint: pixel, frequency, segmentation and lesion metrics",
    )
    p.add_argument("run", type=Path, nargs="?", default=None, help="a run directory")
    p.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (with --data)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/evaluation)")
    p.add_argument(
        "--segmenter-steps", type=int, default=DEFAULT_SEGMENTER.steps, help="UNet training steps"
    )
    p.add_argument(
        "--no-segmentation", action="store_true", help="skip segmentation and lesion metrics"
    )
    add_config_args(p, steps=False)
    p.set_defaults(func=cmd_evaluate)
