"""What may leave a site, written down independently of the code under test: the shared
tensors are the state-dict entries under the shared networks' prefixes (minus normalisation
layers under FedBN), and metrics come from a fixed allow-list of names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

NETWORK_PREFIXES = {
    ("cyclegan", "generators"): ("G_AB.", "G_BA."),
    ("cyclegan", "discriminators"): ("D_A.", "D_B."),
    ("unified", "generators"): ("G.",),
    ("unified", "discriminators"): ("D.",),
}
TRAIN_METRICS = {
    "num-examples",
    "site-id",
    "privacy-unit",
    "steps",
    "global_step",
    "lr",
    "budget_exhausted",
    "epsilon",
    "delta",
    "sample_rate",
    "noise_multiplier",
    "epsilon-left",
}
EVALUATE_METRICS = {
    "num-examples",
    "site-id",
    "psnr_brain",
    "ssim_brain",
    "mae_brain",
    "psnr_whole",
    "ssim_whole",
    "mae_whole",
}


def expected_shared_keys(
    model: nn.Module, kind: str, groups: Iterable[str], keep_norm_local: bool = False
) -> list[str]:
    """State-dict keys under the groups' network prefixes, in state-dict order; with FedBN,
    without the entries of InstanceNorm/GroupNorm modules."""
    prefixes = tuple(p for g in groups for p in NETWORK_PREFIXES[(kind, g)])
    norms = {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if isinstance(module, (nn.InstanceNorm2d, nn.GroupNorm))
        for key in module.state_dict()
    }
    order = {p: i for i, p in enumerate(prefixes)}
    keys = [k for k in model.state_dict() if k.startswith(prefixes)]
    keys = [k for k in keys if not (keep_norm_local and k in norms)]
    return sorted(keys, key=lambda k: order[next(p for p in prefixes if k.startswith(p))])


def unexpected_metrics(metrics: Mapping[str, object], phase: str) -> set[str]:
    """Metric names outside the phase's allow-list (an empty set is what a test wants)."""
    allowed = TRAIN_METRICS if phase == "train" else EVALUATE_METRICS
    return set(metrics) - allowed
