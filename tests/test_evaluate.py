"""`fedsynth evaluate` end to end: the segmenter learns on phantom data, a run directory's
evaluation reproduces the run report's PSNR, and a checkpoint is scored in every direction it
serves."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset
from flower_grid import ClientAppGrid, set_task_identity

from fedsynth.cli import main
from fedsynth.client.app import app as client_app
from fedsynth.config import FedsynthConfig
from fedsynth.data.config import DataConfig, PreprocessConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.evaluation.labels import label_scheme
from fedsynth.evaluation.segmentation import SegmentationMetrics, SegmenterConfig, train_segmenter
from fedsynth.evaluation.suite import SOURCE_AS_IS, evaluate_direction
from fedsynth.server.app import run_federation
from fedsynth.simulations.scenarios import TINY_MODEL

QUICK_SEGMENTER = SegmenterConfig(steps=200)


def test_segmenter_learns_on_phantom_data(tmp_path: Path) -> None:
    """Trained on one subject's real T2 slices (64 px), it segments held-out subjects' real T2
    with tissue Dice > 0.8, and the same network finds far less on T1 slices (the metric
    sees a wrong contrast)."""
    root = tmp_path / "phantom"
    generate_phantom(
        PhantomConfig(sites=1, subjects_per_site=4, modalities=("T1", "T2")), root, False
    )
    data = DataConfig(
        root=root, preprocess=PreprocessConfig(image_size=64), cache_dir=tmp_path / "cache"
    )
    site = prepare_sites(data, progress=False)[0][0]
    real = site.test["T2"]
    assert real.labels is not None
    segmenter = train_segmenter(site.train["T2"], QUICK_SEGMENTER)
    scheme = label_scheme(root, "bids", set(np.unique(real.labels).tolist()))
    dice = SegmentationMetrics(scheme.classes())
    dice.update(segmenter.predict(real.images, real.masks), real.labels, real.subjects)
    on_real = dice.aggregate()
    assert on_real["dice_tissue_mean"] > 0.8, on_real
    assert on_real["dice_gm"] > 0.8 and on_real["dice_wm"] > 0.8, on_real

    from fedsynth.evaluation.suite import Segmentation

    copy = evaluate_direction(
        SOURCE_AS_IS, site.test, ("T1", "T2"), Segmentation({"T2": segmenter}, scheme)
    )
    assert copy.summary["dice_tissue_mean"] < on_real["dice_tissue_mean"] - 0.3


TINY = TINY_MODEL | {
    "privacy.enabled": False,
    "federation.num-rounds": 2,
    "federation.local-steps": 2,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("evaluate")
    data = write_tiny_dataset(base / "data", sites=("hospA", "hospB"), n=4)
    cfg = FedsynthConfig.from_flat(
        TINY
        | {
            "data.root": str(data),
            "data.cache-dir": str(base / "cache"),
            "federation.run-dir": str(base / "run"),
        }
    )
    sites, _ = prepare_sites(cfg.data, progress=False)
    nodes = [{"partition-id": i, "num-partitions": len(sites)} for i in range(len(sites))]
    with pytest.MonkeyPatch.context() as mp:
        set_task_identity(mp)
        run_federation(
            ClientAppGrid(client_app, nodes, run_config=cfg.to_flat()),
            cfg,
            sites,
            {0: "hospA", 1: "hospB"},
        )
    return base / "run"


def test_evaluate_on_a_run_directory_reproduces_the_report_psnr(run_dir: Path) -> None:
    assert main(["evaluate", str(run_dir)]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reported = rows[-1]["server"]["psnr_brain"]  # what report.md's "federated" row shows
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    assert summary["federated"]["T1→T2"]["psnr_brain"] == pytest.approx(reported, abs=1e-9)
    assert set(summary["federated"]) == {"T1→T2", "T2→T1"}  # CycleGAN serves both
    assert set(summary) == {"real target", "source as-is", "federated"}
    assert summary["federated"]["T1→T2"]["hfen"] > 0  # no labels: no Dice, still frequency
    assert "dice_csf" not in summary["federated"]["T1→T2"]
    report = (run_dir / "report.md").read_text()
    assert f"{reported:.2f}" in report and "## Evaluation" in report
    assert "| federated | T1→T2 |" in report and (run_dir / "evaluation/kspace_bands.png").is_file()


def test_evaluate_a_checkpoint_on_a_dataset(run_dir: Path, tmp_path: Path) -> None:
    flat = json.loads((run_dir / "config.json").read_text())
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--checkpoint", str(run_dir / "checkpoints" / "round-0001.safetensors"),
            "--data", flat["data.root"],
            "--set", f"data.cache-dir={flat['data.cache-dir']}",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    with (out / "subjects.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    test_subjects = {r["subject"] for r in rows}
    assert len(test_subjects) == 2  # one held-out subject per site
    assert {(r["row"], r["direction"]) for r in rows} >= {("model", "T1→T2"), ("model", "T2→T1")}
    assert main(["evaluate", str(run_dir), "--checkpoint", "x"]) == 2  # one or the other
