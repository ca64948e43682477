"""A ResNet generator conditioned in every block (StarGAN v2-style conditioning, Choi et al.
2020; FiLM, Perez et al. 2018): after each normalisation, features are scaled and shifted by
an affine function of a code — here the one-hot target and source modalities, and a style
vector a small mapping network makes of them (StarGAN v2's mapping network, without the
latent). A generator fed the code only as input planes can learn to ignore it (measured: over
four contrasts the unified model's classification loss stayed above ln 4); modulating every
block cannot be ignored as easily. The style lets a direction be more than the sum of its
target's and its source's modulations (one-hot codes alone only add them up). Measured on a
public phantom (README "Unified model"), it is neutral within seed noise; it did not stop the
collapse the kept background stops (`fedsynth.models.unified`). DP-safe like
`fedsynth.models.blocks`: per-sample, no batch statistics."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from fedsynth.models.blocks import ACTIVATIONS, ConvBlock, resnet_plan, run_plan

STYLE = 32
"""Width of the mapping network's style vector."""


class FiLM(nn.Module):
    """x·(1 + γ(code)) + β(code) per channel, γ and β linear in the code. Zero-initialised:
    an untrained FiLM is the identity, so conditioning grows from the unconditioned net.

    Args:
        code_size: length of the conditioning code.
        channels: channels modulated.
    """

    def __init__(self, code_size: int, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(code_size, channels))
        self.shift = nn.Parameter(torch.zeros(code_size, channels))

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """Modulate `x` by `code`.

        Args:
            x: features (N, channels, H, W).
            code: codes (N, code_size).

        Returns:
            Modulated features, the shape of `x`.
        """
        gamma = (code @ self.scale)[:, :, None, None]
        beta = (code @ self.shift)[:, :, None, None]
        return x * (1 + gamma) + beta


class CondBlock(nn.Module):
    """ConvBlock (conv + norm) -> FiLM(code) -> activation.

    Args:
        code_size: length of the conditioning code.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size of the convolution.
        **conv: `ConvBlock` keyword arguments; `act` is applied after the FiLM, not inside
            the ConvBlock.

    Raises:
        ValueError: `norm` is not a known normalisation.
        KeyError: `act` is not a key of `ACTIVATIONS`.
    """

    def __init__(
        self, code_size: int, in_channels: int, out_channels: int, kernel_size: int, **conv
    ) -> None:
        super().__init__()
        act = conv.pop("act", None)
        self.block = ConvBlock(in_channels, out_channels, kernel_size, **conv)
        self.film = FiLM(code_size, out_channels)
        self.act = ACTIVATIONS[act]() if act is not None else nn.Identity()

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """act(FiLM(block(x), code)).

        Args:
            x: features (N, in_channels, H, W).
            code: codes (N, code_size).

        Returns:
            Features (N, out_channels, H', W').
        """
        return self.act(self.film(self.block(x), code))


class CondResidual(nn.Module):
    """The residual block (`fedsynth.models.blocks.ResidualBlock`) with FiLM after each norm.

    Args:
        code_size: length of the conditioning code.
        channels: input and output channels.
        norm: "instance" or "group".
    """

    def __init__(self, code_size: int, channels: int, norm: str) -> None:
        super().__init__()
        self.first = CondBlock(code_size, channels, channels, 3, reflect=1, norm=norm, act="relu")
        self.second = CondBlock(code_size, channels, channels, 3, reflect=1, norm=norm)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """x + body(x | code).

        Args:
            x: features (N, channels, H, W).
            code: codes (N, code_size).

        Returns:
            Features of the shape of `x`.
        """
        return x + self.second(self.first(x, code), code)


class ConditionalResnetGenerator(nn.Module):
    """The ResNet generator's layer plan (`fedsynth.models.blocks.resnet_plan`) with FiLM after
    every normalisation; the Tanh head is unconditioned. It has one output channel.

    Args:
        in_channels: image and condition-plane channels in.
        code_size: length of the conditioning code (the mapping network's input).
        base_channels: width after the stem; doubled by each downsampling.
        res_blocks: residual blocks at the lowest resolution.
        downsamplings: stride-2 convolutions (and as many upsamplings).
        norm: "instance" or "group".
        skips: U-Net skip paths (generator "unet").

    Raises:
        ValueError: `norm` is not a known normalisation.
    """

    def __init__(
        self,
        in_channels: int,
        code_size: int,
        base_channels: int,
        res_blocks: int,
        downsamplings: int,
        norm: str,
        skips: bool = False,
    ) -> None:
        super().__init__()
        self.mapping = nn.Sequential(
            nn.Linear(code_size, STYLE), nn.ReLU(), nn.Linear(STYLE, STYLE), nn.ReLU()
        )
        k = code_size + STYLE
        self.plan = resnet_plan(
            in_channels, 1, base_channels, res_blocks, downsamplings, norm, skips
        )
        *body, head = self.plan
        self.body = nn.ModuleList(
            CondResidual(k, s.out_channels, norm)
            if s.residual
            else CondBlock(k, s.in_channels, s.out_channels, s.kernel_size, **s.options)
            for s in body
        )
        self.head = ConvBlock(head.in_channels, head.out_channels, head.kernel_size, **head.options)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """Translate a batch under its codes.

        Args:
            x: images and condition planes (N, in_channels, H, W), H and W divisible by
                2**downsamplings.
            code: codes (N, code_size).

        Returns:
            Images (N, 1, H, W) in [-1, 1].
        """
        style = torch.cat([code, self.mapping(code)], dim=1)
        layers = [functools.partial(block, code=style) for block in self.body] + [self.head]
        return run_plan(zip(self.plan, layers, strict=True), x)
