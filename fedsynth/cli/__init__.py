"""The `fedsynth` command: one module per command group, each a thin layer over the package.
The CLI owns the terminal: library code logs, and `main` renders those records with rich."""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, else a 2-thread step is
# 15–40x slower whenever another process holds a core (measured on these 2-core machines).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402

from rich.logging import RichHandler  # noqa: E402
from rich.markup import escape  # noqa: E402

from fedsynth.cli import (  # noqa: E402
    data,
    deploy,
    evaluate,
    export,
    pretrain,
    privacy,
    training,
    translate,
)
from fedsynth.cli.common import console  # noqa: E402
from fedsynth.data.layouts import DatasetError  # noqa: E402
from fedsynth.models.checkpoint import CheckpointError  # noqa: E402
from fedsynth.simulations.runtime import SimulationFailed  # noqa: E402

COMMAND_GROUPS = (data, pretrain, training, evaluate, translate, export, deploy, privacy)
"""Each registers its subcommands with `add_parsers(sub)`."""
USER_ERRORS = (
    DatasetError,
    CheckpointError,
    SimulationFailed,
    ValueError,
    FileNotFoundError,
    FileExistsError,
)
"""Answered with one `error: …` line and exit code 2, never a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsynth", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
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
    except USER_ERRORS as err:
        console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True)
        return 2
