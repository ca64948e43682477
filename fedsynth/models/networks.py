"""Building blocks shared by both architectures: a ResNet generator and a PatchGAN discriminator.

DP-safe by construction (DESIGN §4): reflection padding is its own ReflectionPad2d layer
(never a Conv2d with reflect padding mode, which Opacus hooks differentiate wrongly), norms keep
no running statistics, activations are not in-place, and there is no BatchNorm or spectral
norm. Every normalisation layer is a child named "norm", so its parameters are recognisable
by key (".norm.") when a federation keeps them local.

Convolutions are `Conv2d`, an nn.Conv2d whose per-sample weight gradient is computed one
sample at a time for the few layers where functorch's batching rule is slow (see there).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_TYPES = (nn.InstanceNorm2d, nn.GroupNorm)
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "lrelu": lambda: nn.LeakyReLU(0.2),
    "tanh": lambda: nn.Tanh(),
}


_conv_backward = torch.ops.aten.convolution_backward.default
_PER_SAMPLE = contextvars.ContextVar("fedsynth_per_sample_gradients", default=False)


@contextlib.contextmanager
def per_sample_mode() -> Iterator[None]:
    """Inside, `Conv2d` layers that benefit compute per-sample weight gradients by their own
    vmap rule (set by `fedsynth.privacy.per_sample.per_sample_gradients`). Outside it, and
    for every other layer, a Conv2d is exactly nn.Conv2d."""
    token = _PER_SAMPLE.set(True)
    try:
        yield
    finally:
        _PER_SAMPLE.reset(token)


def _weight_grad_args(stride: list[int], padding: list[int]) -> tuple:
    return (stride, padding, [1, 1], False, [0, 0], 1)


class _ConvWeightGrad(torch.autograd.Function):
    """d(loss)/d(weight) of a convolution from its input and output gradient. Under vmap
    (one sample per batch entry) it runs the plain kernel per sample instead of functorch's
    rule, which folds the samples into a grouped convolution with one group per sample: with
    one input or output channel per group and a 7x7 kernel over a whole image, oneDNN runs
    that 3-5x slower than the same work ungrouped."""

    @staticmethod
    def forward(grad_out, x, weight, stride, padding):  # type: ignore[override]
        args = _weight_grad_args(stride, padding)
        return _conv_backward(grad_out, x, weight, None, *args, [False, True, False])[1]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        pass

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        raise NotImplementedError("Conv2d per-sample weight gradients are not twice differentiable")

    @staticmethod
    def vmap(info, in_dims, grad_out, x, weight, stride, padding):  # type: ignore[override]
        def sample(t: Tensor, dim: int | None, i: int) -> Tensor:
            return t.select(dim, i) if dim is not None else t

        g_dim, x_dim, w_dim = in_dims[:3]
        per_sample = [
            _ConvWeightGrad.forward(
                sample(grad_out, g_dim, i),
                sample(x, x_dim, i),
                sample(weight, w_dim, i),
                stride,
                padding,
            )
            for i in range(info.batch_size)
        ]
        return torch.stack(per_sample), 0


class _Conv2dFunction(torch.autograd.Function):
    """F.conv2d (no groups/dilation) whose weight gradient goes through _ConvWeightGrad."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding):  # type: ignore[override]
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        x, weight, bias, ctx.stride, ctx.padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            args = _weight_grad_args(ctx.stride, ctx.padding)
            grad_x = _conv_backward(grad_out, x, weight, None, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = _ConvWeightGrad.apply(grad_out, x, weight, ctx.stride, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state-dict keys, same values and gradients).

    In `per_sample_mode`, layers with <= 3 input or output channels, a 7x7 (or larger)
    kernel and >= 128x128 input pixels - the generators' stem and output convolutions at
    128 px - take `_Conv2dFunction`, whose per-sample weight gradient is computed sample by
    sample. Measured (2 CPU cores): the 16->1 7x7 output layer's per-sample gradients at
    128 px, 4 samples, 71 -> 23 ms; whole DP step at 128 px 9-20% faster (one thread), 2-10%
    (two threads on a busy machine). At 64 px it also wins on one thread (~9%) but not with
    two threads on a busy machine (each extra small kernel call then costs a scheduler
    tick), hence the threshold.
    """

    def _per_sample_path(self, x: Tensor) -> bool:
        return (
            _PER_SAMPLE.get()
            and min(self.in_channels, self.out_channels) <= 3
            and self.kernel_size[0] * self.kernel_size[1] >= 49
            and x.shape[-1] * x.shape[-2] >= 128 * 128
            and self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._per_sample_path(x):
            return super().forward(x)
        return _Conv2dFunction.apply(
            x, self.weight, self.bias, list(self.stride), list(self.padding)
        )


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
        conv = Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=zero_pad, bias=norm is None
        )
        self.add_module("conv", conv)
        if norm is not None:
            self.add_module("norm", norm_layer(norm, out_channels))
        if act is not None:
            self.add_module("act", ACTIVATIONS[act]())


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
    logits over the modalities), the StarGAN discriminator's auxiliary classifier. With
    num_heads > 1 it has one patch head per domain (a multi-task discriminator).
    forward returns (patch scores (B, num_heads, h, w), logits (B, K) or None).
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int,
        layers: int,
        norm: str,
        num_classes: int = 0,
        num_heads: int = 1,
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
        self.adv = Conv2d(ch, num_heads, 4, padding=1)
        self.cls = Conv2d(ch, num_classes, 3, padding=1) if num_classes else None

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
