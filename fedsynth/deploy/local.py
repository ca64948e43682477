"""A whole deployment on this machine — SuperLink with TLS and SuperNode authentication, one
SuperNode per site, `flwr run` — built from the same commands as the README's steps. The
deployment tests and the deployment benchmark use it; every file lives under `root`, every
process it starts is stopped by PID (`stop_all`), every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from fedsynth.deploy.certs import make_node_key, make_server_certificates
from fedsynth.deploy.commands import (
    deployment_env,
    flwr_home,
    node_config,
    register_command,
    run_command,
    superlink_command,
    supernode_command,
    write_connection,
)
from fedsynth.deploy.processes import free_port, start, stop, wait_for

APP = Path(__file__).resolve().parents[2]  # the source checkout holding pyproject.toml
CONNECTION = "local"


class LocalFederation:
    """A SuperLink and SuperNodes on 127.0.0.1; `data_root/<site>` is each site's dataset."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root = Path(root), Path(data_root)
        self.home = self.root / "coordinator"  # the coordinator's FLWR_HOME
        self.env = deployment_env() | {"FLWR_HOME": str(self.home)}
        self.certs = make_server_certificates(self.root / "certs", ["127.0.0.1", "localhost"])
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.database = self.root / "superlink.db"
        self.procs: dict[str, subprocess.Popen] = {}
        self.run_dir = self.root / "run"

    def log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def start_superlink(self, timeout: float = 60) -> str:
        """Start (or restart: same port and database) the SuperLink; returns its name."""
        name = f"superlink-{sum(k.startswith('superlink') for k in self.procs)}"
        cmd = superlink_command(self.certs, self.port, self.database, "127.0.0.1")
        self.procs[name] = start(cmd, self.root / "logs" / f"{name}.log", self.env)
        wait_for(lambda: "Uvicorn running" in self.log(name), timeout, f"{name} to listen")
        with flwr_home(self.home):
            write_connection(CONNECTION, self.address, self.certs.ca_cert)
        return name

    def add_site(
        self, site: str, register: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Make the site's key, register it (or not: an intruder), start its SuperNode."""
        key = make_node_key(self.root / "keys", site)
        if register:
            cmd = register_command(key.public, CONNECTION)
            subprocess.run(cmd, env=self.env, check=True, timeout=60, capture_output=True)
        return self.start_supernode(site, env)

    def start_supernode(self, site: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start (or restart) the site's SuperNode; `env` adds to its environment (and so to
        its ClientApp processes': a benchmark's modified hospital)."""
        config = node_config(self.data_root / site, site, self.root / "state")
        key = self.root / "keys" / f"{site}.key"
        cmd = supernode_command(self.address, self.certs.ca_cert, key, free_port(), config)
        env = self.env | dict(env or {}) | {"FLWR_HOME": str(self.root / f"home-{site}")}
        self.procs[site] = start(cmd, self.root / "logs" / f"{site}.log", env)
        return self.procs[site]

    def wait_connected(self, site: str, timeout: float = 60) -> None:
        wait_for(lambda: "SuperNode ID" in self.log(site), timeout, f"{site} to connect")

    def run(
        self, config: Mapping[str, bool | int | float | str], app: Path = APP
    ) -> subprocess.Popen:
        """`flwr run --stream` of the Flower app in `app` (this checkout) into `run_dir`
        (log: logs/flwr-run.log)."""
        flat = dict(config) | {"federation.run-dir": str(self.run_dir)}
        name = f"flwr-run-{sum(k.startswith('flwr-run') for k in self.procs)}"
        log = self.root / "logs" / "flwr-run.log"
        self.procs[name] = start(run_command(app, CONNECTION, flat), log, self.env)
        return self.procs[name]

    def status(self) -> dict[str, str]:
        path = self.run_dir / "status.json"
        return json.loads(path.read_text()) if path.is_file() else {"status": "none"}

    def checkpoint(self, server_round: int) -> Path:
        return self.run_dir / "checkpoints" / f"round-{server_round:04d}.safetensors"

    def site_state(self, site: str) -> Path:
        return self.root / "state" / site

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop(proc)
