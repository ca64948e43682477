"""`fedsynth phantom` and `fedsynth prepare`: make data, and check and cache a dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fedsynth.cli.common import add_config_args, config_from_args, console, csv


def numbers(flag: str, text: str, count: int | None = None) -> tuple[float, ...]:
    """A flag's comma-separated numbers (exactly `count` when given); a clear error naming the
    flag and its value otherwise."""
    try:
        values = tuple(float(t) for t in csv(text))
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count):
        want = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise ValueError(f"{flag} {text!r}: expected {want}")
    return values


def cmd_phantom(args: argparse.Namespace) -> int:
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    fractions = numbers("--paired-fraction", args.paired_fraction)
    try:
        misalign = numbers("--misalign", args.misalign, 2)
    except ValueError as err:
        raise ValueError(f"{err} (MM,DEG: translation up to MM mm, rotation up to DEG°)") from None
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
        paired_fraction=fractions[0] if len(fractions) == 1 else fractions,
        misalign=misalign,
        held_out_fraction=args.held_out_fraction,
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
    p.add_argument(
        "--paired-fraction",
        default="1",
        metavar="F[,F...]",
        help="share of each site's training subjects that get every contrast (one value, or "
        "one per site); the others get one contrast each. Default 1: every subject, all",
    )
    p.add_argument(
        "--misalign",
        default="0,0",
        metavar="MM,DEG",
        help="move every contrast of a paired training subject but the first (the reference: "
        "mask and labels describe it) as a head settling between sequences: half to all of "
        "MM mm towards the table and of DEG degrees of nod (chin down), plus a small smooth "
        "deformation. Default 0,0: aligned",
    )
    p.add_argument(
        "--held-out-fraction",
        type=float,
        default=None,
        help="share of each site's subjects held out, aligned with every contrast, for testing "
        "(named in dataset.json). Default: 0.25 with a paired fraction < 1 or a misalignment, "
        "else none named",
    )
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("prepare", help="preprocess a dataset into the slice cache; summarise")
    add_config_args(p, steps=False)
    p.set_defaults(func=cmd_prepare)
