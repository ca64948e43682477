"""`fedsynth translate`: a whole NIfTI volume through a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsynth.cli.common import console


def cmd_translate(args: argparse.Namespace) -> int:
    from fedsynth.evaluation.translate import translate_volume

    out = translate_volume(
        args.checkpoint,
        args.input,
        args.target,
        args.output,
        source=args.source,
        image_size=args.size,
        mask_path=args.mask,
    )
    console.print(f"[green]wrote[/] {out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate a whole NIfTI volume with a checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--target", required=True, help="modality to synthesise, e.g. T2")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--source", default=None, help="input modality (default: from the file name)")
    p.add_argument("--size", type=int, default=None, help="expected slice size of the checkpoint")
    p.add_argument(
        "--mask", type=Path, default=None, help="brain mask (whole-head input): translate inside it"
    )
    p.set_defaults(func=cmd_translate)
