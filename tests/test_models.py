"""Networks, losses, parameter groups and model configuration."""

from __future__ import annotations

import pytest
import torch
from synthetic_slices import SIZE, tiny_config
from torch import nn

from fedsynth.models import PLAYERS, CycleGAN, ModelConfig, UnifiedGAN, build_model
from fedsynth.models.blocks import resnet_plan, run_plan
from fedsynth.models.losses import classification_loss, l1_loss, lsgan_loss

KINDS = ("cyclegan", "unified")


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "config",
    [
        tiny_config("cyclegan"),
        tiny_config("cyclegan", lambda_identity=0.0),
        tiny_config("unified"),
        tiny_config("cyclegan", generator="unet", lambda_structure=1.0),
        tiny_config("unified", generator="unet", downsamplings=2, lambda_structure=1.0),
    ],
    ids=["cyclegan", "cyclegan-no-identity", "unified", "cyclegan-unet", "unified-unet"],
)
def test_losses_are_per_sample_and_finite(config: ModelConfig) -> None:
    model = build_model(config)
    batch = model.make_batch(
        {"T1": images(3), "T2": images(2, 1)}, torch.Generator().manual_seed(0)
    )
    for stream, tensors in batch.items():
        n = len(tensors["image"])
        for player in PLAYERS:
            terms = model(stream, player, tensors)
            assert tuple(terms) == model.loss_terms(player)
            assert all(v.shape == (n,) and torch.isfinite(v).all() for v in terms.values())


@pytest.mark.parametrize("kind", KINDS)
def test_translate_keeps_shape_and_range(kind: str) -> None:
    model = build_model(tiny_config(kind))
    with torch.no_grad():
        out = model.translate(images(2), "T1", "T2")
    assert out.shape == (2, 1, SIZE, SIZE)
    assert out.abs().max() <= 1


def test_translate_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="FLAIR"):
        build_model(tiny_config("cyclegan")).translate(images(1), "T1", "FLAIR")
    with pytest.raises(ValueError, match="FLAIR"):
        build_model(tiny_config("unified")).translate(images(1), "T1", "FLAIR")


def test_unified_targets_differ_from_source_label() -> None:
    model = build_model(tiny_config("unified"))
    batch = model.make_batch(
        {"T1": images(20), "PD": images(20, 1)}, torch.Generator().manual_seed(0)
    )["all"]
    assert (batch["target"] != batch["label"]).all()
    assert set(batch["label"].tolist()) == {0, 2}


def test_unified_output_depends_on_the_target_code_through_every_block() -> None:
    """Different target (and source) codes give different outputs — also when the label
    planes at the input are cut off, i.e. through the FiLM modulation alone."""
    model = build_model(tiny_config("unified"))
    with torch.no_grad():
        for name, param in model.G.named_parameters():
            if name.endswith(("film.scale", "film.shift")):
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        model.G.body[0].block.conv.weight[:, 1:] = 0  # the stem ignores the label planes
        x = images(2)
        t2, pd = model.translate(x, "T1", "T2"), model.translate(x, "T1", "PD")
        from_pd = model.translate(x, "PD", "T2")
    assert (t2 - pd).abs().max() > 1e-3
    assert (t2 - from_pd).abs().max() > 1e-3
    fresh = build_model(tiny_config("unified")).G  # an untrained FiLM is the identity
    for name, param in fresh.named_parameters():
        if name.endswith(("film.scale", "film.shift")):
            assert torch.count_nonzero(param) == 0, name


def test_unified_output_keeps_the_source_background_and_synthesises_the_rest() -> None:
    """Where the source is background (-1) the output is -1; elsewhere it is the generator's
    own output for that code (the raw network, called directly)."""
    model = build_model(tiny_config("unified"))
    x = images(2)
    x[0, 0, :, :10] = -1.0
    x[1, 0, 5:9, 5:9] = -1.0
    background = x == -1.0
    with torch.no_grad():
        out = model.translate(x, "T1", "PD")
        planes = torch.zeros(2, 3, SIZE, SIZE)
        planes[:, 2] = 1.0  # PD is label 2 of (T1, T2, PD)
        code = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]] * 2)  # target PD ⊕ source T1
        raw = model.G(torch.cat([x, planes], dim=1), code)
    assert background.sum() == 10 * SIZE + 16
    assert (out[background] == -1.0).all()
    assert (raw[background] != -1.0).all()  # the raw network would not give background
    torch.testing.assert_close(out[~background], raw[~background])


def test_unified_discriminator_judges_each_image_with_its_own_modality_head() -> None:
    model = build_model(tiny_config("unified"))
    x = images(3)
    scores, _ = model.D(x)
    assert scores.shape[1] == 3  # one head per modality
    picked, _ = model.judge(x, torch.tensor([0, 2, 1]))
    for i, head in enumerate((0, 2, 1)):
        torch.testing.assert_close(picked[i, 0], scores[i, head])


