"""Public warm starts shipped with the package, each with its model card (NAME.card.json/.md,
which also holds the one command that reproduces it). Trained on the embedded phantom only:
no private data, ε = 0."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
PHANTOM_WARM_START = HERE / "phantom-cyclegan-t1t2" / "model.safetensors"
"""CycleGAN T1 → T2 with the phantom-3site recipe at 64 px, pretrained on a domain-randomised
phantom cohort (`fedsynth pretrain`)."""
