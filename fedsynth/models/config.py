"""Model configuration: one typed object with explicit defaults, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

from fedsynth.models.registry import known_kinds

NORM_KINDS = ("instance", "group")
GENERATORS = ("resnet", "unet")
TRAINABLE = ("all", "norm-bias")
PAIRING_LOSSES = ("none", "l1", "registered")
ARCHITECTURE = (
    "kind",
    "modalities",
    "image_size",
    "generator",
    "base_channels",
    "res_blocks",
    "downsamplings",
    "norm",
    "disc_channels",
    "disc_layers",
)
"""Fields that decide the tensors of a model: a warm start must agree on all of them."""


def _check_positive(name: str, value: float, *, integer: bool = True) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"ModelConfig.{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"ModelConfig.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss weights of a synthesis model.

    kind: a registered model kind (`fedsynth.models.registry`): "cyclegan" (source <-> target,
        two generators and two discriminators) or "unified" (StarGAN-style: one
        label-conditioned generator, one discriminator with a real/fake patch head and a
        modality-classification head, any-to-any over `modalities`).
    modalities: modality names; for "unified" the order fixes the label index of each.
    source, target: the translation direction (CycleGAN's A and B; the default direction of
        the unified model). Both must be in `modalities`.
    image_size: square slice size in pixels the model is trained on (checked against data and
        checkpoints); divisible by 2**downsamplings and >= 2**(disc_layers + 2).
    generator: "resnet" (Johnson et al.'s ResNet generator, CycleGAN's) or "unet" (the same
        layers with U-Net skip paths from every encoder resolution to the decoder).
    base_channels, res_blocks, downsamplings: generator width and depth.
    norm: "instance" (InstanceNorm2d, affine, no running stats) or "group" (GroupNorm);
        both keep every sample's output independent of the others, as DP-SGD requires.
    disc_channels, disc_layers: PatchGAN discriminator width and number of stride-2 convs.
    lambda_cycle, lambda_identity: CycleGAN cycle-consistency and identity weights (absolute,
        so 5.0 is the usual "0.5 x lambda_cycle"); lambda_identity=0 skips the identity pass.
    lambda_cls, lambda_rec: unified-model classification and reconstruction weights.
    lambda_structure: weight of the MIND structure term between each synthetic image and its
        source (`fedsynth.models.mind`), both models; 0 skips it.
    lambda_paired: weight of the supervised term between each synthetic image and the real
        image of the same subject and slice in the target contrast, where the data has it
        (needs data.pairing=paired); 0 skips it.
    pairing_loss: what that term is. "l1" (the default, and what lambda_paired always meant:
        recipes and checkpoints from before the choice existed keep their L1): the L1 to the
        partner, right for aligned pairs. "registered" (RegGAN, `fedsynth.models.registration`):
        a registration network R, trained with the generators and part of their DP player,
        warps the synthetic image onto the partner and the L1 is taken there, plus
        lambda_smooth × the field's smoothness penalty: for pairs that are not voxel-aligned.
        "none": no paired term (lambda_paired must be 0). "registered" needs lambda_paired > 0.
    lambda_smooth: weight of R's smoothness penalty (registered only).
    registration_channels: width of R (registered only). R is trained in full whatever
        `trainable` says: it has no warm start to keep.
    lambda_lesion, lesion_labels: inside the paired L1, a pixel whose label map value is one
        of `lesion_labels` counts (1 + lambda_lesion) times. A lesion fills ~1 % of a brain's
        pixels and, on T1, looks like grey matter next to CSF; unweighted, the L1 optimum
        paints it as normal tissue (measured: synthetic FLAIR oedema at 0.9 x the brain
        median against 2.0 on the real FLAIR). Needs label maps on the training slices, so
        it is for public pretraining data; per pixel of one sample, so DP holds. 0: off.
    trainable: what both players train (and, in a federation, what leaves a site): "all"
        weights, or "norm-bias" — only normalisation affines and biases (parameter-efficient
        private fine-tuning of a warm start: per-sample gradients and DP noise over ~2 % of
        the weights; the rest stays bitwise as loaded).
    """

    kind: str = "cyclegan"
    modalities: tuple[str, ...] = ("T1", "T2")
    source: str = "T1"
    target: str = "T2"
    image_size: int = 64
    generator: str = "resnet"
    base_channels: int = 16
    res_blocks: int = 4
    downsamplings: int = 2
    norm: str = "instance"
    disc_channels: int = 16
    disc_layers: int = 3
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_structure: float = 0.0
    lambda_paired: float = 0.0
    pairing_loss: str = "l1"
    lambda_smooth: float = 10.0
    registration_channels: int = 16
    lambda_lesion: float = 0.0
    lesion_labels: tuple[int, ...] = ()
    trainable: str = "all"

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "lesion_labels", tuple(int(v) for v in self.lesion_labels))
        if self.trainable not in TRAINABLE:
            raise ValueError(
                f"ModelConfig.trainable must be one of {TRAINABLE}, got {self.trainable!r}"
            )
        if self.kind not in known_kinds():
            raise ValueError(
                f"ModelConfig.kind must be one of {known_kinds()}, got {self.kind!r}"
            )
        if self.generator not in GENERATORS:
            raise ValueError(
                f"ModelConfig.generator must be one of {GENERATORS}, got {self.generator!r}"
            )
        self._check_pairing()
        if self.norm not in NORM_KINDS:
            raise ValueError(f"ModelConfig.norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if len(self.modalities) < 2 or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                f"ModelConfig.modalities needs >= 2 distinct names, got {self.modalities!r}"
            )
        for name in ("source", "target"):
            if getattr(self, name) not in self.modalities:
                raise ValueError(
                    f"ModelConfig.{name}={getattr(self, name)!r} is not in "
                    f"modalities {self.modalities!r}"
                )
        if self.source == self.target:
            raise ValueError(f"ModelConfig.source and target are both {self.source!r}")
        for name in ("image_size", "base_channels", "res_blocks", "disc_channels", "disc_layers"):
            _check_positive(name, getattr(self, name))
        if not isinstance(self.downsamplings, int) or self.downsamplings < 0:
            raise ValueError(
                f"ModelConfig.downsamplings must be an int >= 0, got {self.downsamplings!r}"
            )
        if self.image_size % 2**self.downsamplings:
            raise ValueError(
                f"ModelConfig.image_size={self.image_size} is not divisible by "
                f"2**downsamplings={2**self.downsamplings}"
            )
        if self.image_size < 2 ** (self.disc_layers + 2):
            raise ValueError(
                f"ModelConfig.image_size={self.image_size} is too small for disc_layers="
                f"{self.disc_layers} (needs >= {2 ** (self.disc_layers + 2)})"
            )
        for name in (
            "lambda_cycle",
            "lambda_identity",
            "lambda_cls",
            "lambda_rec",
            "lambda_structure",
            "lambda_paired",
            "lambda_smooth",
            "lambda_lesion",
        ):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {value!r}")
        if self.lambda_lesion > 0 and not (self.lesion_labels and self.lambda_paired > 0):
            raise ValueError(
                f"ModelConfig.lambda_lesion={self.lambda_lesion} weights the paired term's "
                "lesion pixels: it needs lambda_paired > 0 and lesion_labels (label values), "
                f"got lambda_paired={self.lambda_paired}, lesion_labels={self.lesion_labels}"
            )

    def _check_pairing(self) -> None:
        if self.pairing_loss not in PAIRING_LOSSES:
            raise ValueError(
                f"ModelConfig.pairing_loss must be one of {PAIRING_LOSSES}, "
                f"got {self.pairing_loss!r}"
            )
        if self.pairing_loss == "none" and self.lambda_paired > 0:
            raise ValueError(
                f"ModelConfig.pairing_loss='none' has no paired term to weight, but "
                f"lambda_paired={self.lambda_paired}: set it to 0 or choose 'l1'/'registered'"
            )
        if self.pairing_loss == "registered" and not self.lambda_paired > 0:
            raise ValueError(
                "ModelConfig.pairing_loss='registered' needs lambda_paired > 0 (the weight of "
                f"the registered L1), got {self.lambda_paired!r}"
            )
        _check_positive("registration_channels", self.registration_channels)

    @property
    def registered(self) -> bool:
        """Whether the model has a registration network (pairing_loss='registered')."""
        return self.pairing_loss == "registered"

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)
