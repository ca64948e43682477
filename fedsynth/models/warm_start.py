"""Start a model from a public checkpoint (a warm start) instead of random weights.

DP-SGD from scratch does not learn at hospital data sizes (docs/architecture.md §4); fine-tuning a
model pretrained on public data does. Only the architecture has to agree: loss weights and
`trainable` are the fine-tuning run's own; so must the intensity scaling, since a model
trained on one [-1, 1] scale reads another as a different contrast. The registration network
(`pairing_loss=registered`) is a training aid, not part of the architecture: a run with it
starts R fresh from a checkpoint without one, and a run without it ignores a checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from fedsynth.data.config import PreprocessConfig
from fedsynth.models import ModelConfig, SynthesisModel, build_model
from fedsynth.models.base import REGISTRATION
from fedsynth.models.checkpoint import CheckpointError, header_configs, read_header
from fedsynth.models.config import ARCHITECTURE
from fedsynth.pretrained import checkpoint_path


def architecture_differences(saved: ModelConfig, ours: ModelConfig) -> dict[str, tuple]:
    """Architecture field -> (checkpoint's value, this run's value), for every disagreement."""
    return {
        name: (getattr(saved, name), getattr(ours, name))
        for name in ARCHITECTURE
        if getattr(saved, name) != getattr(ours, name)
    }


def _architecture(config: ModelConfig) -> str:
    return json.dumps({name: getattr(config, name) for name in ARCHITECTURE})


SCALING_FIELDS = ("scaling", "lower_percentile", "upper_percentile", "median_span")


def scaling_differences(saved: PreprocessConfig, ours: PreprocessConfig) -> dict[str, tuple]:
    """Intensity-scaling field -> (checkpoint's value, this run's value), for every field that
    disagrees and matters under the checkpoint's scaling."""
    unused = "median_span" if saved.scaling == "percentile" else "upper_percentile"
    return {
        name: (getattr(saved, name), getattr(ours, name))
        for name in SCALING_FIELDS
        if name != unused and getattr(saved, name) != getattr(ours, name)
    }


def load_warm_start(
    model: SynthesisModel, path: Path, preprocess: PreprocessConfig | None = None
) -> dict:
    """Load the weights of checkpoint `path` into `model`; returns the checkpoint's meta.

    A checkpoint of another architecture, or (given the run's `preprocess`) trained on
    another intensity scale, is a CheckpointError naming every field that differs.
    """
    header = read_header(path)
    saved, saved_pre = header_configs(header, path)
    scale = scaling_differences(saved_pre, preprocess) if preprocess is not None else {}
    if scale:
        fields = ", ".join(f"data.preprocess.{k}: {a!r} vs {b!r}" for k, (a, b) in scale.items())
        raise CheckpointError(
            f"train.init-checkpoint={path} was trained on other intensities than this run's "
            f"({fields}); set the checkpoint's values with --set"
        )
    diff = architecture_differences(saved, model.config)
    if diff:
        fields = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"train.init-checkpoint={path} does not fit this run's model ({fields}); "
            f"checkpoint model {_architecture(saved)}, this run's model "
            f"{_architecture(model.config)}"
        )
    _load_weights(model, load_file(str(path)), path)
    return json.loads(header["meta"])


def _load_weights(model: SynthesisModel, weights: dict, path: Path) -> None:
    """Every tensor of the synthesis networks, strictly; R's only when both have an R."""
    prefix = f"{REGISTRATION}."
    ours = model.state_dict()
    if not any(k.startswith(prefix) for k in ours):
        weights = {k: v for k, v in weights.items() if not k.startswith(prefix)}
    elif not any(k.startswith(prefix) for k in weights):
        weights = weights | {k: v for k, v in ours.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"train.init-checkpoint={path}: {err}") from err


def initial_model(
    config: ModelConfig,
    seed: int,
    init_checkpoint: Path | None,
    preprocess: PreprocessConfig | None = None,
) -> SynthesisModel:
    """The model a run starts from: random weights from `seed`, or the warm start (checked
    against the run's `preprocess` when given)."""
    model = build_model(config, seed=seed)
    if init_checkpoint is not None:
        load_warm_start(model, checkpoint_path(init_checkpoint), preprocess)
    return model


__all__ = ["architecture_differences", "initial_model", "load_warm_start", "scaling_differences"]
