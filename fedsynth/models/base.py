"""What every synthesis model offers the engine, DP-SGD and the federation layer.

A model is one nn.Module holding named networks (G_AB, D_A, ... or G, D). Networks are
gathered into two parameter *groups*, which are also DP-SGD's two private players:
"generators" and "discriminators". State-dict keys start with the network name, so a group
is a set of key prefixes the federation can share by name.

Losses go through `forward(stream, player, batch)`, which returns per-sample loss terms; this
single entry point is what `torch.func.functional_call` (and vmap for per-sample gradients)
calls, so the private and non-private paths compute exactly the same loss.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fedsynth.data.config import BACKGROUND
from fedsynth.models.blocks import NORM_TYPES
from fedsynth.models.config import ModelConfig
from fedsynth.models.losses import l1_loss
from fedsynth.models.registration import RegistrationNet, smoothness, warp

PLAYERS = ("generators", "discriminators")
REGISTRATION = "R"
"""Name of the registration network (`pairing_loss=registered`): one of the generators."""

Stream = dict[str, Tensor]
"""Tensors of one kind of training example, all with the same leading (sample) dimension."""
Batch = dict[str, Stream]
"""Stream name -> stream; a model's loss differs per stream (e.g. CycleGAN's A and B images)."""


@dataclass(frozen=True)
class Partners:
    """Paired data (`data.pairing=paired`): for every sampled image, the same subject and slice
    in each of the model's K modalities.

    images: modality of the sampled image -> (n, K, H, W), channel j the model's modality j
        (zeros where the subject has none); the same rows as the sampled images.
    available: modality of the sampled image -> (n, K) bool, which of the model's modalities
        the sample's subject has at that slice (the site, and then the subject: a partly
        paired site's single-contrast subjects have only their own).
    weights: modality of the sampled image -> (n, 1, H, W) per-pixel weights of the paired
        L1 (1, or 1 + lambda_lesion on lesion pixels: `ModelConfig.lambda_lesion`), or None.
    """

    images: dict[str, Tensor]
    available: dict[str, Tensor]
    weights: dict[str, Tensor] | None = None


def keep_background(source: Tensor, output: Tensor) -> Tensor:
    """`output` where `source` is foreground, exactly BACKGROUND (-1 after preprocessing)
    where it is background: a generator synthesises the head, never the air around it. A
    generator free to paint the background can settle on the photographic negative (brain
    dark on a bright field), which cycle losses accept and discriminators rarely argue out."""
    return torch.where(source > BACKGROUND, output, torch.full_like(output, BACKGROUND))


class SynthesisModel(nn.Module, abc.ABC):
    """Base of CycleGAN and the unified model: groups, keys and the loss/translation interface."""

    groups: Mapping[str, tuple[str, ...]]
    """Group name -> names of the networks in it; the group names are PLAYERS."""
    needs_every_modality: bool = True
    """True: a site must hold training slices of every `training_modalities` entry (CycleGAN
    needs both domains); False: any non-empty subset trains (the unified model)."""
    membership_terms: Mapping[str, str]
    """Player -> the per-example loss term a membership-inference attack thresholds."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    @property
    @abc.abstractmethod
    def training_modalities(self) -> tuple[str, ...]:
        """Modalities whose training slices this model learns from."""

    @abc.abstractmethod
    def make_batch(
        self,
        images: Mapping[str, Tensor],
        generator: torch.Generator,
        partners: Partners | None = None,
    ) -> Batch:
        """Modality -> images (n, 1, H, W) to the model's streams (any random choices drawn
        from `generator`, per sample, so no sample's loss depends on another's); with
        `partners` (paired data) each stream also holds every sample's partners."""

    @property
    def pairs(self) -> bool:
        """Whether the generators pay a paired term (`lambda_paired` > 0)."""
        return self.config.lambda_paired > 0

    def pairing(self, stream: Stream, fake: Tensor, target: Tensor) -> tuple[Tensor, Stream]:
        """The paired terms of `fake` against the real image of modality index `target` (n,)
        of the same subject and slice, per sample and 0 where the subject has no such image,
        and their weighted sum (what the generators' loss adds).

        "paired": the L1 (`pairing_loss=l1`), or the L1 after R has warped `fake` onto the
        real image (`registered`, with "smooth": the field's smoothness penalty). Each pixel
        is weighted by the stream's `partner_weight` when it has one (lesion pixels; warped
        with `fake`, whose anatomy they describe)."""
        c = self.config
        k = c.num_modalities
        select = (target[:, None] == torch.arange(k, device=target.device)).to(fake.dtype)
        real = (stream["partner"] * select[:, :, None, None]).sum(dim=1, keepdim=True)
        available = (stream["partner_available"] * select).sum(dim=1)
        pixel = stream.get("partner_weight")
        terms: Stream = {}
        if c.registered:
            flow = self.get_submodule(REGISTRATION)(fake, real)
            moved = warp(fake if pixel is None else torch.cat([fake, pixel], dim=1), flow)
            fake, pixel = moved[:, :1], (None if pixel is None else moved[:, 1:])
            terms["smooth"] = available * smoothness(flow)
        if pixel is not None:
            fake, real = pixel * fake, pixel * real  # mean of pixel · |fake − real| (pixel ≥ 0)
        terms["paired"] = available * l1_loss(fake, real)
        weighted = c.lambda_paired * terms["paired"]
        if c.registered:
            weighted = weighted + c.lambda_smooth * terms["smooth"]
        return weighted, terms

    def add_registration(self) -> None:
        """Build R (`pairing_loss=registered`). `build_model` calls it after initialising the
        synthesis networks, so they start from the same weights with and without R."""
        self.add_module(REGISTRATION, RegistrationNet(self.config.registration_channels))

    def with_partners(
        self, stream: Stream, partners: Partners | None, modalities: list[str]
    ) -> Stream:
        """`stream` (samples of `modalities`, concatenated in that order) with its partner
        images and availability, when there are partners."""
        if partners is None:
            return stream
        images = torch.cat([partners.images[m] for m in modalities])
        available = torch.cat([partners.available[m] for m in modalities]).to(images.dtype)
        out = {**stream, "partner": images, "partner_available": available}
        if partners.weights is not None:
            out["partner_weight"] = torch.cat([partners.weights[m] for m in modalities])
        return out

    @abc.abstractmethod
    def loss_terms(self, player: str) -> tuple[str, ...]:
        """Names of the terms `forward` returns for `player` ("loss" first), known before any
        batch so metrics keep the same keys even when a (Poisson) batch is empty."""

    @abc.abstractmethod
    def forward(self, stream: str, player: str, batch: Stream) -> dict[str, Tensor]:
        """Per-sample loss terms (each (n,)) of `player` on one stream; "loss" is their
        weighted total, the quantity that is differentiated."""

    @abc.abstractmethod
    def translate(self, images: Tensor, source: str, target: str) -> Tensor:
        """Synthesise `target`-modality images (n, 1, H, W) from `source` images in [-1, 1]."""

    def optional_terms(self) -> tuple[str, ...]:
        """Generator terms only some configurations compute (a zero weight skips the pass)."""
        c = self.config
        weights = (
            ("structure", c.lambda_structure),
            ("paired", c.lambda_paired),
            ("smooth", float(c.registered)),
            ("identity", c.lambda_identity),
        )
        return tuple(name for name, weight in weights if weight > 0)

    def default_source(self, target: str) -> str | None:
        """The input modality to assume when synthesising `target` from an input that does
        not name its own (None: it must be named)."""
        return None

    def group_keys(self, group: str) -> list[str]:
        """State-dict keys of a group, in state-dict order."""
        prefixes = tuple(f"{net}." for net in self._networks(group))
        return [key for key in self.state_dict() if key.startswith(prefixes)]

    def group_parameters(self, group: str) -> dict[str, nn.Parameter]:
        """Named trainable parameters of a group (`config.trainable` of them), in a fixed order
        (optimizer state needs it). The others are constants to every training path."""
        prefixes = tuple(f"{net}." for net in self._networks(group))
        return {
            k: p for k, p in self.named_parameters() if k.startswith(prefixes) and self._trains(k)
        }

    def _trains(self, key: str) -> bool:
        """Whether the state-dict entry `key` is trained under `config.trainable`."""
        return key in self._trained_keys

    @functools.cached_property
    def _trained_keys(self) -> frozenset[str]:
        keys = self.state_dict().keys()
        if self.config.trainable == "all":
            return frozenset(keys)
        norms = self.norm_keys()
        fresh = f"{REGISTRATION}."  # R has no warm start to keep: trained in full
        return frozenset(
            k for k in keys if k.endswith(".bias") or k in norms or k.startswith(fresh)
        )

    def state_with(self, arrays: Mapping[str, Any]) -> dict[str, Tensor]:
        """This model's state dict with some entries replaced by `arrays` (numpy or torch,
        any shape with the right number of elements), cast to each entry's dtype."""
        state = self.state_dict()
        for key, value in arrays.items():
            if key not in state:
                raise KeyError(f"{key!r} is not a tensor of this {type(self).__name__}")
            tensor = torch.as_tensor(np.asarray(value))
            state[key] = tensor.to(state[key].dtype).reshape(state[key].shape)
        return state

    def norm_keys(self) -> set[str]:
        """State-dict keys of every normalisation layer (kept local in FedBN-style federation)."""
        return {
            f"{name}.{key}"
            for name, module in self.named_modules()
            if isinstance(module, NORM_TYPES)
            for key in module.state_dict()
        }

    def shared_keys(self, groups: Iterable[str], keep_norm_local: bool = False) -> list[str]:
        """Keys of the given groups that leave a site: the trained ones (frozen weights are
        the same everywhere), optionally without the norm layers."""
        local = self.norm_keys() if keep_norm_local else set()
        return [
            k
            for group in groups
            for k in self.group_keys(group)
            if k not in local and self._trains(k)
        ]

    def _networks(self, group: str) -> tuple[str, ...]:
        """The networks of `group`; R (when built) is one of the generators: its loss reads
        real images, so it is clipped, noised and accounted with them."""
        if group not in self.groups:
            raise ValueError(
                f"unknown parameter group {group!r}; expected one of {tuple(self.groups)}"
            )
        nets = self.groups[group]
        if group == "generators" and REGISTRATION in self._modules:
            nets = (*nets, REGISTRATION)
        return nets

    def _check_player(self, player: str) -> None:
        if player not in PLAYERS:
            raise ValueError(f"unknown player {player!r}; expected one of {PLAYERS}")
