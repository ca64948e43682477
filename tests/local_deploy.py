"""What the deployment tests share (tests/test_deploy.py, tests/test_deploy_secure.py): the
tiny run config, the `federation` fixture (a `LocalFederation` stopped by PID in a finally;
it takes the requesting module's `data_root` fixture), and the bounded wait for `flwr run`."""

from __future__ import annotations

import json
import subprocess

import pytest

from fedsynth.config import FedsynthConfig
from fedsynth.deploy.local import LocalFederation
from fedsynth.simulations.scenarios import TINY_MODEL

SITES = ("hospA", "hospB", "hospC")
# The whole run config on top of pyproject's (the demo's recipe, whose 64-px warm start does
# not fit the tiny model): FedsynthConfig's defaults, slice-level DP from scratch, tiny sizes.
TINY = (
    FedsynthConfig().to_flat()
    | {"privacy.unit": "slice"}
    | TINY_MODEL
    | {
        "train.batch-size": 4,
        "federation.local-steps": 1,
        "federation.num-rounds": 2,
        "federation.round-timeout": 120.0,
    }
)


@pytest.fixture
def federation(tmp_path, data_root):
    fed = LocalFederation(tmp_path, data_root)
    try:
        yield fed
    finally:
        fed.stop_all()


def metrics_rows(fed: LocalFederation) -> list[dict]:
    """The server's metrics.jsonl, one dict per round."""
    return [json.loads(line) for line in (fed.run_dir / "metrics.jsonl").read_text().splitlines()]


def finish_run(proc: subprocess.Popen, fed: LocalFederation, timeout: float = 240) -> None:
    """Wait (bounded) for `flwr run`; it must exit 0 and the run's status.json say complete."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run still running after {timeout} s:\n{fed.log('flwr-run')[-3000:]}")
    assert code == 0, fed.log("flwr-run")[-3000:]
    assert fed.status()["status"] == "complete", fed.status()
