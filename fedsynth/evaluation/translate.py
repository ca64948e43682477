"""Translate a whole NIfTI volume with a trained checkpoint, slice by slice.

The input goes through the same preprocessing as training (RAS, foreground mask, percentile
scaling, pad + resize); the synthetic slices are mapped back to the input's grid and
orientation. Output: same shape, affine and spatial header as the input, float32 in [0, 1]
(the model's [-1, 1] mapped linearly: 0 is the darkest, 1 the brightest intensity of the
training scale), background (outside the input's foreground mask) exactly 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from rich.progress import Progress

from fedsynth.data.layouts import DatasetError, normalise_modality
from fedsynth.data.preprocess import SlicePipeline, foreground_mask, load_volume
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
) -> Path:
    """Synthesise `target` from the volume at `source_path` and write it to `output`."""
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
    source = normalise_modality(source) if source else infer_modality(source_path)
    if source is None:
        source = model.default_source(target)
    if source is None:
        raise DatasetError(f"{source_path}: cannot tell its modality from the name; pass --source")
    if source not in mods or source == target:
        raise CheckpointError(
            f"{checkpoint}: cannot translate {source} → {target} (knows {'/'.join(mods)})"
        )

    volume, _ = load_volume(source_path)
    original = nib.load(str(source_path))
    mask = foreground_mask([volume], pre.foreground_threshold)
    pipe = SlicePipeline(pre)
    box = pipe.crop_box(mask)
    cropped = pipe.scale(volume, mask, source_path)[box]
    slices = pipe.to_slices(cropped, fill=-1.0)
    out = np.empty_like(slices)
    with torch.no_grad(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{source} → {target}", total=len(slices))
        for start in range(0, len(slices), batch_size):
            batch = torch.from_numpy(slices[start : start + batch_size])[:, None]
            out[start : start + batch_size] = model.translate(batch, source, target)[:, 0].numpy()
            bar.advance(task, len(batch))
    synth = np.zeros(volume.shape, np.float32)
    synth[box] = (np.clip(pipe.to_volume(out, cropped.shape), -1, 1) + 1) / 2
    synth[~mask] = 0.0
    _write_like(original, synth.astype(np.float32), Path(output))
    return Path(output)


def _write_like(original: nib.Nifti1Image, ras_data: np.ndarray, output: Path) -> None:
    """Undo the RAS reorientation and write with the original affine and header, atomically."""
    to_original = ornt_transform(axcodes2ornt("RAS"), io_orientation(original.affine))
    data = nib.orientations.apply_orientation(ras_data, to_original)
    header = original.header.copy()
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(data.astype(np.float32), original.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if output.name.endswith(".nii.gz") else ".nii"
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
