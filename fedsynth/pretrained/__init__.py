"""Public warm starts shipped with the package, each with its model card (NAME.card.json/.md,
which also holds the one command that reproduces it). Trained on the embedded phantom only:
no private data, ε = 0."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
PHANTOM_WARM_START = HERE / "phantom-cyclegan-t1t2" / "model.safetensors"
"""CycleGAN T1 → T2 with the phantom-3site recipe at 64 px, pretrained on a domain-randomised
phantom cohort (`fedsynth pretrain`)."""
FOUNDATION = HERE / "phantom-unified" / "model.safetensors"
"""The any-to-any foundation model: unified T1/T2/PD/FLAIR at 128 px, trained long on a
domain-randomised phantom with heads and lesions (scenario "phantom-foundation")."""
PACKAGED = {"phantom-cyclegan-t1t2": PHANTOM_WARM_START, "phantom-unified": FOUNDATION}
"""Packaged warm starts by name: `train.init-checkpoint` may name one instead of a path."""
DEFAULT_MODEL = "phantom-unified"
"""What `fedsynth translate` uses without --checkpoint."""


def checkpoint_path(spec: Path | str) -> Path:
    """The checkpoint `spec` names: a packaged warm start (a bare name of `PACKAGED` that is
    not a file here), else the path itself."""
    path = Path(spec)
    if str(spec) in PACKAGED and not path.exists():
        return PACKAGED[str(spec)]
    return path
