"""Self-describing model checkpoints: safetensors weights whose header carries the model
config, the preprocessing that produced its training slices, and free metadata (round,
metrics, …). One file is enough to rebuild the model and translate new volumes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fedsynth.data.config import PreprocessConfig
from fedsynth.flat import build, flatten
from fedsynth.models import ModelConfig, SynthesisModel, build_model

FORMAT = "fedsynth-checkpoint/2"
"""Version 2 stores the model and preprocessing in the run config's flat form (`model.*`,
`data.preprocess.*`, as in a run's config.json); version 1 (dataclass field names) still
loads."""
FORMATS = ("fedsynth-checkpoint/1", FORMAT)
MODEL, PREPROCESS = "model.", "data.preprocess."
LEGACY_PREPROCESS = {"scaling": "percentile"}
"""What a checkpoint means by leaving a preprocessing field out: it predates the field."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or not what the caller needs."""


@dataclass(frozen=True)
class Checkpoint:
    model: SynthesisModel
    preprocess: PreprocessConfig
    meta: dict[str, Any]


def save_checkpoint(
    path: Path,
    model: SynthesisModel,
    preprocess: PreprocessConfig,
    meta: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write atomically (temp file, then rename): an interrupted save never replaces a good
    checkpoint. `state` overrides the model's own state dict (e.g. aggregated weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in (state or model.state_dict()).items()}
    header = {
        "format": FORMAT,
        "config": json.dumps(flatten(model.config, MODEL) | flatten(preprocess, PREPROCESS)),
        "meta": json.dumps(meta or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: Path) -> dict[str, str]:
    """The checkpoint's metadata header, without loading weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    if header.get("format") not in FORMATS:
        found = header.get("format")
        raise CheckpointError(f"{path}: not a fedsynth checkpoint (format {found!r})")
    return header


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the model of a checkpoint and load its weights (strict: every key, every shape)."""
    header = read_header(path)
    config, preprocess = header_configs(header, path)
    model = build_model(config)
    weights = load_file(str(path))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit its model config ({err})") from err
    model.eval()
    return Checkpoint(model, preprocess, json.loads(header["meta"]))


def header_configs(header: dict[str, str], path: Path) -> tuple[ModelConfig, PreprocessConfig]:
    """The model and preprocessing configs of checkpoint `path`'s header, in either format."""
    if header["format"] == "fedsynth-checkpoint/1":
        model = ModelConfig(**json.loads(header["model"]))
        return model, PreprocessConfig(**LEGACY_PREPROCESS, **json.loads(header["preprocess"]))
    flat = {PREPROCESS + k: v for k, v in LEGACY_PREPROCESS.items()} | json.loads(header["config"])
    model, preprocess = build(ModelConfig, flat, MODEL), build(PreprocessConfig, flat, PREPROCESS)
    if flat:
        raise CheckpointError(f"{path}: unknown keys in the checkpoint's config {sorted(flat)}")
    return model, preprocess
