"""`fedsynth train`, `simulate` and `demo`: baselines, simulated federations, the main job."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fedsynth.cli.common import (
    add_config_args,
    config_from_args,
    console,
    flat_from_args,
    phantom_root,
)
from fedsynth.config import FedsynthConfig


def cmd_train(args: argparse.Namespace) -> int:
    from fedsynth.data.pipeline import prepare_sites
    from fedsynth.evaluation.comparison import comparison_table
    from fedsynth.simulations.baselines import run_baselines

    cfg = config_from_args(args)
    sites, _ = prepare_sites(cfg.data)
    modes = {"centralized": ("centralized",), "local": ("local",)}.get(args.mode)
    results = run_baselines(cfg, sites, args.out, modes, progress=True)
    console.print(comparison_table(results, title=f"{cfg.model.source} → {cfg.model.target}"))
    console.print(f"checkpoints, grids and baselines.json in {args.out}")
    return 0


def federated_run_config(args: argparse.Namespace, **extra: str) -> FedsynthConfig:
    """A federated command's config: its scenario (or the run it resumes), the flags, --set,
    `extra` flat keys, and phantom data made on the fly for a phantom scenario without
    --data."""
    from fedsynth.simulations.scenarios import PHANTOM_SCENARIOS, scenario_flat

    flat = flat_from_args(args)
    if "train.steps" in flat:
        raise ValueError(
            "--steps / train.steps does not apply to a federation: each site trains "
            "federation.num-rounds × federation.local-steps steps; set those instead"
        )
    if getattr(args, "resume", None) is not None:  # the run's own settings, flags on top
        from fedsynth.server.run_dir import RunDirectory

        base = RunDirectory(args.resume).flat_config()
        flat["federation.resume-from"] = str(args.resume)
    else:
        base = scenario_flat(args.scenario)
    cfg = FedsynthConfig.from_flat(base | flat | extra)
    if cfg.data.root is None:
        if args.scenario not in PHANTOM_SCENARIOS:
            raise ValueError(f"scenario {args.scenario!r} needs --data (your own dataset)")
        root = phantom_root(Path(args.phantom), seed=cfg.data.seed)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))
    return cfg


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedsynth.simulations.simulate import simulate

    extra = {} if args.out is None else {"federation.run-dir": str(args.out)}
    simulate(federated_run_config(args, **extra), baselines=args.baselines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedsynth.cli.demo import run_demo

    return run_demo(args.out, seed=args.seed)


def add_federation_args(p: argparse.ArgumentParser) -> None:
    """--scenario, --phantom and the config flags of a command that runs federations."""
    p.add_argument("--scenario", default="phantom-3site")
    p.add_argument("--phantom", default="runs/phantom", help="where phantom data is made/reused")
    add_config_args(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="centralized / local-only baselines with the same engine")
    p.add_argument("--mode", choices=("centralized", "local", "all"), default="all")
    p.add_argument("--out", type=Path, default=Path("runs/baselines"))
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("simulate", help="a federation of simulated sites (Flower simulation)")
    p.add_argument("--out", type=Path, default=None, help="run directory")
    p.add_argument("--resume", type=Path, default=None, help="continue this run directory")
    p.add_argument("--baselines", action="store_true", help="also centralized and local-only")
    add_federation_args(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="the main job on embedded data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
