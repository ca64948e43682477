"""`train.device`: the name resolves to the hardware torch sees (auto prefers an accelerator,
a named one torch cannot see is an error), and on a GPU a private site trains there with the
same secret noise stream and writes checkpoints any machine loads (skipped without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic_slices import site, tiny_config

from fedsynth.config import FedsynthConfig
from fedsynth.data.config import PreprocessConfig
from fedsynth.models import build_model
from fedsynth.models.checkpoint import load_checkpoint, save_checkpoint
from fedsynth.privacy import PrivacyConfig
from fedsynth.training import TrainConfig, train_local
from fedsynth.training import device as device_module
from fedsynth.training.device import resolve_device


def sees(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device_module, "_mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda")],
)
def test_auto_prefers_an_accelerator(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    sees(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_a_named_accelerator_torch_cannot_see_is_an_error(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    sees(monkeypatch, False, False)
    with pytest.raises(ValueError, match=f"train.device={name}, but torch sees no"):
        resolve_device(name)


def test_unknown_device_names_are_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="TrainConfig.device must be one of"):
        TrainConfig(device="tpu")


def test_the_engine_trains_on_the_resolved_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor the model sees during a private step is on the device train.device
    names (here the CPU: what `auto` resolves to on this machine)."""
    seen: set[torch.device] = set()
    model = build_model(tiny_config())
    for net in (model.G_AB, model.D_B):
        net.register_forward_pre_hook(lambda mod, args: seen.add(args[0].device))
    cfg = TrainConfig(steps=1, batch_size=4, device="cpu")
    dp = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=3)
    train_local(model, site(), cfg, dp)
    assert seen == {torch.device("cpu")}
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_private_site_trains_on_cuda_with_the_same_noise_and_a_portable_checkpoint(
    tmp_path: Path,
) -> None:
    dp = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=3)
    results = {}
    for name in ("cpu", "cuda"):
        model = build_model(tiny_config(), seed=0)
        train_local(model, site(), TrainConfig(steps=2, batch_size=4, device=name), dp)
        assert {p.device.type for p in model.parameters()} == {name}
        results[name] = {k: v.cpu() for k, v in model.state_dict().items()}
    for key, value in results["cpu"].items():
        torch.testing.assert_close(results["cuda"][key], value, atol=1e-4, rtol=1e-3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, PreprocessConfig(image_size=32))
    loaded = load_checkpoint(path).model
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


def test_bf16_precision_runs_convolutions_in_bfloat16_and_keeps_weights_fp32() -> None:
    dtypes: set[torch.dtype] = set()
    model = build_model(tiny_config())
    model.G_AB.body[0].conv.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
    privacy = PrivacyConfig(enabled=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics, _ = train_local(model, site(), TrainConfig(steps=2, batch_size=4, precision="bf16"),
                             privacy)
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if "loss" in k)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    dtypes.clear()
    train_local(model, site(), TrainConfig(steps=1, batch_size=4), privacy)
    assert dtypes == {torch.float32}


def test_unknown_precision_and_bf16_with_dp_are_refused() -> None:
    with pytest.raises(ValueError, match="TrainConfig.precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="precision=bf16 is for training without DP"):
        FedsynthConfig.from_flat({"train.precision": "bf16", "privacy.enabled": True})
    dp = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=3)
    with pytest.raises(ValueError, match="precision=bf16 is for training without DP"):
        train_local(build_model(tiny_config()), site(), TrainConfig(precision="bf16"), dp)


@pytest.mark.parametrize("private", [False, True])
def test_auto_precision_is_bf16_only_where_native_and_not_private(private: bool) -> None:
    """The oracle asks torch's own oneDNN query; DP runs always stay fp32 (and are allowed)."""
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    dtypes: set[torch.dtype] = set()
    model = build_model(tiny_config())
    model.G_AB.body[0].conv.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
    privacy = (
        PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=3)
        if private
        else PrivacyConfig(enabled=False)
    )
    FedsynthConfig.from_flat({"train.precision": "auto", "privacy.enabled": private})
    train_local(model, site(), TrainConfig(steps=1, batch_size=4, precision="auto"), privacy)
    assert dtypes == {torch.bfloat16 if native and not private else torch.float32}
