"""`fedsynth deploy ...`: the steps of a multi-hospital deployment (README "Deploy across
hospitals"), each reporting on the console what it did or the exact Flower command it runs."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
from pathlib import Path

from rich.markup import escape

from fedsynth.cli.common import console, parse_sets
from fedsynth.config import FedsynthConfig
from fedsynth.deploy.certs import ServerCertificates, make_node_key, make_server_certificates
from fedsynth.deploy.commands import (
    deployment_env,
    node_config,
    run_command,
    superlink_command,
    supernode_command,
    write_connection,
)
from fedsynth.deploy.local import APP
from fedsynth.simulations.scenarios import flwr_app_config


def _show(cmd: list[str]) -> None:
    """The exact command, unwrapped and without markup, so it can be copied."""
    console.print(shlex.join(cmd), markup=False, highlight=False, soft_wrap=True)


def _exec(cmd: list[str], dry_run: bool) -> int:
    """Show the command; unless `dry_run`, become it (same PID: stop it as you would Flower)."""
    _show(cmd)
    if dry_run:
        return 0
    os.execvpe(cmd[0], cmd, deployment_env())


def cmd_certs(args: argparse.Namespace) -> int:
    paths = make_server_certificates(args.out, args.host)
    console.print(
        f"CA {paths.ca_cert} (give this file to every hospital; keep {paths.ca_key} offline)",
        soft_wrap=True,
    )
    console.print(
        f"SuperLink certificate {paths.server_cert} + key {paths.server_key} for {args.host}",
        soft_wrap=True,
    )
    return 0


def cmd_node_key(args: argparse.Namespace) -> int:
    key = make_node_key(args.out, args.name)
    console.print(
        f"private key {key.private} (stays here); send {key.public} to the coordinator",
        soft_wrap=True,
    )
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    path = write_connection(args.name, args.address, None if args.insecure else args.ca)
    console.print(
        f"[superlink.{args.name}] → {args.address} written to {path}", markup=False, soft_wrap=True
    )
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    certs = None
    if not args.insecure:
        d = Path(args.certs)
        certs = ServerCertificates(d / "ca.crt", d / "ca.key", d / "server.pem", d / "server.key")
        for path in (certs.ca_cert, certs.server_cert, certs.server_key):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; make it with `fedsynth deploy certs`")
    return _exec(superlink_command(certs, args.port, args.database, args.host), args.dry_run)


def cmd_supernode(args: argparse.Namespace) -> int:
    for path in (args.key, *(() if args.insecure else (args.ca,))):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: missing")
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: not a directory (this hospital's dataset)")
    config = node_config(args.data, args.site, args.state, args.epsilon_budget)
    ca = None if args.insecure else args.ca
    return _exec(supernode_command(args.superlink, ca, args.key, args.port, config), args.dry_run)


def cmd_run(args: argparse.Namespace) -> int:
    """`flwr run --stream`, then the run directory's verdict: Flower can end a run whose rounds
    failed with exit code 0 (SecAgg+), so the exit code here comes from status.json."""
    run_dir = Path(args.run_dir).resolve()
    flat = parse_sets(args.set)
    flat["federation.run-dir"] = str(run_dir)
    if args.resume:
        flat["federation.resume-from"] = str(run_dir)
    # The config the ServerApp will build (the app's defaults, then these overrides), checked
    # here so a bad key or value fails before anything starts, naming the key.
    typed = FedsynthConfig.from_flat(flwr_app_config() | flat).to_flat()
    cmd = run_command(args.app, args.connection, {k: typed[k] for k in flat})
    _show(cmd)
    code = subprocess.run(cmd, env=deployment_env()).returncode
    status_file = run_dir / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    if code == 0 and status.get("status") == "complete":
        console.print(f"[green]run complete[/]: {escape(str(run_dir))}", soft_wrap=True)
        return 0
    reason = status.get("reason") or f"flwr run exited {code}; see the SuperLink log"
    verdict = status.get("status", "no status.json")
    console.print(f"[red]run FAILED[/] ({escape(verdict)}): {escape(reason)}", soft_wrap=True)
    return 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `fedsynth deploy` and its steps."""
    deploy = sub.add_parser("deploy", help="multi-hospital deployment (README 'Deploy')")
    steps = deploy.add_subparsers(dest="step", required=True)

    p = steps.add_parser("certs", help="coordinator: CA + SuperLink TLS certificate")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--host", action="append", required=True, help="name/IP hospitals dial")
    p.set_defaults(func=cmd_certs)

    p = steps.add_parser("node-key", help="hospital: this SuperNode's authentication key")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True, help="the site's name, e.g. hospA")
    p.set_defaults(func=cmd_node_key)

    p = steps.add_parser("connect", help="coordinator: the SuperLink connection for flwr")
    p.add_argument("--name", default="fedsynth")
    p.add_argument("--address", required=True, help="host:port of the SuperLink")
    p.add_argument("--ca", type=Path, help="ca.crt")
    p.add_argument("--insecure", action="store_true", help="no TLS (one-machine trial only)")
    p.set_defaults(func=cmd_connect)

    p = steps.add_parser("superlink", help="coordinator: start flower-superlink")
    p.add_argument("--certs", type=Path, default=Path("certs"))
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9093)
    p.add_argument("--database", type=Path, default=Path("superlink.db"))
    p.add_argument("--insecure", action="store_true", help="no TLS (one-machine trial only)")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_superlink)

    p = steps.add_parser("supernode", help="hospital: start flower-supernode")
    p.add_argument("--superlink", required=True, help="host:port of the SuperLink")
    p.add_argument("--ca", type=Path, default=Path("ca.crt"))
    p.add_argument("--key", type=Path, required=True, help="private key from node-key")
    p.add_argument("--data", type=Path, required=True, help="this hospital's dataset")
    p.add_argument("--site", required=True)
    p.add_argument("--state", type=Path, required=True, help="private state directory")
    p.add_argument("--port", type=int, default=9094, help="local API port (one per node)")
    p.add_argument("--epsilon-budget", type=float, default=None)
    p.add_argument("--insecure", action="store_true", help="no TLS (one-machine trial only)")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_supernode)

    p = steps.add_parser("run", help="coordinator: a federated run; exit code from its status")
    p.add_argument("--connection", default="fedsynth")
    p.add_argument("--run-dir", type=Path, required=True, help="on the SuperLink's machine")
    p.add_argument("--resume", action="store_true", help="continue --run-dir's last round")
    p.add_argument("--app", type=Path, default=APP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_run)
