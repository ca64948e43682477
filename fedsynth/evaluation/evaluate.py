"""Evaluate a synthesis model on held-out paired slices, and show it as an image grid."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedsynth.data.slices import SliceSet  # noqa: E402
from fedsynth.evaluation.metrics import SynthesisMetrics  # noqa: E402
from fedsynth.models.base import SynthesisModel  # noqa: E402


def synthesise(
    model: SynthesisModel, images: np.ndarray, source: str, target: str, batch_size: int = 32
) -> np.ndarray:
    """(N, H, W) source slices → (N, H, W) synthetic target slices, in eval mode."""
    was_training = model.training
    model.eval()
    out = np.empty_like(np.asarray(images, np.float32))
    # A parameter-free model (the linear intensity baseline) runs on the CPU.
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        for start in range(0, len(out), batch_size):
            batch = torch.from_numpy(np.asarray(images[start : start + batch_size], np.float32))
            pred = model.translate(batch[:, None].to(device), source, target)
            out[start : start + batch_size] = pred[:, 0].cpu()
    model.train(was_training)
    return out


def evaluate_translation(
    model: SynthesisModel | None,
    test: Mapping[str, SliceSet],
    source: str,
    target: str,
    metrics: SynthesisMetrics | None = None,
) -> SynthesisMetrics:
    """Metrics of source → target on paired test slices (row i of both is one pair).

    `model=None` scores the source slices as they are: the floor any model must beat.
    Pass `metrics` to accumulate several sites into one per-subject summary.
    """
    src, tgt = test[source], test[target]
    if not np.array_equal(src.subjects, tgt.subjects) or not np.array_equal(
        src.positions, tgt.positions
    ):
        raise ValueError(f"{source}/{target} test slices are not row-aligned pairs")
    metrics = metrics or SynthesisMetrics()
    if len(src) == 0:
        return metrics
    pred = src.images if model is None else synthesise(model, src.images, source, target)
    metrics.update(pred, tgt.images, tgt.masks, tgt.subjects)
    return metrics


def save_sample_grid(
    model: SynthesisModel,
    test: Mapping[str, SliceSet],
    source: str,
    target: str,
    path: Path,
    n: int = 4,
    title: str = "",
) -> Path:
    """Rows: real source / synthetic target / real target, for `n` slices spread over the set."""
    src, tgt = test[source], test[target]
    rows = np.linspace(0, len(src) - 1, min(n, len(src))).round().astype(int)
    fake = synthesise(model, src.images[rows], source, target)
    fig, axes = plt.subplots(3, len(rows), figsize=(2.2 * len(rows), 6.9), squeeze=False)
    for j, r in enumerate(rows):
        for i, (img, label) in enumerate(
            (
                (src.images[r], f"real {source}"),
                (fake[j], f"synthetic {target}"),
                (tgt.images[r], f"real {target}"),
            )
        ):
            ax = axes[i, j]
            ax.imshow(np.rot90(img), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
        axes[0, j].set_title(f"{src.subjects[r]} z={src.positions[r]}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
