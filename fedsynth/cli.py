"""The `fedsynth` command: one subcommand per job, each a thin layer over the package."""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, else a 2-thread step is
# 15–40x slower whenever another process holds a core (measured on these 2-core machines).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.logging import RichHandler  # noqa: E402
from rich.markup import escape  # noqa: E402

from fedsynth.data.layouts import DatasetError  # noqa: E402
from fedsynth.models.checkpoint import CheckpointError  # noqa: E402

console = Console()


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="dataset root (or manifest CSV)")
    p.add_argument("--size", type=int, default=None, help="slice size (data and model)")
    p.add_argument("--steps", type=int, default=None, help="training steps of the whole run")
    p.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. model.base-channels=8 (see README 'Configuration')",
    )


def _config(args: argparse.Namespace, base=None):
    """Defaults (or a scenario's config) + the flags + every --set KEY=VALUE."""
    from fedsynth.config import FedsynthConfig

    flat = (base or FedsynthConfig()).to_flat()
    if args.data is not None:
        flat["data.root"] = str(args.data)
    if args.size is not None:
        flat["data.preprocess.image-size"] = flat["model.image-size"] = args.size
    if args.steps is not None:
        flat["train.steps"] = args.steps
    if args.no_dp:
        flat["privacy.enabled"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key.strip() not in flat:
            raise ValueError(f"--set {item!r}: unknown config key {key.strip()!r}")
        flat[key.strip()] = value.strip()
    return FedsynthConfig.from_flat(flat)


def cmd_train(args: argparse.Namespace) -> int:
    from fedsynth.data.pipeline import prepare_sites
    from fedsynth.simulations.baselines import run_baselines
    from fedsynth.simulations.report import comparison_table

    cfg = _config(args)
    sites, _ = prepare_sites(cfg.data)
    modes = {"centralized": ("centralized",), "local": ("local",)}.get(
        args.mode, ("source-as-is", "centralized", "local")
    )
    results = run_baselines(cfg, sites, args.out, modes)
    console.print(comparison_table(results, title=f"{cfg.model.source} → {cfg.model.target}"))
    console.print(f"checkpoints, grids and baselines.json in {args.out}")
    return 0


def phantom_root(out: Path, seed: int = 0, sites: int = 3, subjects: int = 8) -> Path:
    """A phantom dataset at `out`, generated unless it is already there."""
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    if not (out / "dataset.json").is_file():
        generate_phantom(PhantomConfig(sites=sites, subjects_per_site=subjects, seed=seed), out)
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedsynth.simulations.scenarios import PHANTOM_SCENARIOS, scenario_config
    from fedsynth.simulations.simulate import simulate

    if args.resume is not None:  # continue with the run's own settings, flags on top
        from fedsynth.server.run_dir import RunDirectory

        base = RunDirectory(args.resume).config()
    else:
        base = scenario_config(args.scenario)
    if args.data is None and base.data.root is None:
        if args.scenario not in PHANTOM_SCENARIOS:
            raise ValueError(f"scenario {args.scenario!r} needs --data (your own dataset)")
        args.data = phantom_root(Path(args.phantom), seed=base.data.seed)
    cfg = _config(args, base)
    if args.out is not None:
        cfg = cfg.replace(**{"federation.run-dir": str(args.out)})
    if args.resume is not None:
        cfg = cfg.replace(**{"federation.resume-from": str(args.resume)})
    simulate(cfg, baselines=args.baselines)
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    cfg = PhantomConfig(
        sites=args.sites,
        subjects_per_site=args.subjects_per_site,
        modalities=args.modalities,
        resolution=args.resolution,
        seed=args.seed,
        lesions=args.lesions,
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

    sites, cache = prepare_sites(_config(args).data, progress=True)
    console.print(site_table(sites, title=f"{args.data} → cache {cache.path}"))
    skipped = cache.meta["skipped"]
    if skipped:
        console.print(f"[yellow]{len(skipped)} subject(s) skipped[/] (see {cache.path}/meta.json)")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from fedsynth.evaluation.translate import translate_volume

    out = translate_volume(
        args.checkpoint,
        args.input,
        args.target,
        args.output,
        source=args.source,
        image_size=args.size,
    )
    console.print(f"[green]wrote[/] {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedsynth.demo import run_demo

    return run_demo(args.out, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsynth", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="simulate a multi-site, multi-contrast MRI phantom")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--subjects-per-site", type=int, default=8)
    p.add_argument("--modalities", type=_csv, default=("T1", "T2", "PD", "FLAIR"))
    p.add_argument("--resolution", type=int, default=2, choices=(1, 2), help="mm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lesions", action="store_true")
    p.add_argument("--layout", default="bids", help="bids | ixi | brats | manifest")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("prepare", help="preprocess a dataset into the slice cache; summarise")
    _add_config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="centralized / local-only baselines with the same engine")
    p.add_argument("--mode", choices=("centralized", "local", "all"), default="all")
    p.add_argument("--out", type=Path, default=Path("runs/baselines"))
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("simulate", help="a federation of simulated sites (Flower simulation)")
    p.add_argument("--scenario", default="phantom-3site")
    p.add_argument("--out", type=Path, default=None, help="run directory")
    p.add_argument("--resume", type=Path, default=None, help="continue this run directory")
    p.add_argument("--baselines", action="store_true", help="also centralized and local-only")
    p.add_argument("--phantom", default="runs/phantom", help="where phantom data is made/reused")
    _add_config_args(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("translate", help="translate a whole NIfTI volume with a checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--target", required=True, help="modality to synthesise, e.g. T2")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--source", default=None, help="input modality (default: from the file name)")
    p.add_argument("--size", type=int, default=None, help="expected slice size of the checkpoint")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("demo", help="the main job on embedded data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    from fedsynth.deploy.cli import add_parser as add_deploy_parser

    add_deploy_parser(sub)

    from fedsynth.privacy_cli import add_privacy_parser

    add_privacy_parser(sub)
    return parser


def quiet_flower(verbose: bool = False) -> None:
    """Flower logs every record it sends through its own handler; fedsynth prints its own
    round-by-round lines, so Flower's are shown only with --verbose."""
    import flwr.common.logger  # noqa: F401 — configures the "flwr" logger we then adjust

    flwr_log = logging.getLogger("flwr")
    flwr_log.propagate = False
    flwr_log.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("fedsynth").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    quiet_flower(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (DatasetError, CheckpointError, ValueError, FileNotFoundError, FileExistsError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
