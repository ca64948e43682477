"""The paired-L1 oracle: trains the model's own translation network on paired slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_slices import SIZE, tiny_config

from fedsynth.data.slices import SliceSet
from fedsynth.models import build_model
from fedsynth.training import TrainConfig
from fedsynth.training.oracle import check_pairs, paired_l1, train_paired_oracle


def paired_set(n: int = 16, seed: int = 0) -> dict[str, SliceSet]:
    """T2 = a fixed non-linear intensity map of T1 (a learnable paired translation)."""
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(-1, 1, (n, SIZE, SIZE)).astype(np.float32)
    t2 = (-0.8 * t1 + 0.3 * t1**2 - 0.1).astype(np.float32)
    subjects = np.array([f"sub{i // 4}" for i in range(n)])
    positions = np.arange(n) % 4
    masks = np.ones((n, SIZE, SIZE), dtype=bool)
    return {
        "T1": SliceSet("T1", t1, masks, subjects, positions),
        "T2": SliceSet("T2", t2, masks, subjects, positions),
    }


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_oracle_reduces_paired_l1(kind: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(kind)
    pairs = paired_set()
    before = paired_l1(build_model(cfg, seed=0), pairs)
    model, metrics = train_paired_oracle(
        cfg, pairs, TrainConfig(steps=40, batch_size=4, lr=2e-3, lr_schedule="constant")
    )
    after = paired_l1(model, pairs)
    assert after < 0.8 * before
    assert metrics["steps"] == 40 and metrics["l1_last"] < metrics["l1_first"]
    # Only the translation network learns: the discriminators keep their initial weights.
    fresh = build_model(cfg, seed=0).state_dict()
    for key in model.group_keys("discriminators"):
        assert torch.equal(model.state_dict()[key], fresh[key])


def test_oracle_is_deterministic() -> None:
    cfg, pairs, train = tiny_config(), paired_set(), TrainConfig(steps=3, batch_size=4)
    a, _ = train_paired_oracle(cfg, pairs, train)
    b, _ = train_paired_oracle(cfg, pairs, train)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_oracle_rejects_unpaired_slices() -> None:
    pairs = paired_set()
    shuffled = pairs["T2"].take(np.arange(len(pairs["T2"]))[::-1])
    with pytest.raises(ValueError, match="row-aligned"):
        check_pairs({"T1": pairs["T1"], "T2": shuffled}, "T1", "T2")
    with pytest.raises(ValueError, match="no 'T2'"):
        train_paired_oracle(tiny_config(), {"T1": pairs["T1"]}, TrainConfig(steps=1))
