"""Augmentation multiplicity for DP-SGD (De et al. 2022): K random views of every sampled slice.

A view is a left-right flip (axial brain slices are near-symmetric) and an integer shift of up
to MAX_SHIFT pixels with background (-1) filling what moves in. One view is one input tensor,
so every loss term of that example (adversarial, cycle, identity, reconstruction) sees the
same geometry. Views of one slice are adjacent, which is how `per_sample_gradients` averages
them before clipping.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from fedsynth.data.config import BACKGROUND

MAX_SHIFT = 4


def _view(image: Tensor, flip: bool, dy: int, dx: int) -> Tensor:
    """One (C, H, W) slice flipped and shifted by (dy, dx) pixels."""
    if flip:
        image = image.flip(-1)
    h, w = image.shape[-2:]
    padded = F.pad(image, (MAX_SHIFT,) * 4, value=BACKGROUND)
    top, left = MAX_SHIFT - dy, MAX_SHIFT - dx
    return padded[..., top : top + h, left : left + w]


def augment(
    images: Mapping[str, Tensor], views: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """Modality -> (n, C, H, W) images to (n·views, C, H, W): `views` random views of each
    image, consecutively, every channel under the same geometry (an image and its paired
    partners stay aligned). views=1 returns the images unchanged and draws nothing."""
    if views == 1:
        return dict(images)
    out = {}
    for modality, batch in images.items():
        n = len(batch) * views
        flips = torch.rand(n, generator=generator) < 0.5
        shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2), generator=generator)
        repeated = batch.repeat_interleave(views, dim=0)
        out[modality] = (
            torch.stack(
                [
                    _view(x, bool(f), int(dy), int(dx))
                    for x, f, (dy, dx) in zip(repeated, flips, shifts, strict=True)
                ]
            )
            if n
            else repeated
        )
    return out
