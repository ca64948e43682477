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

from fedsynth.data.layouts import DatasetError, SubjectRecord, normalise_modality
from fedsynth.data.preprocess import SlicePipeline, load_subject
from fedsynth.data.validation import Volume
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
) -> Path:
    """Synthesise `target` from the volume at `source_path` and write it to `output`."""
    source_path = Path(source_path)
    ckpt = load_checkpoint(checkpoint)
    model, pre = ckpt.model, ckpt.preprocess
    if image_size is not None and image_size != pre.image_size:
        raise CheckpointError(
            f"{checkpoint}: trained on {pre.image_size}-px slices, not {image_size}-px"
        )
    target = normalise_modality(target)
    mods = model.config.modalities
    if target not in mods:
        raise CheckpointError(
            f"{checkpoint}: cannot synthesise {target}; it knows {'/'.join(mods)}"
        )
    source = normalise_modality(source, source_path) if source else infer_modality(source_path)
    if source is None:
        source = model.default_source(target)
    if source is None:
        raise DatasetError(f"{source_path}: cannot tell its modality from the name; pass --source")
    if source not in mods or source == target:
        raise CheckpointError(
            f"{checkpoint}: cannot translate {source} → {target} (knows {'/'.join(mods)})"
        )

    # The input is a one-volume subject: the same validation and preprocessing as training.
    record = SubjectRecord(source_path.name, "", {source: source_path}, mask=mask_path)
    subject = load_subject(record, pre)
    pipe = SlicePipeline(pre)
    images, _, box = pipe.subject_slices(subject)
    slices, volume = images[source], subject.volumes[source]
    out = np.empty_like(slices)
    with torch.no_grad(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{source} → {target}", total=len(slices))
        for start in range(0, len(slices), batch_size):
            batch = torch.from_numpy(slices[start : start + batch_size])[:, None]
            out[start : start + batch_size] = model.translate(batch, source, target)[:, 0].numpy()
            bar.advance(task, len(batch))
    synth = np.zeros(volume.data.shape, np.float32)
    synth[box] = (np.clip(pipe.to_volume(out, volume.data[box].shape), -1, 1) + 1) / 2
    synth[~subject.mask] = 0.0
    _write_like(volume, synth, Path(output))
    return Path(output)


def _write_like(volume: Volume, ras_data: np.ndarray, output: Path) -> None:
    """Undo the RAS reorientation and write with the input's affine and header, atomically."""
    original = volume.image
    header = original.header.copy()
    header.set_data_dtype(np.float32)
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