@pytest.mark.parametrize(
    ("kind", "cls", "nets"),
    [
        ("cyclegan", CycleGAN, {"generators": ("G_AB", "G_BA"), "discriminators": ("D_A", "D_B")}),
        ("unified", UnifiedGAN, {"generators": ("G",), "discriminators": ("D",)}),
    ],
)
def test_groups_partition_the_state_dict(kind: str, cls: type, nets: dict) -> None:
    model = build_model(tiny_config(kind))
    assert isinstance(model, cls)
    keys = {p: model.group_keys(p) for p in PLAYERS}
    assert sorted(keys["generators"] + keys["discriminators"]) == sorted(model.state_dict())
    for player, names in nets.items():
        assert {k.split(".")[0] for k in keys[player]} == set(names)
    norms = model.norm_keys()
    assert norms and all(".norm." in k for k in norms)
    shared = model.shared_keys(["generators"], keep_norm_local=True)
    assert set(shared) == set(keys["generators"]) - norms
    with pytest.raises(ValueError, match="encoders"):
        model.group_keys("encoders")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", ["instance", "group"])
@pytest.mark.parametrize("generator", ["resnet", "unet"])
def test_networks_are_dp_safe(kind: str, norm: str, generator: str) -> None:
    """docs/architecture.md §3 layer rules: no batch statistics, no reflect-mode convs, no
    in-place activations."""
    registered = {"lambda_paired": 1.0, "pairing_loss": "registered"}  # R is checked too
    model = build_model(ModelConfig(kind=kind, norm=norm, generator=generator, **registered))
    assert model.get_submodule("R") is not None
    for module in model.modules():
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm)
        if isinstance(module, nn.Conv2d):
            assert module.padding_mode == "zeros"
        if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            assert not module.inplace
        if isinstance(module, nn.InstanceNorm2d):
            assert module.affine and not module.track_running_stats
    assert not list(model.buffers())


def test_unet_plan_feeds_each_decoder_layer_the_encoder_output_at_its_resolution() -> None:
    """The skip paths, checked with stand-in layers that record their inputs: the oracle is
    the U-Net wiring written out (stem -> e0, down_i -> e_i; decoder layer j sees its input
    concatenated with e_(D-j), the head with e0)."""
    plan = resnet_plan(1, 1, 4, 1, 2, "instance", skips=True)
    inputs: list[list[float]] = []

    def stand_in(spec, i):
        """Layer i records its input's channel values and outputs the constant i."""

        def layer(x):
            inputs.append(x[0, :, 0, 0].tolist())
            return torch.full((1, spec.out_channels, 2, 2), float(i))

        return layer

    run_plan([(spec, stand_in(spec, i)) for i, spec in enumerate(plan)], torch.zeros(1, 1, 2, 2))
    # layers: 0 stem(4) 1 down(8) 2 down(16) 3 residual(16) 4 up(8) 5 up(4) 6 head(1)
    assert [len(x) for x in inputs] == [s.in_channels for s in plan] == [1, 4, 8, 16, 32, 16, 8]
    assert inputs[4] == [3.0] * 16 + [2.0] * 16  # residual output ⊕ e2 (the last down)
    assert inputs[5] == [4.0] * 8 + [1.0] * 8  # up ⊕ e1
    assert inputs[6] == [5.0] * 4 + [0.0] * 4  # up ⊕ e0 (the stem)


def test_the_resnet_plan_has_no_skip_paths() -> None:
    plan = resnet_plan(1, 1, 4, 1, 2, "instance")
    assert not any(s.keep or s.skip for s in plan)


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = (build_model(tiny_config(), seed=s) for s in (0, 0, 1))
    assert torch.rand(1) == expected
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.G_AB.body[0].conv.weight, c.G_AB.body[0].conv.weight)


def test_default_model_runs_at_64_px() -> None:
    model = build_model(ModelConfig())
    with torch.no_grad():
        assert model.translate(torch.zeros(1, 1, 64, 64), "T1", "T2").shape == (1, 1, 64, 64)


def test_per_sample_losses() -> None:
    pred = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    assert lsgan_loss(pred, real=True).tolist() == [0.0, 1.0]
    assert lsgan_loss(pred, real=False, reduction="mean").item() == 0.5
    assert l1_loss(pred, torch.zeros_like(pred)).tolist() == [1.0, 0.0]
    logits = torch.tensor([[10.0, -10.0], [10.0, -10.0]])
    ce = classification_loss(logits, torch.tensor([0, 1]))
    assert ce[0] < 1e-6 < 20 - 1e-3 < ce[1]
    with pytest.raises(ValueError, match="'sum'"):
        l1_loss(pred, pred, reduction="sum")


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({"kind": "pix2pix"}, "pix2pix"),
        ({"norm": "batch"}, "batch"),
        ({"modalities": ("T1",), "target": "T1"}, "('T1',)"),
        ({"modalities": ("T1", "T1")}, "('T1', 'T1')"),
        ({"target": "FLAIR"}, "FLAIR"),
        ({"target": "T1"}, "T1"),
        ({"image_size": 66}, "66"),
        ({"image_size": 16}, "16"),
        ({"base_channels": 0}, "0"),
        ({"res_blocks": 2.5}, "2.5"),
        ({"downsamplings": -1}, "-1"),
        ({"lambda_cycle": -1.0}, "-1.0"),
        ({"generator": "transformer"}, "transformer"),
        ({"lambda_paired": -2.0}, "-2.0"),
        ({"lambda_structure": -3.0}, "-3.0"),
    ],
)
def test_model_config_rejects_bad_values(overrides: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**overrides)


def test_model_config_accepts_lists() -> None:
    assert ModelConfig(kind="unified", modalities=["T1", "T2", "PD"]).modalities == (
        "T1",
        "T2",
        "PD",
    )
