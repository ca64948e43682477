"""Unified any-to-any generator, StarGAN-style (Choi et al. 2018; Dai et al., Med Phys 2020).

One generator G(x, c) takes an image and the target modality c as one-hot label maps stacked
as extra input channels; one discriminator D has a real/fake patch head and a modality
classification head. Per real slice x of modality c with a random target t != c:
  generator:     LSGAN D_src(G(x, t)) -> real, CE(D_cls(G(x, t)), t), |G(G(x, t), c) - x|
  discriminator: LSGAN D_src(x) -> real and D_src(G(x, t)) -> fake, CE(D_cls(x), c)
LSGAN rather than WGAN-GP: the gradient penalty needs double backward per sample and mixes
real and fake samples, which DP-SGD's per-sample clipping cannot accommodate cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fedsynth.models.base import Batch, Stream, SynthesisModel
from fedsynth.models.config import ModelConfig
from fedsynth.models.losses import classification_loss, l1_loss, lsgan_loss
from fedsynth.models.networks import PatchDiscriminator, ResnetGenerator
from fedsynth.models.registry import register_model


def label_maps(labels: Tensor, num_classes: int, height: int, width: int) -> Tensor:
    """Label indices (n,) -> one-hot maps (n, K, H, W). A comparison, not F.one_hot, so that
    it runs under torch.func.vmap."""
    classes = torch.arange(num_classes, device=labels.device)
    one_hot = (labels[:, None] == classes).to(torch.float32)
    return one_hot[:, :, None, None].expand(-1, -1, height, width)


@register_model("unified")
class UnifiedGAN(SynthesisModel):
    """One conditional ResNet generator G and one two-headed PatchGAN discriminator D."""

    groups = {"generators": ("G",), "discriminators": ("D",)}
    needs_every_modality = False
    membership_terms = {"generators": "rec", "discriminators": "real"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        k = c.num_modalities
        self.G = ResnetGenerator(1 + k, 1, c.base_channels, c.res_blocks, c.downsamplings, c.norm)
        self.D = PatchDiscriminator(1, c.disc_channels, c.disc_layers, c.norm, num_classes=k)

    @property
    def training_modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def generate(self, images: Tensor, target_labels: Tensor) -> Tensor:
        """G(x, t): images (n, 1, H, W) translated to the modalities indexed by `target_labels`."""
        h, w = images.shape[-2:]
        maps = label_maps(target_labels, self.config.num_modalities, h, w)
        return self.G(torch.cat([images, maps], dim=1))

    def make_batch(self, images: Mapping[str, Tensor], generator: torch.Generator) -> Batch:
        """One stream "all": images, their modality labels, and a uniformly random target label
        different from each image's own (drawn per sample from `generator`)."""
        present = [(i, images[m]) for i, m in enumerate(self.config.modalities) if m in images]
        present = [(i, x) for i, x in present if len(x)]
        if not present:
            return {}
        image = torch.cat([x for _, x in present])
        label = torch.cat([torch.full((len(x),), i, dtype=torch.long) for i, x in present])
        k = self.config.num_modalities
        offset = torch.randint(1, k, (len(label),), generator=generator)
        target = (label + offset) % k
        return {
            "all": {
                "image": image,
                "label": label.to(image.device),
                "target": target.to(image.device),
            }
        }

    def loss_terms(self, player: str) -> tuple[str, ...]:
        self._check_player(player)
        return (
            ("loss", "real", "fake", "cls")
            if player == "discriminators"
            else ("loss", "adv", "cls", "rec")
        )

    def forward(self, stream: str, player: str, batch: Stream) -> dict[str, Tensor]:
        self._check_player(player)
        if stream != "all":
            raise ValueError(f"UnifiedGAN has one stream 'all', got {stream!r}")
        real, label, target = batch["image"], batch["label"], batch["target"]
        fake = self.generate(real, target)
        if player == "discriminators":
            real_scores, real_logits = self.D(real)
            terms = {
                "real": lsgan_loss(real_scores, real=True),
                "fake": lsgan_loss(self.D(fake)[0], real=False),
                "cls": classification_loss(real_logits, label),
            }
            loss = 0.5 * (terms["real"] + terms["fake"]) + self.config.lambda_cls * terms["cls"]
            return {"loss": loss, **terms}
        fake_scores, fake_logits = self.D(fake)
        terms = {
            "adv": lsgan_loss(fake_scores, real=True),
            "cls": classification_loss(fake_logits, target),
            "rec": l1_loss(self.generate(fake, label), real),
        }
        loss = (
            terms["adv"]
            + self.config.lambda_cls * terms["cls"]
            + self.config.lambda_rec * terms["rec"]
        )
        return {"loss": loss, **terms}

    def translate(self, images: Tensor, source: str, target: str) -> Tensor:
        """Any-to-any: `source` only has to be a known modality; the generator is conditioned
        on `target` alone."""
        for name, modality in (("source", source), ("target", target)):
            if modality not in self.config.modalities:
                raise ValueError(
                    f"unknown {name} modality {modality!r}; known: {self.config.modalities}"
                )
        labels = torch.full((len(images),), self.config.modalities.index(target), dtype=torch.long)
        return self.generate(images, labels.to(images.device))
