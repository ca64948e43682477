"""`fedsynth pretrain`: a public warm start and its model card (no private data, ε = 0)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fedsynth.cli.common import add_config_args, config_from_args, console


def cmd_pretrain(args: argparse.Namespace) -> int:
    from fedsynth.models.card import card_paths
    from fedsynth.simulations.pretrain import pretrain, public_phantom
    from fedsynth.simulations.scenarios import scenario_flat

    cfg = config_from_args(args, scenario_flat(args.scenario))
    source = "dataset"
    if cfg.data.root is None:
        source = "phantom"
        root = public_phantom(
            args.phantom or args.out / "public-phantom",
            args.subjects,
            cfg,
            lesion_fraction=args.lesion_fraction,
            heads=args.heads,
        )
        cfg = cfg.evolve(data={"root": Path(root)})
    command = shlex.join(["fedsynth", *sys.argv[1:]])
    path = pretrain(
        cfg,
        args.out,
        source,
        command=command,
        resume=args.resume,
        until=args.until,
        continue_from=args.continue_from,
    )
    console.print(f"[green]public warm start[/]: {path} (model card: {card_paths(path)[1]})")
    console.print(f"fine-tune from it with --set train.init-checkpoint={path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="train a public warm start (phantom or a public dataset) + model card"
    )
    p.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    p.add_argument(
        "--scenario",
        default="phantom-3site",
        help="the recipe (architecture) of the runs that will fine-tune it",
    )
    p.add_argument(
        "--subjects",
        type=int,
        default=40,
        help="subjects of the domain-randomised phantom (without --data)",
    )
    p.add_argument(
        "--phantom",
        type=Path,
        default=None,
        help="where the public phantom is made or reused (default OUT/public-phantom)",
    )
    p.add_argument(
        "--lesion-fraction",
        type=float,
        default=0.0,
        help="share of the phantom's subjects with a lesion (without --data; 0: none)",
    )
    p.add_argument("--heads", action="store_true", help="phantom subjects with whole heads")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="resume point: continue from it if it exists, save it every 25 steps "
        "(a long run survives being killed; delete it to start over)",
    )
    p.add_argument(
        "--until",
        type=int,
        default=None,
        help="write the checkpoint at this step of the schedule and stop (resume later)",
    )
    p.add_argument(
        "--continue-from",
        default=None,
        help="start from this checkpoint (or packaged model name) of the same architecture, "
        "also onto new preprocessing; the card counts its steps too",
    )
    add_config_args(p)
    p.set_defaults(func=cmd_pretrain)
