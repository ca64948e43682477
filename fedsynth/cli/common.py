"""What every `fedsynth` command group shares: the terminal, the config flags and the one
`--set KEY=VALUE` parser (also used by `fedsynth deploy run`)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from fedsynth.config import FedsynthConfig

console = Console()


def csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` strings as flat config keys -> raw values (typed by `FedsynthConfig`)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def add_config_args(p: argparse.ArgumentParser, steps: bool = True) -> None:
    """--data, --size, [--steps], --no-dp and --set: the configuration flags of a command."""
    p.add_argument("--data", type=Path, default=None, help="dataset root (or manifest CSV)")
    p.add_argument("--size", type=int, default=None, help="slice size (data and model)")
    if steps:
        p.add_argument("--steps", type=int, default=None, help="training steps of the whole run")
    p.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. model.base-channels=8 (see README 'Configuration')",
    )


def flat_from_args(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> dict:
    """Flat keys: `base` (a scenario's or a run's; else nothing), then the flags, then every
    --set KEY=VALUE. Checked and typed once, by `config_from_args`."""
    flat = dict(base or {})
    if args.data is not None:
        flat["data.root"] = str(args.data)
    if args.size is not None:
        flat["data.preprocess.image-size"] = args.size
    if getattr(args, "steps", None) is not None:
        flat["train.steps"] = args.steps
    if args.no_dp:
        flat["privacy.enabled"] = False
    return flat | parse_sets(args.set)


def config_from_args(
    args: argparse.Namespace, base: Mapping[str, Any] | None = None, **extra: Any
) -> FedsynthConfig:
    """The command's typed config: defaults < `base` < flags < --set < `extra` (flat keys)."""
    return FedsynthConfig.from_flat(flat_from_args(args, base) | extra)


def phantom_root(out: Path, seed: int = 0, sites: int = 3, subjects: int = 8) -> Path:
    """A phantom dataset at `out`, generated unless it is already there."""
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    if not (out / "dataset.json").is_file():
        generate_phantom(PhantomConfig(sites=sites, subjects_per_site=subjects, seed=seed), out)
    return out
