"""What a fedsynth MONAI bundle imports when it runs (`configs/inference.json` names these):
the generator for one direction, and the two dictionary transforms that put fedsynth's own
preprocessing between MONAI's loader/orientation and MONAI's inverse/saver.

The transforms call the package's functions (`fedsynth.evaluation.translate.source_slices`:
validation, foreground mask, intensity scaling, crop, pad and resize; `synthetic_volume`: back
to the volume), never a copy of them, so a bundle preprocesses exactly as `fedsynth translate`
and training do, whatever scaling the installed fedsynth uses. Light on imports: no Flower.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from torch import Tensor, nn

from fedsynth.data.config import PreprocessConfig
from fedsynth.evaluation.translate import source_slices, synthetic_volume
from fedsynth.flat import build
from fedsynth.models import ModelConfig, build_model
from fedsynth.models.checkpoint import MODEL, PREPROCESS

MASK_SUFFIX, BOX_SUFFIX = "_fedsynth_mask", "_fedsynth_box"
"""Keys (after the image key) that carry the foreground mask and crop box to postprocessing."""


def preprocess_config(flat: Mapping[str, Any]) -> PreprocessConfig:
    """`data.preprocess.*` keys (as in a checkpoint header) -> the typed config."""
    return build(PreprocessConfig, dict(flat), PREPROCESS)


class BundleGenerator(nn.Module):
    """A fedsynth model's generator for one direction: (N, 1, H, W) `source` slices in
    [-1, 1] -> (N, 1, H, W) `target` slices in [-1, 1].

    Args:
        model: the model config as flat `model.*` keys (a checkpoint header's form).
        source, target: the contrasts, e.g. "T1" and "T2".
    """

    def __init__(self, model: Mapping[str, Any], source: str, target: str) -> None:
        super().__init__()
        config: ModelConfig = build(ModelConfig, dict(model), MODEL)
        for name, modality in (("source", source), ("target", target)):
            if modality not in config.modalities:
                raise ValueError(f"{name} {modality!r}: the model knows {config.modalities}")
        self.model = build_model(config)
        self.source, self.target = source, target

    def forward(self, images: Tensor) -> Tensor:
        return self.model.translate(images, self.source, self.target)


class FedsynthSlicesd(MapTransform):
    """A volume (channel first, RAS, read by LoadImaged from a file) -> its (1, size, size,
    Z) axial slices in [-1, 1], preprocessed by fedsynth from the same file; the foreground
    mask and crop box go under KEY + MASK_SUFFIX / BOX_SUFFIX, the image's metadata and
    transform trace stay on the slices (so Invertd can undo the orientation).

    Args:
        keys: image keys.
        source: the contrast of the images, e.g. "T1".
        preprocess: `data.preprocess.*` keys of the checkpoint.
        mask_key: key of an optional brain-mask file (as `fedsynth translate --mask`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        source: str,
        preprocess: Mapping[str, Any],
        mask_key: str = "mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source, self.mask_key = source, mask_key
        self.pre = preprocess_config(preprocess)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            path = Path(str(image.meta.get("filename_or_obj", "")))
            if not path.is_file():
                raise ValueError(f"{key}: fedsynth preprocesses files; {path} is not one")
            mask = d.get(self.mask_key)
            subject, slices, box = source_slices(
                path, self.source, self.pre, Path(mask) if mask else None
            )
            if tuple(subject.mask.shape) != tuple(image.shape[1:]):
                raise ValueError(
                    f"{path}: MONAI read shape {tuple(image.shape[1:])} in RAS, fedsynth "
                    f"{subject.mask.shape}; put Orientationd(axcodes='RAS') before this"
                )
            volume = torch.from_numpy(np.ascontiguousarray(np.moveaxis(slices, 0, -1)[None]))
            d[key] = MetaTensor(
                volume,
                meta=copy.deepcopy(image.meta),
                applied_operations=copy.deepcopy(image.applied_operations),
            )
            d[f"{key}{MASK_SUFFIX}"] = subject.mask
            d[f"{key}{BOX_SUFFIX}"] = np.array(
                [b.indices(n)[:2] for b, n in zip(box, subject.mask.shape, strict=True)]
            )
        return d


class FedsynthVolumed(MapTransform):
    """Synthetic (1, size, size, Z) slices -> the source's RAS volume in [0, 1], exactly 0
    outside the foreground (`fedsynth translate`'s output), carrying the metadata and trace of
    `ref_key` (the preprocessed image) for Invertd and SaveImaged.

    Args:
        keys: prediction keys.
        ref_key: the image key FedsynthSlicesd wrote.
        preprocess: `data.preprocess.*` keys of the checkpoint.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ref_key: str,
        preprocess: Mapping[str, Any],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.pre = preprocess_config(preprocess)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        mask = np.asarray(torch.as_tensor(d[f"{self.ref_key}{MASK_SUFFIX}"]).cpu()).astype(bool)
        box = tuple(
            slice(int(a), int(b))
            for a, b in np.asarray(torch.as_tensor(d[f"{self.ref_key}{BOX_SUFFIX}"]).cpu())
        )
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).detach().cpu().float().numpy()
            slices = np.moveaxis(pred[0], -1, 0)
            synth = synthetic_volume(self.pre, slices, mask, box)
            d[key] = MetaTensor(
                torch.from_numpy(synth[None]),
                meta=copy.deepcopy(ref.meta),
                applied_operations=copy.deepcopy(ref.applied_operations),
            )
        return d
