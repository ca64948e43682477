"""Unified any-to-any generator, StarGAN-style (Choi et al. 2018; Dai et al., Med Phys 2020),
with the conditioning of StarGAN v2 (Choi et al. 2020).

One generator G(x, t | s) maps an image of modality s to modality t. It sees the target as
one-hot label planes stacked on the input AND as a code (one-hot target ⊕ one-hot source),
with a style a mapping network makes of it, that modulates every block (FiLM,
`fedsynth.models.conditional`). One discriminator D has one
real/fake patch head per modality (a multi-task discriminator: head t judges "a real image of
modality t?") and an auxiliary modality classifier. Per real slice x of modality s with a
random target t != s:
  generator:     LSGAN head_t(G(x, t|s)) -> real, λ_cls·CE(D_cls(G(x, t|s)), t),
                 λ_rec·|G(G(x, t|s), s|t) - x|, [λ_struct·MIND(G(x, t|s), x)],
                 [λ_paired·|G(x, t|s) - y_t|, y_t the same slice's real t, paired data;
                  registered: |warp_R(G(x, t|s)) - y_t| + λ_smooth·smooth(R)],
                 [λ_id·|G(x, s|s) - x|]
  discriminator: LSGAN head_s(x) -> real and head_t(G(x, t|s)) -> fake, λ_cls·CE(D_cls(x), s)
G synthesises the foreground only: where the source is background (exactly -1 after
preprocessing) the output is background too — the same head in another contrast. Without it,
one seed in five on a public phantom settled on the photographic negative (brain -1 on a
bright background), which cycle reconstruction accepts and the discriminator never argued it
out of.
LSGAN rather than WGAN-GP: the gradient penalty needs double backward per sample and mixes
real and fake samples, which DP-SGD's per-sample clipping cannot accommodate cheaply. Heads
and codes are selected with one-hot products, not indexing, so everything runs under vmap.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fedsynth.models.base import Batch, Partners, Stream, SynthesisModel, keep_background
from fedsynth.models.conditional import ConditionalResnetGenerator
from fedsynth.models.config import ModelConfig
from fedsynth.models.losses import classification_loss, l1_loss, lsgan_loss
from fedsynth.models.mind import mind_loss
from fedsynth.models.patch_discriminator import PatchDiscriminator
from fedsynth.models.registry import register_model


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Label indices (n,) -> (n, K) float. A comparison, not F.one_hot, so it runs under vmap."""
    return (labels[:, None] == torch.arange(num_classes, device=labels.device)).float()


def label_maps(labels: Tensor, num_classes: int, height: int, width: int) -> Tensor:
    """Label indices (n,) -> one-hot maps (n, K, H, W)."""
    return one_hot(labels, num_classes)[:, :, None, None].expand(-1, -1, height, width)


