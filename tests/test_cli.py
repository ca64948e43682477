"""The `fedsynth` command: each job end to end on tiny data, and errors as one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_tiny_dataset

from fedsynth.cli import main

TINY = [
    "--size",
    "32",
    "--set",
    "model.base-channels=4",
    "--set",
    "model.res-blocks=1",
    "--set",
    "model.disc-channels=4",
    "--set",
    "model.disc-layers=2",
]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDSYNTH_CACHE", str(tmp_path / "cache"))
    return write_tiny_dataset(tmp_path / "data", sites=("hospA", "hospB"), n=4)


def test_prepare_prints_the_split(data: Path, capsys) -> None:
    assert main(["prepare", "--data", str(data), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "hospA" in out and "hospB" in out and "test pairs" in out


def test_train_baselines(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "base"
    assert main(["train", "--data", str(data), "--steps", "2", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "baselines.json").read_text())
    assert set(results) == {"source-as-is", "centralized", "local:hospA", "local:hospB", "local"}
    assert results["centralized"]["epsilon"] > 0  # DP is on by default
    assert (out / "centralized.safetensors").is_file() and (out / "local-hospA.png").is_file()
    assert "centralized" in capsys.readouterr().out


def test_train_without_dp_reports_no_epsilon(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nodp"
    assert (
        main(
            [
                "train",
                "--mode",
                "centralized",
                "--no-dp",
                "--data",
                str(data),
                "--steps",
                "2",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    assert "epsilon" not in json.loads((out / "baselines.json").read_text())["centralized"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "model.bogus=1"], "unknown config key 'model.bogus'"),
        (["--set", "train.steps"], "expected KEY=VALUE"),
        (["--set", "train.steps=many"], "train.steps='many': expected int"),
        (["--set", "model.image-size=48"], "derived from data.preprocess.image-size"),
    ],
)
def test_bad_config_is_one_clear_error(data: Path, tmp_path: Path, argv, message, capsys) -> None:
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().out.replace("\n", " ")


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["prepare", "--data", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--steps", "5"], ["--set", "train.steps=5"]])
def test_simulate_refuses_steps_it_would_ignore(flag: list[str], data: Path, capsys) -> None:
    assert main(["simulate", "--data", str(data), *flag]) == 2
    assert "federation.num-rounds × federation.local-steps" in capsys.readouterr().out


def test_unknown_strategy_is_refused_before_a_run_directory_exists(
    data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "never"
    args = ["simulate", "--data", str(data), "--out", str(out)]
    assert main([*args, "--set", "federation.strategy=fedmagic"]) == 2
    assert "federation.strategy='fedmagic'" in capsys.readouterr().out
    assert not out.exists()
