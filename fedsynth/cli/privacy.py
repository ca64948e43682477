"""`fedsynth privacy sweep | audit | check`: the privacy researcher's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fedsynth.cli.common import console, csv, parse_sets
from fedsynth.cli.training import add_federation_args, federated_run_config
from fedsynth.config import FedsynthConfig


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in csv(text))


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedsynth.simulations.sweep import Setting, run_sweep

    settings = [Setting(noise=s) for s in args.noise] + [Setting(epsilon=e) for e in args.budget]
    if not settings:
        raise ValueError("give --noise and/or --budget values to sweep over")
    cfg = federated_run_config(args)
    dp = parse_sets(args.dp_set)  # the DP settings' own keys, in the same one parse
    private = federated_run_config(args, **dp) if dp else None
    rows = run_sweep(
        cfg,
        settings,
        args.out,
        private,
        args.site,
        args.bootstrap,
        audit_slices_per_subject=args.slices_per_subject,
    )
    table = Table(title=f"privacy sweep — {args.out / 'sweep.md'}")
    for col in ("setting", "σ", "ε max", "PSNR", "SSIM", "AUC G", "AUC G cal", "AUC D", "reused"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["setting"],
            f"{r['sigma']:.3g}",
            f"{r['epsilon_max']:.3g}",
            f"{r['psnr_brain']:.2f}",
            f"{r['ssim_brain']:.3f}",
            f"{r['auc_generator-threshold']:.3f}",
            f"{r['auc_generator-calibrated']:.3f}",
            f"{r['auc_discriminator-threshold']:.3f}",
            "yes" if r["reused"] else "no",
        )
    console.print(table)
    console.print(f"figure: {args.out / 'utility_vs_epsilon.png'}")
    return 0


def _slices_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slices-per-subject",
        type=int,
        default=None,
        metavar="K",
        help="score at most K evenly spaced slices of each subject (default: all); the "
        "references still train on every slice",
    )


def cmd_audit(args: argparse.Namespace) -> int:
    from fedsynth.audit.run import audit_run
    from fedsynth.server.run_dir import RunDirectory

    reference = None
    if args.reference_steps is not None:
        flat = RunDirectory(args.run).flat_config() | {"train.steps": args.reference_steps}
        reference = FedsynthConfig.from_flat(flat)
    doc = audit_run(
        args.run,
        args.site,
        args.out,
        args.data_dir,
        args.state_dir,
        reference,
        bootstrap=args.bootstrap,
        slices_per_subject=args.slices_per_subject,
    )
    table = Table(title=f"membership inference — site {doc['site']}, round {doc['round']}")
    for col in ("attack", "AUC [95% CI]", "bal. acc.", "TPR@1%FPR", "TPR@0.1%FPR"):
        table.add_column(col)
    for name, a in doc["attacks"].items():
        lo, hi = a["ci95"]["auc"]
        table.add_row(
            name,
            f"{a['auc']:.3f} [{lo:.3f}, {hi:.3f}]",
            f"{a['balanced_accuracy']:.3f}",
            f"{a['tpr_at_0.01_fpr']:.3f}",
            f"{a['tpr_at_0.001_fpr']:.3f}",
        )
    console.print(table)
    out = args.out or Path(args.run) / "audit" / doc["site"]
    console.print(f"audit.json, audit.md and roc.png in {out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fedsynth.audit.accounting import check_run

    checks = check_run(args.run, args.state_dir)
    for c in checks:
        status = "[green]ok[/]" if c.ok else "[red]MISMATCH[/]"
        console.print(
            f"{c.site}: {status} reported ε={c.epsilon_reported:.4f}, Opacus "
            f"{c.epsilon_recomputed:.4f}; {c.rounds} rounds, releases {c.steps}"
        )
        for problem in c.problems:
            console.print(f"  - {problem}")
    return 0 if all(c.ok for c in checks) else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `fedsynth privacy …` on the main parser's subcommands."""
    group = sub.add_parser("privacy", help="ε–utility sweeps, membership audits, ε checks")
    commands = group.add_subparsers(dest="privacy_command", required=True)

    p = commands.add_parser("sweep", help="one simulated federation per σ or ε target, audited")
    p.add_argument("--noise", type=_floats, default=(), help="σ values, 0 = no DP: 0,0.8,1.1")
    p.add_argument("--budget", type=_floats, default=(), help="ε targets (σ calibrated): 4,8")
    p.add_argument(
        "--dp-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config for the DP settings only, e.g. train.batch-size=32",
    )
    p.add_argument("--site", default=None, help="site to audit (default: the first)")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--bootstrap", type=int, default=1000)
    _slices_argument(p)
    add_federation_args(p)
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser("audit", help="membership inference against one site of a run")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--site", default=None, help="site name (default: the first)")
    p.add_argument("--data-dir", type=Path, default=None, help="the site's own dataset")
    p.add_argument("--state-dir", type=Path, default=None, help="parent of the site's state")
    p.add_argument("--out", type=Path, default=None, help="default RUN/audit/SITE")
    p.add_argument(
        "--reference-steps",
        type=int,
        default=None,
        help="training steps of each calibration reference (default: the run's)",
    )
    p.add_argument("--bootstrap", type=int, default=1000)
    _slices_argument(p)
    p.set_defaults(func=cmd_audit)

    p = commands.add_parser("check", help="recompute every site's ε from its history (Opacus)")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--state-dir", type=Path, default=None, help="parent of the sites' state")
    p.set_defaults(func=cmd_check)
