"""The exact command lines of a deployment, built in one place so that the README, the
`fedsynth deploy` subcommands, the tests and the benchmark all start the same processes.

Flower's own deployment engine does the work: `flower-superlink` at the coordinating site,
one `flower-supernode` per hospital, `flwr run` to start a federated run. What fedsynth adds:
the flags that must go together (TLS, SuperNode authentication, a persistent state database,
no runtime `uv sync`), absolute paths in the node config, and the environment every process
needs (`deployment_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from fedsynth.deploy.certs import ServerCertificates


def flower_bin(name: str) -> str:
    """A Flower executable from this environment (works without an activated venv)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else name


def deployment_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every deployment process.

    FLWR_TELEMETRY_ENABLED=0: Flower otherwise posts usage events from every process (a
    hospital machine should not call out) and waits up to 4 s for each at exit — once per
    message, since each message runs in a fresh `flwr-clientapp` process.
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1: no `uv sync` of the app at each run.
    OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep (10-40x faster steps on busy cores).
    PATH starts with this environment's bin: the SuperLink/SuperNode start `flower-superexec`
    and `flwr-clientapp` by name.
    """
    env = dict(os.environ if base is None else base)
    env |= {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    }
    return env


def superlink_command(
    certs: ServerCertificates | None, port: int, database: Path, host: str = "0.0.0.0"
) -> list[str]:
    """`flower-superlink` with TLS (None: plain HTTP, for a trial on one machine only) and
    SuperNode authentication; `database` keeps registered nodes and runs across restarts."""
    cmd = [flower_bin("flower-superlink"), "--host", host, "--port", str(port)]
    cmd += ["--database", str(Path(database).resolve())]
    cmd += ["--enable-supernode-auth", "--disable-runtime-dependency-installation"]
    if certs is None:
        return cmd + ["--insecure"]
    return cmd + [
        "--ssl-ca-certfile", str(certs.ca_cert.resolve()),
        "--ssl-certfile", str(certs.server_cert.resolve()),
        "--ssl-keyfile", str(certs.server_key.resolve()),
    ]  # fmt: skip


def simulation_superlink_command(port: int) -> list[str]:
    """`flower-superlink --simulation` for runs on this machine only: loopback, plain HTTP
    (nothing leaves the host), state in memory; each run goes to Flower's simulation runtime
    (`flwr-simulation`, Ray backend) instead of SuperNodes."""
    cmd = [flower_bin("flower-superlink"), "--simulation", "--insecure"]
    return cmd + [
        "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"
    ]  # fmt: skip


def node_config(
    data_dir: Path, site: str, state_dir: Path, epsilon_budget: float | None = None
) -> str:
    """The `--node-config` string the ClientApp reads (absolute paths, quoted TOML strings)."""
    items = {
        "data-dir": str(Path(data_dir).resolve()),
        "site": site,
        "state-dir": str(Path(state_dir).resolve()),
    }
    text = " ".join(f"{k}={json.dumps(v)}" for k, v in items.items())
    return text if epsilon_budget is None else f"{text} epsilon-budget={float(epsilon_budget)}"


def supernode_command(
    superlink: str,
    ca_cert: Path | None,
    private_key: Path,
    port: int,
    config: str,
) -> list[str]:
    """`flower-supernode` for one hospital: `superlink` is host:port, `port` this node's own
    local API port (one per SuperNode on a machine), `config` from `node_config`."""
    cmd = [flower_bin("flower-supernode"), "--superlink", superlink, "--port", str(port)]
    cmd += ["--auth-supernode-private-key", str(Path(private_key).resolve())]
    cmd += ["--node-config", config]
    if ca_cert is None:
        return cmd + ["--insecure"]
    return cmd + ["--root-certificates", str(Path(ca_cert).resolve())]


def toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _assignments(config: Mapping[str, bool | int | float | str]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def run_command(
    app_dir: Path,
    connection: str,
    run_config: Mapping[str, bool | int | float | str],
    federation_config: Mapping[str, bool | int | float | str] | None = None,
) -> list[str]:
    """`flwr run APP CONNECTION --stream` with flat `FedsynthConfig` keys as run config and,
    for a simulation SuperLink, Flower's federation config (`num-supernodes`, …)."""
    cmd = [flower_bin("flwr"), "run", str(Path(app_dir).resolve()), connection, "--stream"]
    if run_config:
        cmd += ["--run-config", _assignments(run_config)]
    if federation_config:
        cmd += ["--federation-config", _assignments(federation_config)]
    return cmd


def register_command(public_key: Path, connection: str) -> list[str]:
    """`flwr supernode register KEY.pub CONNECTION`: put a hospital on the allow-list."""
    return [
        flower_bin("flwr"),
        "supernode",
        "register",
        str(Path(public_key).resolve()),
        connection,
    ]


@contextlib.contextmanager
def flwr_home(path: Path) -> Iterator[None]:
    """Flower's CLI helpers (`write_connection`) read $FLWR_HOME from this process's
    environment: point it at `path` for the block."""
    old = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FLWR_HOME")
        else:
            os.environ["FLWR_HOME"] = old


def write_connection(name: str, address: str, ca_cert: Path | None) -> Path:
    """Add `[superlink.NAME]` to `$FLWR_HOME/config.toml` with Flower's own writer (Flower
    reads connections only from there, not from pyproject.toml). A new file gets this
    connection as its default (Flower's own default file would come with a printed notice)."""
    from flwr.cli.flower_config import write_flower_config, write_superlink_connection
    from flwr.cli.typing import SuperLinkConnection
    from flwr.supercore.utils import get_flwr_home

    if not (get_flwr_home() / "config.toml").is_file():
        get_flwr_home().mkdir(parents=True, exist_ok=True)
        write_flower_config({"superlink": {"default": name}})

    if ca_cert is None:
        connection = SuperLinkConnection(name, address=address, insecure=True)
    else:
        connection = SuperLinkConnection(
            name, address=address, root_certificates=str(Path(ca_cert).resolve())
        )
    write_superlink_connection(connection)
    return get_flwr_home() / "config.toml"
