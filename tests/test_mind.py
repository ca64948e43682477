"""The MIND structure term: a naive per-pixel loop is the oracle for the descriptor, and the
loss behaves as a structure term should (zero for remapped intensities, large for moved
structures, one sample's value independent of the others)."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic_slices import head

from fedsynth.models.mind import mind_descriptor, mind_loss


def naive_mind(img: list[list[float]], patch: int = 3, floor: float = 1e-3) -> list:
    """MIND written out pixel by pixel, from Heinrich et al.'s definition."""
    h, w = len(img), len(img[0])

    def at(i: int, j: int) -> float:  # replicated border
        return img[min(max(i, 0), h - 1)][min(max(j, 0), w - 1)]

    offsets = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    r = patch // 2
    dist = [[[0.0] * w for _ in range(h)] for _ in offsets]
    for k, (dy, dx) in enumerate(offsets):
        for i in range(h):
            for j in range(w):
                total, count = 0.0, 0
                for a in range(i - r, i + r + 1):
                    for b in range(j - r, j + r + 1):
                        if 0 <= a < h and 0 <= b < w:  # the patch stays inside the image
                            total += (at(a, b) - at(a + dy, b + dx)) ** 2
                            count += 1
                dist[k][i][j] = total / count
    var = [[sum(dist[k][i][j] for k in range(4)) / 4 for j in range(w)] for i in range(h)]
    level = sum(sum(row) for row in var) / (h * w)
    out = [[[0.0] * w for _ in range(h)] for _ in offsets]
    for i in range(h):
        for j in range(w):
            v = max(var[i][j], floor * level)
            e = [math.exp(-dist[k][i][j] / v) for k in range(4)]
            for k in range(4):
                out[k][i][j] = e[k] / max(e)
    return out


@pytest.mark.parametrize("kind", ["head", "texture to the border"])
def test_descriptor_matches_a_naive_loop(kind: str) -> None:
    g = torch.Generator().manual_seed(4)
    img = head(12, seed=3) if kind == "head" else torch.rand(1, 1, 9, 11, generator=g)
    expected = torch.tensor(naive_mind(img[0, 0].tolist()), dtype=torch.float64)
    got = mind_descriptor(img.double())[0]
    assert torch.allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (-1.0, 0.0), (2.5, -0.4), (-0.3, 0.7)])
def test_loss_is_zero_for_an_affine_remap_of_the_source(a: float, b: float) -> None:
    src = head().double()
    assert mind_loss(a * src + b, src).item() < 1e-6


def test_loss_is_small_for_a_monotone_remap_and_large_for_moved_or_missing_structure() -> None:
    src = head()
    remapped = mind_loss(torch.tanh(3 * src) ** 3, src).item()
    shifted = mind_loss(torch.roll(src, 3, dims=-1), src).item()
    no_lesion = mind_loss(head(lesion=False), src).item()
    assert remapped < 0.05
    assert shifted > 3 * remapped and shifted > 0.1
    assert no_lesion > 0.01  # a dropped lesion costs something


def test_one_samples_loss_does_not_depend_on_the_others() -> None:
    a, b, c = head(seed=1), head(seed=2), head(seed=3)
    together = mind_loss(torch.cat([a, b]), torch.cat([b, a]))
    swapped = mind_loss(torch.cat([a, c]), torch.cat([b, c]))
    assert together.shape == (2,)
    assert torch.equal(together[0], swapped[0])


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n, 1, H, W\)"):
        mind_descriptor(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        mind_descriptor(torch.zeros(1, 1, 8, 8), patch=2)
