"""A new model kind is one module: the class, registered. Engine (DP and not), checkpoints,
whole-volume translation and the membership audit then serve it with no other change."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import head
from synthetic_slices import site
from torch import Tensor, nn

from fedsynth.audit.attacks import example_losses
from fedsynth.config import FedsynthConfig
from fedsynth.data.config import PreprocessConfig
from fedsynth.evaluation.translate import translate_volume
from fedsynth.models import ModelConfig, SynthesisModel, build_model, register_model
from fedsynth.models.checkpoint import load_checkpoint, save_checkpoint
from fedsynth.privacy import PrivacyConfig
from fedsynth.training import TrainConfig, train_local


@register_model("toy-affine")
class ToyAffine(SynthesisModel):
    """Target = a·source + b per pixel; D scores a pixel mean. Everything in this one class."""

    groups = {"generators": ("G",), "discriminators": ("D",)}
    needs_every_modality = True
    membership_terms = {"generators": "l1", "discriminators": "real"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.G = nn.Conv2d(1, 1, 1)
        self.D = nn.Linear(1, 1)

    @property
    def training_modalities(self) -> tuple[str, ...]:
        return (self.config.source, self.config.target)

    def make_batch(self, images: Mapping[str, Tensor], generator: torch.Generator):
        x = images.get(self.config.source)
        return {} if x is None or not len(x) else {"src": {"image": x}}

    def loss_terms(self, player: str) -> tuple[str, ...]:
        return ("loss", "l1") if player == "generators" else ("loss", "real")

    def forward(self, stream: str, player: str, batch) -> dict[str, Tensor]:
        x = batch["image"]
        if player == "generators":
            l1 = (self.G(x) - x).abs().flatten(1).mean(1)
            return {"loss": l1, "l1": l1}
        real = (self.D(x.flatten(1).mean(1, keepdim=True))[:, 0] - 1) ** 2
        return {"loss": real, "real": real}

    def translate(self, images: Tensor, source: str, target: str) -> Tensor:
        return torch.tanh(self.G(images))

    def default_source(self, target: str) -> str | None:
        return self.config.source


def test_a_registered_kind_is_a_valid_config_value() -> None:
    cfg = FedsynthConfig.from_flat({"model.kind": "toy-affine"})
    assert cfg.model.kind == "toy-affine"
    with pytest.raises(ValueError, match="ModelConfig.kind must be one of .*got .nope."):
        FedsynthConfig.from_flat({"model.kind": "nope"})


@pytest.mark.parametrize("dp", [False, True])
def test_engine_checkpoint_translate_and_audit_serve_a_new_kind(dp: bool, tmp_path: Path) -> None:
    model = build_model(ModelConfig(kind="toy-affine", image_size=32), seed=0)
    assert isinstance(model, ToyAffine)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    privacy = PrivacyConfig(enabled=dp, unit="slice", noise_seed=0)
    metrics, state = train_local(model, site(), TrainConfig(steps=2, batch_size=4), privacy)
    assert state.step == 2 and ("epsilon" in metrics) == dp
    assert not torch.equal(before["G.weight"], model.state_dict()["G.weight"])

    ckpt = save_checkpoint(tmp_path / "toy.safetensors", model, PreprocessConfig(image_size=32))
    assert isinstance(load_checkpoint(ckpt).model, ToyAffine)
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(head(np.random.default_rng(0), 1.0), np.eye(4)), src)
    out = translate_volume(ckpt, src, "T2", tmp_path / "synth.nii.gz", progress=False)
    assert nib.load(out).shape == nib.load(src).shape

    losses = example_losses(model, {"T1": site().train["T1"]}, "generators")
    assert losses.shape == (12,) and np.isfinite(losses).all()
