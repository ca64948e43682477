"""Where a site trains: `train.device` names the hardware, `resolve_device` finds it.

Models, batches, per-sample gradients and DP noise live on the resolved device. The noise is
drawn from the site's secret CPU generator and only then moved (`fedsynth.privacy.dp_sgd`), so
the stream a site keeps secret is the same on every device; checkpoints and shared arrays are
always written from CPU copies, so they load on any device.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means: "auto" is CUDA when torch sees a GPU, else Apple's MPS,
    else the CPU; a named accelerator torch cannot see is an error, not a silent CPU run."""
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
