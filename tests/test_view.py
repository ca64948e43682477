"""The live view: a finished quick federation leaves TensorBoard event files (read back with
TensorBoard's own event reader), `fedsynth view RUN` serves them on a loopback port (checked
through TensorBoard's HTTP data API), and headless Chromium renders the page (screenshot kept
as a test artefact). Chromium absent: the browser test skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import write_tiny_dataset
from flower_grid import ClientAppGrid, set_task_identity

from fedsynth.client.app import app as client_app
from fedsynth.config import FedsynthConfig
from fedsynth.data.pipeline import prepare_sites
from fedsynth.server.app import run_federation
from fedsynth.simulations.scenarios import TINY_MODEL

SITES = ("hospA", "hospB")
ROUNDS = 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick DP federation (2 sites, 2 rounds × 2 steps, 32 px) run to completion."""
    root = tmp_path_factory.mktemp("view")
    data = write_tiny_dataset(root / "data", sites=SITES, n=4)
    run_dir = root / "run"
    cfg = FedsynthConfig.from_flat(
        FedsynthConfig().to_flat()
        | TINY_MODEL
        | {
            "privacy.unit": "slice",
            "federation.num-rounds": ROUNDS,
            "federation.local-steps": 2,
            "federation.min-nodes": 2,
            "data.root": str(data),
            "data.cache-dir": str(root / "cache"),
            "federation.run-dir": str(run_dir),
        }
    )
    sites, _ = prepare_sites(cfg.data, progress=False)
    nodes = [{"partition-id": i, "num-partitions": len(sites)} for i in range(len(sites))]
    with pytest.MonkeyPatch.context() as mp:
        set_task_identity(mp)
        grid = ClientAppGrid(client_app, nodes, run_config=cfg.to_flat())
        run_federation(grid, cfg, sites, {i: s.site for i, s in enumerate(sites)})
    return run_dir


def test_each_round_writes_scalars_and_the_sample_grid(finished_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    rounds = list(range(1, ROUNDS + 1))
    lines = (finished_run / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    expected = {
        "server/psnr_brain",
        "server/ssim_brain",
        "psnr_brain/T1_T2",
        "ssim_brain/T1_T2",
        "round/seconds",
        "round/updates_rejected",
        *(f"epsilon/{s}" for s in SITES),
    }
    assert expected <= set(tags["scalars"]), tags["scalars"]
    for tag in expected:
        assert [e.step for e in events.Scalars(tag)] == rounds, tag
    for row in metrics:  # the same numbers as the metrics file, round by round
        step = row["round"]
        for site in SITES:
            (eps,) = [e.value for e in events.Scalars(f"epsilon/{site}") if e.step == step]
            assert eps == pytest.approx(row["sites"][site]["train/epsilon"], rel=1e-6)
            assert eps > 0
        (psnr,) = [e.value for e in events.Scalars("server/psnr_brain") if e.step == step]
        assert psnr == pytest.approx(row["server"]["psnr_brain"], rel=1e-6)
    assert all(e.value == 0 for e in events.Scalars("round/updates_rejected"))
    assert all(e.value > 0 for e in events.Scalars("round/seconds"))
    assert "samples" in tags["images"]
    images = events.Images("samples")
    assert [i.step for i in images] == rounds
    assert all(i.encoded_image_string.startswith(b"\x89PNG") for i in images)
    report = (finished_run / "report.md").read_text()
    assert "synthetic images: not for diagnosis" in report
    assert f"fedsynth view {finished_run}" in report


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@pytest.fixture
def view(finished_run: Path):
    """`fedsynth view RUN` as a user starts it; yields its URL; stopped by PID."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsynth.cli", "view", str(finished_run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url, seen, deadline = None, [], time.monotonic() + 90
    try:
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            seen.append(line)
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = found.group(0) if found else None
        assert url is not None, "".join(seen)
        while time.monotonic() < deadline:  # the server answers once its thread is up
            try:
                _get(url + "data/runs")
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        proc.stdout.close()


def test_view_serves_the_run_through_tensorboards_api(view: str) -> None:
    assert view.startswith("http://127.0.0.1:")
    scalar_tags = json.loads(_get(view + "data/plugin/scalars/tags"))
    (run,) = scalar_tags  # one run: the run directory's event files
    assert {"server/psnr_brain", "epsilon/hospA", "round/seconds"} <= set(scalar_tags[run])
    query = urllib.parse.urlencode({"run": run, "tag": "epsilon/hospB"})
    points = json.loads(_get(view + "data/plugin/scalars/scalars?" + query))
    assert [p[1] for p in points] == list(range(1, ROUNDS + 1)) and points[-1][2] > 0
    image_tags = json.loads(_get(view + "data/plugin/images/tags"))
    assert "samples" in image_tags[run]
    query = urllib.parse.urlencode({"run": run, "tag": "samples", "sample": 0})
    entries = json.loads(_get(view + "data/plugin/images/images?" + query))
    assert [e["step"] for e in entries] == list(range(1, ROUNDS + 1))
    png = _get(view + "data/plugin/images/individualImage?" + entries[-1]["query"])
    assert png.startswith(b"\x89PNG")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_page_renders_in_a_real_browser(view: str, tmp_path: Path) -> None:
    """Headless Chromium loads the TensorBoard page of the finished run; the rendered page
    shows the run's scalar cards, and the screenshot stays as an artefact."""
    screenshot = tmp_path / "tensorboard.png"
    profile = tmp_path / "chromium-profile"
    base = [
        shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
    ]
    page = view + "#timeseries"
    dom = subprocess.run(
        [*base, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "TensorBoard" in dom
    assert "epsilon/hospA" in dom and "psnr_brain/T1_T2" in dom, dom[:2000]
    subprocess.run(
        [*base, f"--screenshot={screenshot}", page], capture_output=True, timeout=120, check=True
    )
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
    print(f"\nTensorBoard screenshot: {screenshot}")
