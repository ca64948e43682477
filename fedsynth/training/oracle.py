"""The paired-L1 oracle: the synthesis model's own generator trained with an L1 loss on
*paired* source/target slices (same subject, same position).

Real unpaired data never allows this - a hospital rarely has every contrast of every
training subject - but the phantom does, so the oracle is an upper bound for what the
unpaired CycleGAN / unified model can reach with the same generator architecture, data and
step budget. Only the network that `model.translate(source, target)` runs is trained (G_AB
of a CycleGAN, the label-conditioned G of the unified model); discriminators are unused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from fedsynth.data.slices import SliceSet
from fedsynth.models import SynthesisModel, build_model
from fedsynth.models.config import ModelConfig
from fedsynth.models.losses import l1_loss
from fedsynth.training.config import TrainConfig


def check_pairs(pairs: Mapping[str, SliceSet], source: str, target: str) -> None:
    """`pairs[source]` row i and `pairs[target]` row i must be the same subject and slice."""
    for name in (source, target):
        if name not in pairs:
            raise ValueError(f"paired training slices have no {name!r} (have {sorted(pairs)})")
    src, tgt = pairs[source], pairs[target]
    if len(src) == 0:
        raise ValueError("no paired training slices")
    if not (
        np.array_equal(src.subjects, tgt.subjects) and np.array_equal(src.positions, tgt.positions)
    ):
        raise ValueError(f"{source}/{target} training slices are not row-aligned pairs")


def paired_l1(
    model: SynthesisModel, pairs: Mapping[str, SliceSet], rows: np.ndarray | None = None
) -> float:
    """Mean L1 between model.translate(source) and the paired target (eval mode, no grad)."""
    cfg = model.config
    src, tgt = pairs[cfg.source].images, pairs[cfg.target].images
    rows = np.arange(len(src)) if rows is None else np.asarray(rows)
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            r = rows[start : start + 64]
            x = torch.from_numpy(np.asarray(src[r], np.float32))[:, None]
            y = torch.from_numpy(np.asarray(tgt[r], np.float32))[:, None]
            total += float(l1_loss(model.translate(x, cfg.source, cfg.target), y).sum())
    model.train(was_training)
    return total / max(len(rows), 1)


def train_paired_oracle(
    model_cfg: ModelConfig,
    pairs: Mapping[str, SliceSet],
    train_cfg: TrainConfig,
    model: SynthesisModel | None = None,
    steps: int | None = None,
) -> tuple[SynthesisModel, dict[str, float]]:
    """Train `model_cfg.source -> target` with L1 on paired slices for `steps` steps (default
    `train_cfg.steps`), batch `train_cfg.batch_size`, Adam with `train_cfg`'s lr schedule.

    Deterministic under `train_cfg.seed` (weights from `build_model(model_cfg, seed)`, batches
    from a torch.Generator). Returns the model (its `translate` is the trained direction)
    and metrics: first/last-10-step mean training L1, steps, seconds per step.
    """
    source, target = model_cfg.source, model_cfg.target
    check_pairs(pairs, source, target)
    steps = train_cfg.steps if steps is None else steps
    if steps < 0:
        raise ValueError(f"steps={steps}: expected >= 0")
    if model is None:
        model = build_model(model_cfg, seed=train_cfg.seed)
    model.train()
    params = list(model.group_parameters("generators").values())
    optimizer = torch.optim.Adam(params, lr=train_cfg.lr, betas=train_cfg.betas)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    src, tgt = pairs[source].images, pairs[target].images
    n, batch = len(src), min(train_cfg.batch_size, len(src))
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = train_cfg.learning_rate(step)
        rows = np.sort(torch.randperm(n, generator=generator)[:batch].numpy())
        x = torch.from_numpy(np.asarray(src[rows], np.float32))[:, None]
        y = torch.from_numpy(np.asarray(tgt[rows], np.float32))[:, None]
        loss = l1_loss(model.translate(x, source, target), y, reduction="mean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)
    metrics = {
        "steps": float(steps),
        "seconds_per_step": elapsed / steps if steps else 0.0,
        "l1_first": float(np.mean(losses[:10])) if losses else float("nan"),
        "l1_last": float(np.mean(losses[-10:])) if losses else float("nan"),
    }
    return model, metrics
