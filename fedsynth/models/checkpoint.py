"""Self-describing model checkpoints: safetensors weights whose header carries the model
config, the preprocessing that produced its training slices, and free metadata (round,
metrics, …). One file is enough to rebuild the model and translate new volumes."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fedsynth.data.config import PreprocessConfig
from fedsynth.models import ModelConfig, SynthesisModel, build_model

FORMAT = "fedsynth-checkpoint/1"


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
        "model": json.dumps(dataclasses.asdict(model.config)),
        "preprocess": json.dumps(dataclasses.asdict(preprocess)),
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
    if header.get("format") != FORMAT:
        found = header.get("format")
        raise CheckpointError(f"{path}: not a fedsynth checkpoint (format {found!r})")
    return header


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the model of a checkpoint and load its weights (strict: every key, every shape)."""
    header = read_header(path)
    config = ModelConfig(**json.loads(header["model"]))
    preprocess = PreprocessConfig(**json.loads(header["preprocess"]))
    model = build_model(config)
    weights = load_file(str(path))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit its model config ({err})") from err
    model.eval()
    return Checkpoint(model, preprocess, json.loads(header["meta"]))
