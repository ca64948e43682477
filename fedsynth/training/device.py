"""Where a site trains: `train.device` names the hardware, `resolve_device` finds it;
`train.precision` says in what arithmetic the losses and gradients are computed there.

Models, batches, per-sample gradients and DP noise live on the resolved device. The noise is
drawn from the site's secret CPU generator and only then moved (`fedsynth.privacy.dp_sgd`), so
the stream a site keeps secret is the same on every device; checkpoints and shared arrays are
always written from CPU copies, so they load on any device.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is resolved, not by the config
    import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "auto")
BF16_WITH_DP = (
    "train.precision=bf16 is for training without DP: per-sample gradients (vmap of grad) "
    "under bf16 autocast fail in this torch (a dtype mismatch in the backward pass)"
)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means: "auto" is CUDA when torch sees a GPU, else Apple's MPS,
    else the CPU; a named accelerator torch cannot see is an error, not a silent CPU run."""
    import torch

    if name not in DEVICES:
        raise ValueError(f"train.device must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if not available[name]:
        raise ValueError(f"train.device={name}, but torch sees no {name.upper()} device here")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    whose oneDNN has bf16 kernels (AVX512-BF16 or AMX). Elsewhere torch emulates it: on an
    AVX2-only CPU here a bf16 matmul ran at 0.9 GFLOP/s against 106 in fp32."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device, private: bool) -> str:
    """The arithmetic a run uses: "auto" is bf16 where the device has it natively and the run
    is not private (DP's per-sample gradients need fp32), else fp32; an explicit "bf16" on
    hardware that only emulates it is kept, with a warning."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if not private and native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        log.warning(
            "train.precision=bf16 on a %s without native bfloat16: emulated, far slower than "
            "fp32 (train.precision=auto picks bf16 only where it is native)",
            device.type.upper(),
        )
    return precision


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What the losses and gradients are computed under (`precision` as resolved): fp32 as
    written, or bf16 autocast (convolutions and matmuls in bfloat16, weights, optimizer state,
    gradients, clipping and noise in fp32; no loss scaling needed). On a CPU with avx512_bf16
    a foundation-model step took 0.74 s instead of 1.21 s (benchmarks/generators.py)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)
