"""Translate a whole NIfTI volume with a trained checkpoint, slice by slice.

The input is validated and preprocessed exactly as training data are (`load_subject`: the
rules of `fedsynth.data.validation`, RAS, foreground mask, percentile scaling, pad + resize to
the checkpoint's slice size, whatever the input's size); the synthetic slices are mapped back
to the input's grid and orientation. The foreground is the given brain mask (a whole-head
input is then translated inside the brain only, as a model trained on brain-masked slices
expects), else the thresholded head. Output: the input's shape, affine and header (units,
description, qform/sform codes, voxel sizes), float32 in [0, 1] (the model's [-1, 1] mapped
linearly: 0 is the darkest, 1 the brightest intensity of the training scale), background
(outside the foreground) exactly 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from rich.progress import Progress

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import DatasetError, SubjectRecord, normalise_modality
from fedsynth.data.preprocess import SlicePipeline, SubjectVolumes, load_subject
from fedsynth.data.validation import Volume
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint


def infer_modality(path: Path) -> str | None:
    """The modality a file name ends with (`sub-01_T1w.nii.gz` → T1), if any."""
    stem = path.name.split(".")[0]
    for token in reversed(stem.replace("-", "_").split("_")):
        try:
            return normalise_modality(token)
        except DatasetError:
            continue
    return None


def translate_volume(
    checkpoint: Path,
    source_path: Path,
    target: str,
    output: Path,
    source: str | None = None,
    image_size: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    mask_path: Path | None = None,
    description: str | None = None,
) -> Path:
    """Synthesise `target` from the volume at `source_path` and write it to `output`;
    `description` (at most 80 characters) replaces the header's description field."""
    source_path = Path(source_path)
    ckpt = load_checkpoint(checkpoint)
    model, pre = ckpt.model, ckpt.preprocess
    if image_size is not None and image_size != pre.image_size:
        raise CheckpointError(
            f"{checkpoint}: trained on {pre.image_size}-px slices, not {image_size}-px"
        )
    source, target = check_direction(checkpoint, model, source_path, target, source)
    if description is not None and len(description.encode()) > 80:
        raise ValueError(f"NIfTI description {description!r}: longer than 80 bytes")
    subject, slices, box = source_slices(source_path, source, pre, mask_path)
    out = np.empty_like(slices)
    with torch.no_grad(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{source} → {target}", total=len(slices))
        for start in range(0, len(slices), batch_size):
            batch = torch.from_numpy(slices[start : start + batch_size])[:, None]
            out[start : start + batch_size] = model.translate(batch, source, target)[:, 0].numpy()
            bar.advance(task, len(batch))
    synth = synthetic_volume(pre, out, subject.mask, box)
    _write_like(subject.volumes[source], synth, Path(output), description)
    return Path(output)


def check_direction(
    checkpoint: Path | str,
    model: SynthesisModel,
    source_path: Path | None,
    target: str,
    source: str | None = None,
) -> tuple[str, str]:
    """(source, target) normalised and served by `model`: the source from `source`, else
    the file name, else the model's default for `target`; an error names what is wrong."""
    target = normalise_modality(target)
    mods = model.config.modalities
    if target not in mods:
        raise CheckpointError(
            f"{checkpoint}: cannot synthesise {target}; it knows {'/'.join(mods)}"
        )
    if source:
        source = normalise_modality(source, source_path)
    elif source_path is not None:
        source = infer_modality(Path(source_path))
    if source is None:
        source = model.default_source(target)
    if source is None:
        raise DatasetError(f"{source_path}: cannot tell its modality from the name; pass --source")
    if source not in mods or source == target:
        raise CheckpointError(
            f"{checkpoint}: cannot translate {source} → {target} (knows {'/'.join(mods)})"
        )
    return source, target


def source_slices(
    source_path: Path, source: str, pre: PreprocessConfig, mask_path: Path | None = None
) -> tuple[SubjectVolumes, np.ndarray, tuple[slice, slice, slice]]:
    """The input as a one-volume subject, validated and preprocessed as training data are:
    (the subject, its (Z, size, size) slices in [-1, 1], the crop box to map them back)."""
    source_path = Path(source_path)
    record = SubjectRecord(source_path.name, "", {source: source_path}, mask=mask_path)
    subject = load_subject(record, pre)
    images, _, box = SlicePipeline(pre).subject_slices(subject)
    return subject, images[source], box


def synthetic_volume(
    pre: PreprocessConfig,
    slices: np.ndarray,
    mask: np.ndarray,
    box: tuple[slice, slice, slice],
) -> np.ndarray:
    """Synthetic (Z, size, size) slices in [-1, 1] -> the RAS volume of `mask`'s grid,
    float32 in [0, 1], exactly 0 outside the foreground."""
    synth = np.zeros(mask.shape, np.float32)
    resized = SlicePipeline(pre).to_volume(slices, mask[box].shape)
    synth[box] = (np.clip(resized, -1, 1) + 1) / 2
    synth[~mask] = 0.0
    return synth


def _write_like(
    volume: Volume, ras_data: np.ndarray, output: Path, description: str | None = None
) -> None:
    """Undo the RAS reorientation and write with the input's affine and header, atomically."""
    original = volume.image
    header = original.header.copy()
    header.set_data_dtype(np.float32)
    if description is not None:
        header["descrip"] = description.encode()
    data = volume.to_stored(ras_data).astype(np.float32)
    img = nib.Nifti1Image(data, None, header=header)  # the affine is the header's own
    img.header.set_slope_inter(1.0, 0.0)
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if output.name.endswith(".nii.gz") else ".nii"
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
