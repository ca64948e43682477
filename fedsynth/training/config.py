"""Training settings: one typed object, and the learning-rate schedule of the whole run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fedsynth.training.device import DEVICES, PRECISIONS

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (centralized, local-only or federated alike).

    steps: total optimisation steps of the WHOLE run (all rounds); the learning-rate schedule
        is defined over it, so it never runs past its end however the steps are split.
        One step = one generator update then one discriminator update.
    batch_size: slices per update without DP; the expected Poisson batch size with DP.
    lr, betas: Adam settings of both players (GAN defaults: 2e-4, (0.5, 0.999)).
    lr_schedule: "constant", "linear" (CycleGAN: constant, then linear decay to 0 from
        decay_start * steps to steps) or "cosine" (cosine decay to 0 from decay_start * steps).
    decay_start: fraction of the run after which the decay starts.
    seed: seeds the batch sampling, random target labels and DP noise.
    init_checkpoint: a public warm start (`fedsynth pretrain`), as a path or the name of a
        packaged one (`fedsynth.pretrained.PACKAGED`, e.g. "phantom-cyclegan-t1t2"): every run
        mode and the server's initial arrays start from its weights (None: from scratch).
    augmentations: K, augmentation multiplicity (De et al. 2022): each sampled slice is seen
        under K random flips/shifts and its loss gradients are averaged before clipping, so a
        unit still adds one gradient of norm <= C (the sensitivity is unchanged).
    device: where the site trains (`fedsynth.training.device`): "auto" (an accelerator when
        torch sees one, else the CPU), "cpu", "cuda" or "mps".
    precision: "fp32", "bf16" (autocast: convolutions and matmuls in bfloat16, weights,
        gradients, clipping and noise in fp32; `fedsynth.training.device.precision_context`),
        or "auto": bf16 where the device computes it natively and the run is not private.
    ema_decay: keep an exponential moving average of the generators' trained weights (0: off);
        the average is what a run reports and a site shares. Post-processing: no ε.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: str = "linear"
    decay_start: float = 0.5
    seed: int = 0
    init_checkpoint: Path | None = None
    augmentations: int = 1
    ema_decay: float = 0.0
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be an int > 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if not 0 <= self.decay_start <= 1:
            raise ValueError(f"TrainConfig.decay_start must be in [0, 1], got {self.decay_start!r}")
        if not isinstance(self.augmentations, int) or not 1 <= self.augmentations <= 64:
            raise ValueError(
                f"train.augmentations must be an int in [1, 64], got {self.augmentations!r}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema-decay must be in [0, 1), got {self.ema_decay!r}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if not isinstance(self.seed, int):
            raise ValueError(f"TrainConfig.seed must be an int, got {self.seed!r}")

    def learning_rate(self, step: int) -> float:
        """Learning rate of global step `step` (0-based). Bounded by construction: the step is
        clamped to [0, steps], so the rate stays in [0, lr] and never goes negative."""
        if self.lr_schedule == "constant":
            return self.lr
        start = self.decay_start * self.steps
        progress = (min(max(step, 0), self.steps) - start) / max(self.steps - start, 1e-12)
        progress = min(max(progress, 0.0), 1.0)
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - progress)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
