"""`fedsynth simulate` on Flower's simulation engine (Ray) through `flwr run` and a private
simulation SuperLink: real virtual SuperNodes, the same ClientApp and ServerApp as a
deployment. One small end-to-end run (≈1 min)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_dataset


def test_simulate_two_sites_two_rounds(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", sites=("hospA", "hospB"), n=4)
    run = tmp_path / "run"
    # An earlier, complete run in the same directory (re-running `make demo`): its files must
    # not pass for this run's, nor its status hide a run that never started.
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "status.json").write_text('{"status": "complete", "reason": ""}')
    (run / "metrics.jsonl").write_text('{"round": 5}\n')
    (run / "checkpoints" / "round-0005.safetensors").write_bytes(b"old")
    cmd = [
        sys.executable, "-m", "fedsynth.cli", "simulate", "--scenario", "phantom-3site",
        "--data", str(data), "--size", "32", "--out", str(run), "--baselines",
        "--set", f"data.cache-dir={tmp_path / 'cache'}",
        "--set", "model.base-channels=4", "--set", "model.res-blocks=1",
        "--set", "model.disc-channels=4", "--set", "model.disc-layers=2",
        "--set", "federation.num-rounds=2", "--set", "federation.local-steps=2",
    ]
    env = os.environ | {"FLWR_HOME": str(tmp_path / "flwr"), "FEDSYNTH_CACHE": str(tmp_path / "c")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert {s: v["train_status"] for s, v in rows[-1]["sites"].items()} == {
        "hospA": "accepted", "hospB": "accepted"}
    assert (run / "checkpoints" / "round-0002.safetensors").is_file()
    assert not (run / "checkpoints" / "round-0005.safetensors").exists()
    assert "round 1/2" in done.stdout
    report = (run / "report.md").read_text()
    for method in ("federated", "centralized", "local", "source-as-is"):
        assert f"| {method} |" in report
    assert "round 2/2" in done.stdout
    # Flower's supported entry, its and Ray's chatter kept in the run's Flower logs.
    shown = done.stdout + done.stderr
    for noise in ("DEPRECATED", "FutureWarning", "Manually terminating", "ClientAppActor"):
        assert noise not in shown
    assert "Successfully started run" in (run / "flower" / "run.log").read_text()
    # The private SuperLink is gone with the run.
    port = int(re.search(r"runtime on 127\.0\.0\.1:(\d+)", shown).group(1))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_fresh_run_never_deletes_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    from fedsynth.server.run_dir import RunDirectory

    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a fedsynth run directory"):
        RunDirectory(precious).discard_previous()
    assert (precious / "thesis.tex").read_text() == "keep me"
    RunDirectory(tmp_path / "new").discard_previous()  # nothing there: nothing to do


def test_the_link_waits_for_its_own_superlink_not_an_old_log(tmp_path: Path) -> None:
    """A resumed run keeps its Flower logs: an earlier SuperLink's "Uvicorn running" line must
    not pass for this one listening (flwr run would then find no SuperLink)."""
    from fedsynth.simulations.runtime import SimulationLink

    (tmp_path / "superlink.log").write_text("INFO Uvicorn running on http://127.0.0.1:1\n")
    with SimulationLink(tmp_path) as link, socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", link.port)) == 0