@register_model("unified")
class UnifiedGAN(SynthesisModel):
    """One FiLM-conditioned ResNet generator G and one multi-head PatchGAN discriminator D."""

    groups = {"generators": ("G",), "discriminators": ("D",)}
    needs_every_modality = False
    membership_terms = {"generators": "rec", "discriminators": "real"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        k = c.num_modalities
        self.G = ConditionalResnetGenerator(
            1 + k,
            2 * k,
            c.base_channels,
            c.res_blocks,
            c.downsamplings,
            c.norm,
            skips=c.generator == "unet",
        )
        self.D = PatchDiscriminator(
            1, c.disc_channels, c.disc_layers, c.norm, num_classes=k, num_heads=k
        )

    @property
    def training_modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def generate(self, images: Tensor, target: Tensor, source: Tensor) -> Tensor:
        """G(x, t | s): images (n, 1, H, W) of modalities `source` (n,) to `target` (n,), with
        the source's background kept."""
        k = self.config.num_modalities
        h, w = images.shape[-2:]
        code = torch.cat([one_hot(target, k), one_hot(source, k)], dim=1).to(images.dtype)
        planes = label_maps(target, k, h, w).to(images.dtype)
        out = self.G(torch.cat([images, planes], dim=1), code)
        return keep_background(images, out)

    def judge(self, images: Tensor, modality: Tensor) -> tuple[Tensor, Tensor]:
        """(patch scores of each image's own modality head (n, 1, h, w), class logits)."""
        scores, logits = self.D(images)
        weights = one_hot(modality, self.config.num_modalities).to(scores.dtype)[:, :, None, None]
        return (scores * weights).sum(dim=1, keepdim=True), logits

    def make_batch(
        self,
        images: Mapping[str, Tensor],
        generator: torch.Generator,
        partners: Partners | None = None,
    ) -> Batch:
        """One stream "all": images, their modality labels, and a random target label among the
        model's other modalities (drawn per sample from `generator`); with `partners`, every
        sample's real image in each modality too."""
        mods = [m for m in self.config.modalities if m in images and len(images[m])]
        present = [(self.config.modalities.index(m), images[m]) for m in mods]
        if not present:
            return {}
        image = torch.cat([x for _, x in present])
        label = torch.cat([torch.full((len(x),), i, dtype=torch.long) for i, x in present])
        k = self.config.num_modalities
        offset = torch.randint(1, k, (len(label),), generator=generator)
        target = (label + offset) % k
        stream = {
            "image": image,
            "label": label.to(image.device),
            "target": target.to(image.device),
        }
        return {"all": self.with_partners(stream, partners, mods)}

    def loss_terms(self, player: str) -> tuple[str, ...]:
        self._check_player(player)
        if player == "discriminators":
            return ("loss", "real", "fake", "cls")
        return ("loss", "adv", "cls", "rec", *self.optional_terms())

    def forward(self, stream: str, player: str, batch: Stream) -> dict[str, Tensor]:
        self._check_player(player)
        if stream != "all":
            raise ValueError(f"UnifiedGAN has one stream 'all', got {stream!r}")
        c = self.config
        real, label, target = batch["image"], batch["label"], batch["target"]
        fake = self.generate(real, target, label)
        if player == "discriminators":
            real_scores, real_logits = self.judge(real, label)
            terms = {
                "real": lsgan_loss(real_scores, real=True),
                "fake": lsgan_loss(self.judge(fake, target)[0], real=False),
                "cls": classification_loss(real_logits, label),
            }
            loss = 0.5 * (terms["real"] + terms["fake"]) + c.lambda_cls * terms["cls"]
            return {"loss": loss, **terms}
        fake_scores, fake_logits = self.judge(fake, target)
        terms = {
            "adv": lsgan_loss(fake_scores, real=True),
            "cls": classification_loss(fake_logits, target),
            "rec": l1_loss(self.generate(fake, label, target), real),
        }
        loss = terms["adv"] + c.lambda_cls * terms["cls"] + c.lambda_rec * terms["rec"]
        if c.lambda_structure > 0:
            terms["structure"] = mind_loss(fake, real)
            loss = loss + c.lambda_structure * terms["structure"]
        if self.pairs:
            weighted, paired = self.pairing(batch, fake, target)
            terms |= paired
            loss = loss + weighted
        if c.lambda_identity > 0:
            terms["identity"] = l1_loss(self.generate(real, label, label), real)
            loss = loss + c.lambda_identity * terms["identity"]
        return {"loss": loss, **terms}

    def translate(self, images: Tensor, source: str, target: str) -> Tensor:
        """Any-to-any between the model's modalities."""
        for name, modality in (("source", source), ("target", target)):
            if modality not in self.config.modalities:
                raise ValueError(
                    f"unknown {name} modality {modality!r}; known: {self.config.modalities}"
                )
        index = self.config.modalities.index
        n = len(images)
        t = torch.full((n,), index(target), dtype=torch.long, device=images.device)
        s = torch.full((n,), index(source), dtype=torch.long, device=images.device)
        return self.generate(images, t, s)
