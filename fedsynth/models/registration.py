"""The registration network of the registered paired loss (RegGAN: Kong et al., "Breaking the
Dilemma of Medical Image-to-Image Translation", NeurIPS 2021).

A hospital's pairs are one patient's contrasts from one session, not voxel-aligned. An L1
between a synthetic image and such a target is minimised by a blur of every position the
target might be at. RegGAN trains, with the generator, a network R that predicts a dense
displacement field from (synthetic, target), warps the synthetic image onto the target, and
scores the warped image: the generator is then free to be sharp where it is, and R absorbs
where the target moved. A smoothness penalty on the field's gradients keeps R from
inventing detail by folding the image.

R here is small: 3x3 convolutions (reflection padding, LeakyReLU, no normalisation), three
stride-2 stages, a field predicted at 1/8 of the image size and upsampled bilinearly (smooth
by construction; a rigid motion's linear field is exact on any grid), in pixels of the full
image. Its last convolution starts at zero: the identity warp. Every operation acts on one
sample, so R trains under DP-SGD's per-sample clipping like the generator it belongs to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsynth.models.blocks import ConvBlock
from fedsynth.models.layers import Conv2d

STAGES = 3
"""Stride-2 stages of R: the field's grid is 1/2**STAGES of the image's."""


class RegistrationNet(nn.Module):
    """(moving, fixed) images (n, 1, H, W) -> displacement field (n, 2, H, W) in pixels,
    channel 0 along the width (x), channel 1 along the height (y).

    Args:
        channels: width of the first stage; doubled once, at the second.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        wide = 2 * channels
        stages = [ConvBlock(2, channels, 3, reflect=1, act="lrelu")]
        stages += [
            ConvBlock(channels if i == 0 else wide, wide, 3, stride=2, reflect=1, act="lrelu")
            for i in range(STAGES)
        ]
        stages.append(ConvBlock(wide, wide, 3, reflect=1, act="lrelu"))
        self.trunk = nn.Sequential(*stages)
        self.pad = nn.ReflectionPad2d(1)
        self.flow = Conv2d(wide, 2, 3)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def forward(self, moving: Tensor, fixed: Tensor) -> Tensor:
        coarse = self.flow(self.pad(self.trunk(torch.cat([moving, fixed], dim=1))))
        return F.interpolate(coarse, size=moving.shape[-2:], mode="bilinear", align_corners=True)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """`image` (n, C, H, W) sampled at every pixel p + flow(p) (bilinear, border values
    outside): torch's `grid_sample` on the pixel grid (align_corners=True)."""
    h, w = image.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=image.dtype)
    offset = flow.permute(0, 2, 3, 1) * scale.to(image.device)
    grid = torch.stack([grid_x, grid_y], dim=-1) + offset
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def smoothness(flow: Tensor) -> Tensor:
    """Per-sample mean squared forward difference of the field along x and y, (n,):
    RegGAN's smoothness penalty (0 for a translation, small for a rotation)."""
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    return dx.pow(2).flatten(1).mean(dim=1) + dy.pow(2).flatten(1).mean(dim=1)
