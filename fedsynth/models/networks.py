"""Building blocks shared by both architectures: a ResNet generator and a PatchGAN discriminator.

DP-safe by construction (DESIGN §4): reflection padding is its own ReflectionPad2d layer
(never Conv2d(padding_mode="reflect"), which Opacus hooks differentiate wrongly), norms keep
no running statistics, activations are not in-place, and there is no BatchNorm or spectral
norm. Every normalisation layer is a child named "norm", so its parameters are recognisable
by key (".norm.") when a federation keeps them local.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

NORM_TYPES = (nn.InstanceNorm2d, nn.GroupNorm)
_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "lrelu": lambda: nn.LeakyReLU(0.2),
    "tanh": lambda: nn.Tanh(),
}


def norm_layer(kind: str, channels: int) -> nn.Module:
    """InstanceNorm (affine, no running stats) or GroupNorm with up to 8 groups."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    raise ValueError(f"unknown norm {kind!r} (expected 'instance' or 'group')")


class ConvBlock(nn.Sequential):
    """[upsample] -> [reflection pad] -> conv -> [norm] -> [activation], children named by role."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        reflect: int = 0,
        zero_pad: int = 0,
        upsample: bool = False,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__()
        if upsample:
            self.add_module("up", nn.Upsample(scale_factor=2, mode="nearest"))
        if reflect:
            self.add_module("pad", nn.ReflectionPad2d(reflect))
        # A bias before a norm layer is cancelled by it: leave it out.
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=zero_pad, bias=norm is None
        )
        self.add_module("conv", conv)
        if norm is not None:
            self.add_module("norm", norm_layer(norm, out_channels))
        if act is not None:
            self.add_module("act", _ACTIVATIONS[act]())


class ResidualBlock(nn.Module):
    """Two 3x3 reflection-padded convs with a skip connection (Johnson et al. 2016)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, reflect=1, norm=norm, act="relu"),
            ConvBlock(channels, channels, 3, reflect=1, norm=norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: 7x7 stem, stride-2 downsamplings, residual blocks,
    nearest-upsample + conv (no checkerboard artefacts), 7x7 head and Tanh to [-1, 1]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int,
        res_blocks: int,
        downsamplings: int,
        norm: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBlock(in_channels, base_channels, 7, reflect=3, norm=norm, act="relu")
        ]
        ch = base_channels
        for _ in range(downsamplings):
            layers.append(ConvBlock(ch, 2 * ch, 3, stride=2, reflect=1, norm=norm, act="relu"))
            ch *= 2
        layers.extend(ResidualBlock(ch, norm) for _ in range(res_blocks))
        for _ in range(downsamplings):
            layers.append(
                ConvBlock(ch, ch // 2, 3, reflect=1, upsample=True, norm=norm, act="relu")
            )
            ch //= 2
        layers.append(ConvBlock(ch, out_channels, 7, reflect=3, act="tanh"))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): a map of real/fake scores over overlapping patches.

    With num_classes > 0 it also has a classification head (global average of a conv map,
    logits over the modalities), the StarGAN discriminator's auxiliary classifier.
    forward returns (patch scores (B, 1, h, w), logits (B, K) or None).
    """

    def __init__(
        self, in_channels: int, base_channels: int, layers: int, norm: str, num_classes: int = 0
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            ConvBlock(in_channels, base_channels, 4, stride=2, zero_pad=1, act="lrelu")
        ]
        ch = base_channels
        for i in range(1, layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks.append(ConvBlock(ch, out, 4, stride=stride, zero_pad=1, norm=norm, act="lrelu"))
            ch = out
        self.trunk = nn.Sequential(*blocks)
        self.adv = nn.Conv2d(ch, 1, 4, padding=1)
        self.cls = nn.Conv2d(ch, num_classes, 3, padding=1) if num_classes else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.trunk(x)
        logits = None if self.cls is None else self.cls(features).mean(dim=(2, 3))
        return self.adv(features), logits


def init_weights(module: nn.Module) -> None:
    """CycleGAN/pix2pix init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_TYPES) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
