"""`fedsynth phantom` and `fedsynth prepare`: make data, and check and cache a dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fedsynth.cli.common import add_config_args, config_from_args, console, csv


def cmd_phantom(args: argparse.Namespace) -> int:
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    cfg = PhantomConfig(
        sites=args.sites,
        subjects_per_site=args.subjects_per_site,
        modalities=args.modalities,
        resolution=args.resolution,
        seed=args.seed,
        lesions=args.lesions,
        lesion_fraction=args.lesion_fraction,
        heads=args.heads,
        layout=args.layout,
    )
    start = time.perf_counter()
    meta = generate_phantom(cfg, args.out)
    console.print(
        f"[green]phantom[/]: {len(meta['sites'])} sites × {cfg.subjects_per_site} subjects "
        f"({', '.join(cfg.modalities)}) in {args.out} — {time.perf_counter() - start:.1f} s; "
        f"T1w vs MNI template r = {meta['t1_template_correlation']:.3f}"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from fedsynth.data.pipeline import prepare_sites
    from fedsynth.data.summary import site_table

    sites, cache = prepare_sites(config_from_args(args).data, progress=True)
    console.print(site_table(sites, title=f"{args.data} → cache {cache.path}"))
    skipped = cache.meta["num_skipped"]
    if skipped:
        console.print(
            f"[yellow]{skipped} file(s) or subject(s) skipped[/] (see {cache.path}/meta.json)"
        )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="simulate a multi-site, multi-contrast MRI phantom")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--subjects-per-site", type=int, default=8)
    p.add_argument("--modalities", type=csv, default=("T1", "T2", "PD", "FLAIR"))
    p.add_argument("--resolution", type=int, default=2, choices=(1, 2), help="mm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lesions", action="store_true")
    p.add_argument(
        "--lesion-fraction", type=float, default=1.0, help="share of subjects with a lesion"
    )
    p.add_argument(
        "--heads", action="store_true", help="whole heads: scalp fat, skull, muscle, outer CSF"
    )
    p.add_argument("--layout", default="bids", help="bids | ixi | brats | manifest")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("prepare", help="preprocess a dataset into the slice cache; summarise")
    add_config_args(p, steps=False)
    p.set_defaults(func=cmd_prepare)
