"""A structure term that does not care about contrast: MIND (Heinrich et al., Med Image Anal
2012), the modality-independent neighbourhood descriptor, in 2-D.

Adversarial and cycle losses let a generator move, blur or drop structures as long as the
result looks like the target contrast and can be mapped back: a lesion that is faint in the
source may vanish in the synthetic image and be re-invented on the way back. MIND describes
each pixel by how similar its patch is to its neighbours' patches, normalised by the local
patch variance; it changes when edges move, appear or vanish, and not when intensities are
remapped. For any affine remap y = a·x + b (a ≠ 0, contrast inversion included) every patch
distance scales by a², so the descriptor of y equals that of x exactly (up to the
flat-region floor below). `mind_loss(output, source)` is therefore a per-sample structure
penalty between a synthetic image and the image it was made from.

Per sample by construction: the descriptor of one image uses only that image (box filters,
shifts and a per-image variance floor), so DP-SGD's per-sample clipping still bounds each
sample's gradient. No learned parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fedsynth.models.losses import Reduction, _reduce

# The 4-neighbourhood (dy, dx): in 2-D, MIND's six-neighbourhood in 3-D becomes four.
OFFSETS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (0, -1), (-1, 0))


def _shifted(images: Tensor, dy: int, dx: int) -> Tensor:
    """images(y + dy, x + dx), edges replicated: no structure is invented at the border."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def mind_descriptor(images: Tensor, patch: int = 3, floor: float = 1e-3) -> Tensor:
    """MIND of images (n, 1, H, W): (n, 4, H, W), each pixel's similarity to its four
    neighbours' patches, in (0, 1] with a maximum of 1 per pixel.

    Args:
        images: single-channel slices.
        patch: side of the square patch the distances are averaged over (odd).
        floor: the variance estimate is kept above `floor` × the image's mean variance, so flat
            regions (background) do not divide by zero; relative, so affine remaps still cancel.

    Returns:
        The descriptor, one channel per neighbour in `OFFSETS`.

    Raises:
        ValueError: if `images` is not (n, 1, H, W) or `patch` is not a positive odd number.
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"mind_descriptor expects (n, 1, H, W) images, got {tuple(images.shape)}")
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd number, got {patch}")
    distances = torch.cat(
        [
            F.avg_pool2d(
                (images - _shifted(images, dy, dx)) ** 2,
                patch,
                stride=1,
                padding=patch // 2,
                count_include_pad=False,
            )
            for dy, dx in OFFSETS
        ],
        dim=1,
    )
    variance = distances.mean(dim=1, keepdim=True)
    level = variance.flatten(1).mean(dim=1)[:, None, None, None]
    variance = torch.maximum(variance, floor * level + torch.finfo(images.dtype).tiny)
    descriptor = torch.exp(-distances / variance)
    return descriptor / descriptor.amax(dim=1, keepdim=True)


def mind_loss(output: Tensor, source: Tensor, reduction: Reduction = "none") -> Tensor:
    """Mean absolute difference of the MIND descriptors of `output` and `source`, per sample:
    zero when one is an intensity remap of the other, large when structures moved."""
    difference = (mind_descriptor(output) - mind_descriptor(source)).abs()
    return _reduce(difference.flatten(1).mean(dim=1), reduction)
