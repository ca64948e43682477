"""Building blocks shared by the networks: normalisation, activations, a conv block, a
residual block, the ResNet generator's layer plan and the CycleGAN weight init.

DP-safe by construction (docs/architecture.md §3): reflection padding is its own ReflectionPad2d
layer (never a Conv2d with reflect padding mode, which Opacus hooks differentiate wrongly), norms
keep no running statistics, activations are not in-place, and there is no BatchNorm or spectral
norm. Every normalisation layer is a child named "norm", so its parameters are recognisable
by key (".norm.") when a federation keeps them local.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fedsynth.models.layers import Conv2d

NORM_TYPES = (nn.InstanceNorm2d, nn.GroupNorm)
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "lrelu": lambda: nn.LeakyReLU(0.2),
    "tanh": lambda: nn.Tanh(),
}


def norm_layer(kind: str, channels: int) -> nn.Module:
    """InstanceNorm (affine, no running stats) or GroupNorm with up to 8 groups.

    Args:
        kind: "instance" or "group".
        channels: number of channels normalised.

    Returns:
        The normalisation layer; neither kind mixes samples or keeps batch statistics.

    Raises:
        ValueError: `kind` is neither "instance" nor "group".
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    raise ValueError(f"unknown norm {kind!r} (expected 'instance' or 'group')")


class ConvBlock(nn.Sequential):
    """[upsample] -> [reflection pad] -> conv -> [norm] -> [activation], children named by role
    ("up", "pad", "conv", "norm", "act"; absent parts are left out, not Identity).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size of the convolution.
        stride: convolution stride. Defaults to 1.
        reflect: reflection padding before the conv, in pixels (0: none). Defaults to 0.
        zero_pad: the conv's own zero padding, in pixels. Defaults to 0.
        upsample: nearest-neighbour 2x upsampling first. Defaults to False.
        norm: `norm_layer` kind after the conv (then the conv has no bias), or None.
            Defaults to None.
        act: activation after the norm, a key of `ACTIVATIONS`, or None. Defaults to None.

    Raises:
        ValueError: `norm` is not a known normalisation.
        KeyError: `act` is not a key of `ACTIVATIONS`.
    """

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
        conv = Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=zero_pad, bias=norm is None
        )
        self.add_module("conv", conv)
        if norm is not None:
            self.add_module("norm", norm_layer(norm, out_channels))
        if act is not None:
            self.add_module("act", ACTIVATIONS[act]())


class ResidualBlock(nn.Module):
    """Two 3x3 reflection-padded convs with a skip connection (Johnson et al. 2016).

    Args:
        channels: input and output channels.
        norm: `norm_layer` kind after each conv.
    """

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, reflect=1, norm=norm, act="relu"),
            ConvBlock(channels, channels, 3, reflect=1, norm=norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x + body(x).

        Args:
            x: features (N, channels, H, W).

        Returns:
            Features of the same shape.
        """
        return x + self.body(x)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the ResNet generator's plan: a ConvBlock's arguments, or (residual=True)
    a residual block of `out_channels` channels.

    Attributes:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: the ConvBlock's kernel size (unused for a residual block).
        options: the ConvBlock's keyword arguments (stride, reflect, upsample, norm, act).
        residual: a residual block (norm from the plan) instead of a ConvBlock.
        keep: the layer's output is kept for a skip path (U-Net plan: the encoder's layers).
        skip: the last kept output not yet used is concatenated to the layer's input first
            (U-Net plan: the decoder's layers, `in_channels` counting both).
    """

    in_channels: int
    out_channels: int
    kernel_size: int = 3
    options: Mapping[str, object] = field(default_factory=dict)
    residual: bool = False
    keep: bool = False
    skip: bool = False


def run_plan(
    layers: Iterable[tuple[LayerSpec, Callable[[Tensor], Tensor]]], x: Tensor
) -> Tensor:
    """Run layers in plan order, carrying the U-Net skip paths: outputs of `keep` layers are
    stacked, and each `skip` layer takes the newest one concatenated to its input.

    Args:
        layers: (spec, the layer as a function of its input) pairs.
        x: the first layer's input.

    Returns:
        The last layer's output.
    """
    kept: list[Tensor] = []
    for spec, layer in layers:
        if spec.skip:
            x = torch.cat([x, kept.pop()], dim=1)
        x = layer(x)
        if spec.keep:
            kept.append(x)
    return x


def resnet_plan(
    in_channels: int,
    out_channels: int,
    base_channels: int,
    res_blocks: int,
    downsamplings: int,
    norm: str,
    skips: bool = False,
) -> list[LayerSpec]:
    """The ResNet generator's layers in order: 7x7 stem, stride-2 downsamplings, residual
    blocks, nearest-upsample + conv (no checkerboard artefacts), 7x7 Tanh head (last).
    Shared by the plain and the conditioned generator, which differ only in how a layer is
    built from its spec. With `skips` (generator "unet"), U-Net skip paths (Ronneberger et
    al. 2015): every upsampling and the head also see the encoder's features at their input
    resolution, so fine detail need not squeeze through the bottleneck.

    Args:
        in_channels: image (and condition) channels in.
        out_channels: image channels out.
        base_channels: width after the stem; doubled by each downsampling.
        res_blocks: residual blocks at the lowest resolution.
        downsamplings: stride-2 convolutions (and as many upsamplings).
        norm: "instance" or "group".
        skips: U-Net skip paths.

    Returns:
        One `LayerSpec` per layer; the last is the head.
    """
    conv = {"reflect": 1, "norm": norm, "act": "relu"}
    wide = 2 if skips else 1  # a decoder layer's input: its own features and the encoder's
    plan = [LayerSpec(in_channels, base_channels, 7, {**conv, "reflect": 3}, keep=skips)]
    ch = base_channels
    for _ in range(downsamplings):
        plan.append(LayerSpec(ch, 2 * ch, 3, {**conv, "stride": 2}, keep=skips))
        ch *= 2
    plan.extend(LayerSpec(ch, ch, residual=True) for _ in range(res_blocks))
    for _ in range(downsamplings):
        plan.append(LayerSpec(wide * ch, ch // 2, 3, {**conv, "upsample": True}, skip=skips))
        ch //= 2
    plan.append(LayerSpec(wide * ch, out_channels, 7, {"reflect": 3, "act": "tanh"}, skip=skips))
    return plan


def init_weights(module: nn.Module) -> None:
    """CycleGAN/pix2pix init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0.

    Args:
        module: initialised in place, every submodule (draws from the global torch RNG).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_TYPES) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
