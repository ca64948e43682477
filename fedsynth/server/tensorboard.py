"""A live view of a federation: TensorBoard event files in RUN/tensorboard/, written as each
round completes, so a 30-minute run can be watched in a browser (`fedsynth view RUN`) instead
of read from one terminal line per round.

Per round (the step is the run's round, numbered across resumes):
    server/{psnr,ssim,mae}_brain             the server's score (mean over directions)
    psnr_brain/SRC_TGT, ssim_brain/SRC_TGT   per direction, held-out test subjects
    validation/psnr_brain                    on validation subjects, when there are some
    epsilon/SITE                             ε each site reported (δ and unit in the notice)
    site_psnr_brain/SITE                     each site's own evaluation
    round/seconds, round/updates_rejected    wall time of the round, rejected updates
    samples (image)                          the round's sample grid
    notice (text)                            "synthetic images: not for diagnosis", privacy

The view never stops a run: a failure to write is logged and the run goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BOARD_DIR = "tensorboard"
NOTICE = "synthetic images: not for diagnosis"
Directions = Mapping[tuple[str, str, str], Mapping[str, float]]
"""(part "test" | "validation", source, target) -> that direction's aggregated metrics."""


def round_scalars(
    row: Mapping[str, Any], directions: Directions, seconds: float
) -> dict[str, float]:
    """The scalars of one metrics line (see the module docstring for the tags)."""
    out: dict[str, float] = {}
    for key, value in row["server"].items():
        if key in ("psnr_brain", "ssim_brain", "mae_brain"):
            out[f"server/{key}"] = value
        elif key.startswith("validation/") and key.count("/") == 1 and "_sd" not in key:
            if key.endswith(("psnr_brain", "ssim_brain")):
                out[key] = value
    for (part, source, target), metrics in directions.items():
        if part != "test":
            continue
        for key in ("psnr_brain", "ssim_brain"):
            if key in metrics:
                out[f"{key}/{source}_{target}"] = metrics[key]
    rejected = 0
    for site, values in row["sites"].items():
        if "train/epsilon" in values:
            out[f"epsilon/{site}"] = values["train/epsilon"]
        if "evaluate/psnr_brain" in values:
            out[f"site_psnr_brain/{site}"] = values["evaluate/psnr_brain"]
        rejected += str(values.get("train_status", "")).startswith("rejected")
    out["round/seconds"] = seconds
    out["round/updates_rejected"] = float(rejected)
    return {k: float(v) for k, v in out.items() if math.isfinite(float(v))}


class RoundBoard:
    """The event writer of one run directory (torch's SummaryWriter). `first_round`: the
    first round this process writes; events of later rounds left by a run that died before
    checkpointing them are purged, so a resumed run shows one curve."""

    def __init__(self, run_path: Path, first_round: int, notice: str) -> None:
        self.path = Path(run_path) / BOARD_DIR
        self.first_round, self.notice = first_round, notice
        self._writer: Any = None
        self._last_seconds: float | None = None

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path), purge_step=self.first_round)
            self._writer.add_text("notice", self.notice, self.first_round)
        return self._writer

    def write(self, row: Mapping[str, Any], directions: Directions, sample: Path | None) -> None:
        """The round of metrics line `row` (and its sample grid PNG, if any), flushed."""
        elapsed = float(row["seconds"])
        seconds = elapsed - (self._last_seconds or 0.0)
        self._last_seconds = elapsed
        try:
            writer = self._open()
            step = int(row["round"])
            for tag, value in round_scalars(row, directions, seconds).items():
                writer.add_scalar(tag, value, step)
            if sample is not None and sample.is_file():
                writer.add_image("samples", _png(sample), step, dataformats="HWC")
            writer.flush()
        except (ImportError, OSError, ValueError) as err:
            log.warning("TensorBoard view of %s not updated: %s", self.path, err)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _png(path: Path) -> np.ndarray:
    """A PNG as an (H, W, 3) uint8 array."""
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image[..., :3]
