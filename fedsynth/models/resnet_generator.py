"""CycleGAN's ResNet generator (Johnson et al. 2016; Zhu et al. 2017), built from the shared
layer plan (`fedsynth.models.blocks.resnet_plan`)."""

from __future__ import annotations

from torch import Tensor, nn

from fedsynth.models.blocks import ConvBlock, ResidualBlock, resnet_plan, run_plan


class ResnetGenerator(nn.Module):
    """7x7 stem, stride-2 downsamplings, residual blocks, nearest-upsample + conv, 7x7 head and
    Tanh to [-1, 1]: `resnet_plan`'s layers as one nn.Sequential named "body" (run in plan
    order, with the skip paths when there are any).

    Args:
        in_channels: image channels in.
        out_channels: image channels out.
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
        out_channels: int,
        base_channels: int,
        res_blocks: int,
        downsamplings: int,
        norm: str,
        skips: bool = False,
    ) -> None:
        super().__init__()
        self.plan = resnet_plan(
            in_channels, out_channels, base_channels, res_blocks, downsamplings, norm, skips
        )
        plan = self.plan
        self.body = nn.Sequential(
            *(
                ResidualBlock(s.out_channels, norm)
                if s.residual
                else ConvBlock(s.in_channels, s.out_channels, s.kernel_size, **s.options)
                for s in plan
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """Translate a batch.

        Args:
            x: images (N, in_channels, H, W), H and W divisible by 2**downsamplings.

        Returns:
            Images (N, out_channels, H, W) in [-1, 1].
        """
        return run_plan(zip(self.plan, self.body, strict=True), x)
