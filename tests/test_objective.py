"""The objective that keeps anatomy: both models keep the source's background exactly, and the
MIND structure term in their generator losses is zero for a generator that only remaps
intensities and large for one that moves structures. The generators are replaced by
stand-ins whose output is known, so the expectations come from the stand-ins, not the nets."""

from __future__ import annotations

import pytest
import torch
from synthetic_slices import SIZE, head, tiny_config
from torch import Tensor, nn

from fedsynth.models import build_model


class Remap(nn.Module):
    """A 'generator' that inverts and rescales intensities: the same structures (the kept
    background makes the whole image only nearly affine in the source, at the brain edge)."""

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor:
        return -0.7 * x[:, :1] + 0.1


class Shift(nn.Module):
    """A 'generator' that moves everything by 4 pixels: other structures."""

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor:
        return torch.roll(x[:, :1], shifts=(4, 4), dims=(-2, -1))


def heads(n: int = 2) -> Tensor:
    return torch.cat([head(SIZE, seed=i) for i in range(n)])


def generator_terms(kind: str, stand_in: nn.Module, weight: float) -> dict[str, Tensor]:
    model = build_model(tiny_config(kind, lambda_structure=weight, lambda_identity=0.0))
    if kind == "cyclegan":
        model.G_AB = stand_in
        stream = model.make_batch({"T1": heads()}, torch.Generator().manual_seed(0))["A"]
        return model("A", "generators", stream)
    model.G = stand_in
    stream = model.make_batch({"T1": heads()}, torch.Generator().manual_seed(0))["all"]
    return model("all", "generators", stream)


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_structure_term_is_zero_for_remapped_intensities_and_large_for_moved_ones(
    kind: str,
) -> None:
    remapped = generator_terms(kind, Remap(), 1.0)["structure"]
    moved = generator_terms(kind, Shift(), 1.0)["structure"]
    assert remapped.shape == moved.shape == (2,)
    assert remapped.max() < 0.01
    assert moved.min() > 0.05 > 5 * remapped.max()


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_structure_weight_adds_its_term_to_the_generator_loss(kind: str) -> None:
    """loss(λ) − loss(0) = λ · structure, sample by sample; λ = 0 computes no term at all."""
    off = generator_terms(kind, Shift(), 0.0)
    on = generator_terms(kind, Shift(), 2.5)
    assert "structure" not in off
    torch.testing.assert_close(on["loss"] - off["loss"], 2.5 * on["structure"])


@pytest.mark.parametrize(("source", "target", "net"), [("T1", "T2", "G_AB"), ("T2", "T1", "G_BA")])
def test_cyclegan_keeps_the_source_background_in_both_directions(
    source: str, target: str, net: str
) -> None:
    """Where the source is background (-1) the output is -1; elsewhere it is the raw
    generator's own output."""
    model = build_model(tiny_config("cyclegan"))
    x = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x[0, 0, :, :7] = -1.0
    x[1, 0, 10:14, 2:6] = -1.0
    background = x == -1.0
    with torch.no_grad():
        out = model.translate(x, source, target)
        raw = getattr(model, net)(x)
    assert background.sum() == 7 * SIZE + 16
    assert (out[background] == -1.0).all()
    assert (raw[background] != -1.0).all()
    torch.testing.assert_close(out[~background], raw[~background])


def test_cyclegan_training_fakes_keep_the_background_too() -> None:
    """The adversarial term judges the kept-background fake: a generator that paints the
    background gets the same discriminator input as one that does not."""
    model = build_model(tiny_config("cyclegan"))
    x = heads()
    seen = []
    model.D_B.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    model("A", "generators", {"image": x})
    assert (seen[0][x == -1.0] == -1.0).all()
