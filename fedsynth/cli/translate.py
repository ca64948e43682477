"""`fedsynth translate`: a whole NIfTI volume through a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsynth.cli.common import console


def cmd_translate(args: argparse.Namespace) -> int:
    from fedsynth.evaluation.translate import translate_volume
    from fedsynth.pretrained import PACKAGED

    checkpoint = args.checkpoint or PACKAGED[args.model]
    if (args.output is None) == (args.bids_derivatives is None):
        raise ValueError("translate: give either --output FILE or --bids-derivatives DIR")
    if args.bids_derivatives is not None:
        from fedsynth.export.bids import write_derivatives

        written = write_derivatives(
            checkpoint,
            args.input,
            args.target,
            args.bids_derivatives,
            source=args.source,
            mask=args.mask,
            subject=args.bids_subject,
            image_size=args.size,
        )
        for path in written:
            console.print(f"[green]wrote[/] {path}")
        console.print(f"BIDS derivative dataset: {args.bids_derivatives} (not for diagnosis)")
        return 0
    if args.bids_subject is not None:
        raise ValueError("translate: --bids-subject needs --bids-derivatives")
    out = translate_volume(
        checkpoint,
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
    from fedsynth.pretrained import DEFAULT_MODEL, PACKAGED

    p = sub.add_parser(
        "translate",
        help="translate a whole NIfTI volume (the packaged foundation model, or a checkpoint)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        choices=sorted(PACKAGED),
        default=DEFAULT_MODEL,
        help=f"a packaged model (default {DEFAULT_MODEL}: any-to-any T1/T2/PD/FLAIR)",
    )
    which.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint file")
    p.add_argument(
        "--input", type=Path, required=True, help="a NIfTI (or, with --bids-derivatives, a BIDS"
        " dataset folder: every source volume in it)"
    )
    p.add_argument("--target", required=True, help="modality to synthesise, e.g. T2")
    p.add_argument("--output", type=Path, default=None, help="the NIfTI to write")
    p.add_argument(
        "--bids-derivatives",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a BIDS derivative dataset (desc- names, provenance sidecars) instead",
    )
    p.add_argument(
        "--bids-subject", default=None, help="subject label for an input named without sub-"
    )
    p.add_argument("--source", default=None, help="input modality (default: from the file name)")
    p.add_argument("--size", type=int, default=None, help="expected slice size of the checkpoint")
    p.add_argument(
        "--mask", type=Path, default=None, help="brain mask (whole-head input): translate inside it"
    )
    p.set_defaults(func=cmd_translate)
