"""CycleGAN (Zhu et al. 2017) for unpaired source -> target MRI synthesis.

Domain A is `config.source`, B is `config.target`. Every loss term is a function of ONE real
image: a real A slice `a` contributes the generator terms adversarial D_B(G_AB(a)), cycle
|G_BA(G_AB(a)) - a| and identity |G_BA(a) - a|, and the discriminator terms D_A(a) (real) and
D_B(G_AB(a)) (fake); a real B slice the mirror image. With λ_structure > 0 the generator also
pays the MIND structure term between G_AB(a) and a (`fedsynth.models.mind`), and with
λ_paired > 0 (paired data) the L1 between G_AB(a) and the same slice's real b — after the
registration network R has warped G_AB(a) onto b with `pairing_loss=registered`.
Both generators synthesise the foreground only: where their input is background the output
is background (`keep_background`), as in the unified model. Without it the PD <-> FLAIR
CycleGAN settled on the photographic negative (2.3 / 2.8 dB in benchmarks/unified.py).
There is no image pool (in either mode,
so DP and non-DP runs differ only by clipping and noise): a pool would make one sample's loss
depend on other samples, which per-sample clipping cannot bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fedsynth.models.base import Batch, Partners, Stream, SynthesisModel, keep_background
from fedsynth.models.config import ModelConfig
from fedsynth.models.losses import l1_loss, lsgan_loss
from fedsynth.models.mind import mind_loss
from fedsynth.models.patch_discriminator import PatchDiscriminator
from fedsynth.models.registry import register_model
from fedsynth.models.resnet_generator import ResnetGenerator


@register_model("cyclegan")
class CycleGAN(SynthesisModel):
    """Two ResNet generators (G_AB: source->target, G_BA) and two PatchGAN discriminators
    (D_A judges source-domain images, D_B target-domain); LSGAN + cycle + identity losses."""

    groups = {"generators": ("G_AB", "G_BA"), "discriminators": ("D_A", "D_B")}
    needs_every_modality = True
    membership_terms = {"generators": "cycle", "discriminators": "real"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config

        def generator() -> ResnetGenerator:
            return ResnetGenerator(
                1,
                1,
                c.base_channels,
                c.res_blocks,
                c.downsamplings,
                c.norm,
                skips=c.generator == "unet",
            )

        def discriminator() -> PatchDiscriminator:
            return PatchDiscriminator(1, c.disc_channels, c.disc_layers, c.norm)

        self.G_AB, self.G_BA = generator(), generator()
        self.D_A, self.D_B = discriminator(), discriminator()

    @property
    def training_modalities(self) -> tuple[str, ...]:
        return (self.config.source, self.config.target)

    def make_batch(
        self,
        images: Mapping[str, Tensor],
        generator: torch.Generator,
        partners: Partners | None = None,
    ) -> Batch:
        """Stream "A" holds source slices, "B" target slices; empty streams are left out.
        With `partners`, each slice's real image in both domains too."""
        domains = {"A": self.config.source, "B": self.config.target}
        return {
            name: self.with_partners({"image": images[m]}, partners, [m])
            for name, m in domains.items()
            if m in images and len(images[m])
        }

    def loss_terms(self, player: str) -> tuple[str, ...]:
        self._check_player(player)
        if player == "discriminators":
            return ("loss", "real", "fake")
        return ("loss", "adv", "cycle", *self.optional_terms())

    def forward(self, stream: str, player: str, batch: Stream) -> dict[str, Tensor]:
        self._check_player(player)
        if stream not in ("A", "B"):
            raise ValueError(f"CycleGAN has streams 'A' and 'B', got {stream!r}")
        real = batch["image"]
        g_there, g_back, d_here, d_there = (
            (self.G_AB, self.G_BA, self.D_A, self.D_B)
            if stream == "A"
            else (self.G_BA, self.G_AB, self.D_B, self.D_A)
        )
        fake = keep_background(real, g_there(real))
        if player == "discriminators":
            terms = {
                "real": lsgan_loss(d_here(real)[0], real=True),
                "fake": lsgan_loss(d_there(fake)[0], real=False),
            }
            return {"loss": 0.5 * (terms["real"] + terms["fake"]), **terms}
        terms = {
            "adv": lsgan_loss(d_there(fake)[0], real=True),
            "cycle": l1_loss(keep_background(fake, g_back(fake)), real),
        }
        c = self.config
        loss = terms["adv"] + c.lambda_cycle * terms["cycle"]
        if c.lambda_structure > 0:
            terms["structure"] = mind_loss(fake, real)
            loss = loss + c.lambda_structure * terms["structure"]
        if self.pairs:
            there = c.modalities.index(c.target if stream == "A" else c.source)
            index = torch.full((len(real),), there, dtype=torch.long, device=real.device)
            weighted, paired = self.pairing(batch, fake, index)
            terms |= paired
            loss = loss + weighted
        if c.lambda_identity > 0:
            terms["identity"] = l1_loss(keep_background(real, g_back(real)), real)
            loss = loss + c.lambda_identity * terms["identity"]
        return {"loss": loss, **terms}

    def default_source(self, target: str) -> str | None:
        """The other domain: a CycleGAN knows only two."""
        pair = (self.config.source, self.config.target)
        return pair[1 - pair.index(target)] if target in pair else None

    def translate(self, images: Tensor, source: str, target: str) -> Tensor:
        direction = (source, target)
        if direction == (self.config.source, self.config.target):
            return keep_background(images, self.G_AB(images))
        if direction == (self.config.target, self.config.source):
            return keep_background(images, self.G_BA(images))
        raise ValueError(
            f"this CycleGAN translates {self.config.source} <-> {self.config.target}, "
            f"not {source} -> {target}"
        )
