"""The PatchGAN discriminator (Isola et al. 2017), with optional per-domain heads and a
modality classifier for the unified model."""

from __future__ import annotations

from torch import Tensor, nn

from fedsynth.models.blocks import ConvBlock
from fedsynth.models.layers import Conv2d


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): a map of real/fake scores over overlapping patches.

    With num_classes > 0 it also has a classification head (global average of a conv map,
    logits over the modalities), the StarGAN discriminator's auxiliary classifier. With
    num_heads > 1 it has one patch head per domain (a multi-task discriminator).
    forward returns (patch scores (B, num_heads, h, w), logits (B, K) or None).

    Args:
        in_channels: image channels.
        base_channels: width of the first conv; doubled per layer, capped at 8x.
        layers: normalised 4x4 convs after the first (all but the last with stride 2).
        norm: "instance" or "group".
        num_classes: classes of the classification head (0: no head). Defaults to 0.
        num_heads: patch heads (one per domain). Defaults to 1.

    Raises:
        ValueError: `norm` is not a known normalisation.
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
        """Judge a batch.

        Args:
            x: images (B, in_channels, H, W).

        Returns:
            (patch scores (B, num_heads, h, w), class logits (B, num_classes) or None).
        """
        features = self.trunk(x)
        logits = None if self.cls is None else self.cls(features).mean(dim=(2, 3))
        return self.adv(features), logits
