"""The one convolution every network uses: an nn.Conv2d that, while DP-SGD computes per-sample
gradients, may take a faster per-sample route for its weight gradient.

Everything else about it is nn.Conv2d (same parameters, state-dict keys, values and gradients),
so Opacus's and torch.func's per-sample machinery see an ordinary convolution.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_conv_backward = torch.ops.aten.convolution_backward.default
_PER_SAMPLE = contextvars.ContextVar("fedsynth_per_sample_gradients", default=False)


@contextlib.contextmanager
def per_sample_mode() -> Iterator[None]:
    """Inside, `Conv2d` layers that benefit compute per-sample weight gradients by their own
    vmap rule (set by `fedsynth.privacy.per_sample.per_sample_gradients`). Outside it, and
    for every other layer, a Conv2d is exactly nn.Conv2d.

    Yields:
        None; the mode is a context variable, so it is per thread and per task.
    """
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

    Args:
        *args, **kwargs: those of `torch.nn.Conv2d`.
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
        """Convolve `x`.

        Args:
            x: input (N, C_in, H, W).

        Returns:
            nn.Conv2d's output (N, C_out, H', W'), bitwise the same on either path.
        """
        if not self._per_sample_path(x):
            return super().forward(x)
        return _Conv2dFunction.apply(
            x, self.weight, self.bias, list(self.stride), list(self.padding)
        )
