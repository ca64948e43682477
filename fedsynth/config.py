"""The one typed configuration of a fedsynth run, and its flat form.

`FedsynthConfig` nests the settings of each part (data, model, train, privacy, federation),
each a frozen dataclass with explicit defaults and validation. Flower's run config and
`ConfigRecord`s only carry flat scalars, so the config converts to and from flat keys
`section.field-name` (e.g. `model.base-channels = 16`, `data.modalities = "T1,T2"`); a key
that is not a field is an error naming it, and a missing key keeps its default — so the
same defaults hold under `flwr run` (a deployment's run config, or the whole config that
`fedsynth simulate` generates) and the CLI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsynth.data.config import DataConfig, PreprocessConfig
from fedsynth.flat import Scalar, build, flatten
from fedsynth.models.config import ModelConfig
from fedsynth.privacy.config import PrivacyConfig
from fedsynth.training.config import TrainConfig
from fedsynth.training.device import BF16_WITH_DP

if TYPE_CHECKING:
    from fedsynth.models import SynthesisModel

SHARE = ("generators", "all")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "median", "trimmed-mean")
"""Names of `fedsynth.strategies.STRATEGIES` (checked here, before a run directory exists)."""
DERIVED_KEYS = {
    "model.image-size": "data.preprocess.image-size",
    "model.modalities": "data.modalities",
}
"""Model facts stored once, in the data section: flat key -> the key it is derived from."""


def derived_model_fields(data: DataConfig) -> dict[str, Any]:
    """The model facts that belong to the data section (their one owner)."""
    return {"image_size": data.preprocess.image_size, "modalities": data.modalities}


@dataclass(frozen=True)
class FederationConfig:
    """How the federation runs.

    num_rounds: federated rounds; local_steps: engine steps per site per round.
    strategy: fedavg | fedprox | fedadam | median | trimmed-mean (fedsynth.strategies).
    share: "generators" (discriminators stay at the sites, the FedMed-GAN choice) or "all".
    keep_norm_local: FedBN-style, normalisation parameters never leave a site.
    proximal_mu: FedProx μ (clients add μ/2‖w − w_global‖² over the shared tensors); only
        with strategy fedprox, which sends it to the sites (they read nothing else).
    server_lr: FedAdam η; trim_beta: share trimmed at each end by trimmed-mean.
    norm_factor: reject updates whose distance to the global model exceeds this × the median.
    min_nodes: minimum sites to start a round and to train in it; fraction_train: share of
    available sites asked per round; round_timeout: seconds to wait for replies (then the
    round proceeds with the sites that answered); fraction_evaluate: share of sites that
    score each round's model on their held-out subjects (0: none — in a deployment each
    evaluation is one more process start per site per round).
    run_dir: where checkpoints, metrics and the report go; resume_from: a run directory whose
    last complete checkpoint the run continues from ("" = start fresh).
    state_dir: where simulated sites keep their local state ("" = run_dir/sites).
    server_eval: evaluate on the held-out paired test sets at the server (simulation, where
    the server may read the phantom) besides the clients' own evaluation.
    secure_aggregation: aggregate with Flower's SecAgg+ (the server sees only the sum of the
    sites' updates); plain weighted FedAvg over the shared tensors (fedsynth.server.secure).
    evaluate_in_train: one message per site and round: each site scores the global model it
    received, before training on it, and sends the scores in its train reply
    (`received-…` metrics, `fedsynth.reply_metrics`), so round r's reply scores round r-1's
    model (metrics.jsonl: `received/…` with `received_round`). The last round's model is
    scored by one evaluate message (`fraction_evaluate` of the sites) after its training.
    Not with secure_aggregation (the SecAgg+ path keeps its evaluate messages).
    """

    num_rounds: int = 3
    local_steps: int = 20
    strategy: str = "fedavg"
    share: str = "generators"
    keep_norm_local: bool = False
    proximal_mu: float = 0.0
    server_lr: float = 1e-3
    trim_beta: float = 0.34
    norm_factor: float = 10.0
    min_nodes: int = 2
    fraction_train: float = 1.0
    round_timeout: float = 600.0
    fraction_evaluate: float = 1.0
    run_dir: Path = Path("runs/latest")
    resume_from: Path | None = None
    state_dir: Path | None = None
    server_eval: bool = True
    secure_aggregation: bool = False
    evaluate_in_train: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"federation.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}"
            )
        if self.proximal_mu and self.strategy != "fedprox":
            raise ValueError(
                f"federation.proximal-mu={self.proximal_mu} needs federation.strategy='fedprox'"
                f" (not {self.strategy!r}): only FedProx sends μ to the sites"
            )
        if self.share not in SHARE:
            raise ValueError(f"federation.share={self.share!r}: expected one of {SHARE}")
        for name in ("num_rounds", "local_steps", "min_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"federation.{name}={getattr(self, name)}: expected >= 1")
        if not 0 < self.fraction_train <= 1:
            raise ValueError(f"federation.fraction_train={self.fraction_train}: expected (0, 1]")
        if not 0 <= self.fraction_evaluate <= 1:
            raise ValueError(
                f"federation.fraction_evaluate={self.fraction_evaluate}: expected [0, 1]"
            )
        if self.secure_aggregation and self.strategy != "fedavg":
            raise ValueError(
                f"federation.secure-aggregation needs federation.strategy='fedavg' (SecAgg+ "
                f"only reveals the sum of updates), not {self.strategy!r}"
            )
        if self.evaluate_in_train and self.secure_aggregation:
            raise ValueError(
                "federation.evaluate-in-train is not supported with "
                "federation.secure-aggregation (SecAgg+ rounds evaluate in their own messages)"
            )
        if self.round_timeout <= 0:
            raise ValueError(f"federation.round_timeout={self.round_timeout}: expected > 0")

    @property
    def total_steps(self) -> int:
        """Engine steps of one site over the whole run: what its schedule spans."""
        return self.num_rounds * self.local_steps

    @property
    def run_path(self) -> Path:
        """The run's directory: the one resumed, else `run_dir`. Server and simulated sites
        derive it alike from the same run config (sites keep their state under it)."""
        return self.run_dir if self.resume_from is None else self.resume_from

    @property
    def shared_groups(self) -> tuple[str, ...]:
        return ("generators",) if self.share == "generators" else ("generators", "discriminators")


@dataclass(frozen=True)
class FedsynthConfig:
    """Every setting of a run. The model's image size and modalities are not settings of
    their own: they are the data section's (`DERIVED_KEYS`), filled in here."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)

    def __post_init__(self) -> None:
        derived = derived_model_fields(self.data)
        if any(getattr(self.model, k) != v for k, v in derived.items()):
            object.__setattr__(self, "model", dataclasses.replace(self.model, **derived))
        if self.model.lambda_paired > 0 and self.data.pairing != "paired":
            raise ValueError(
                f"model.lambda-paired={self.model.lambda_paired} needs paired training data: "
                f"data.pairing=paired (not {self.data.pairing!r})"
            )
        if self.train.precision == "bf16" and self.privacy.enabled:
            raise ValueError(BF16_WITH_DP)
        if self.model.lambda_paired > 0 and self.privacy.enabled and self.privacy.unit != "subject":
            raise ValueError(
                "model.lambda-paired with DP needs privacy.unit=subject: a paired sample also "
                "reads its partner slices, so one slice is no longer one unit"
            )

    @property
    def federated_train(self) -> TrainConfig:
        """The training settings of one federated site: its schedule spans every round
        (`federation.total_steps`), whatever `train.steps` says (that is the baselines')."""
        return dataclasses.replace(self.train, steps=self.federation.total_steps)

    def to_flat(self) -> dict[str, Scalar]:
        """`section.field-name` -> scalar (tuples comma-joined, None as ""), derived keys left
        out."""
        return {k: v for k, v in flatten(self, "").items() if k not in DERIVED_KEYS}

    @classmethod
    def from_flat(cls, flat: typing.Mapping[str, Any]) -> FedsynthConfig:
        """Inverse of `to_flat`; unknown keys are an error, missing keys keep their default."""
        given = sorted(set(flat) & set(DERIVED_KEYS))
        if given:
            raise ValueError(
                "; ".join(f"{k} is derived from {DERIVED_KEYS[k]}: set that" for k in given)
            )
        flat = dict(flat)
        data = build(DataConfig, flat, "data.")
        model = build(ModelConfig, flat, "model.", derived_model_fields(data))
        return build(cls, flat, "", {"data": data, "model": model})

    def evolve(self, **sections: Mapping[str, Any]) -> FedsynthConfig:
        """A copy with typed fields of some sections changed (no flat round trip):
        `cfg.evolve(privacy={"enabled": False}, federation={"min_nodes": 2})`.

        Args:
            sections: section name (data, model, train, privacy, federation) -> field -> value.

        Returns:
            The new config; derived facts (the model's image size and modalities) follow.
        """
        changed = {
            name: dataclasses.replace(getattr(self, name), **fields)
            for name, fields in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def initial_model(self, seed: int | None = None) -> SynthesisModel:
        """The model this run starts from: random weights from `seed` (default `train.seed`),
        or the warm start `train.init-checkpoint`, checked against the run's preprocessing."""
        from fedsynth.models.warm_start import initial_model

        seed = self.train.seed if seed is None else seed
        return initial_model(self.model, seed, self.train.init_checkpoint, self.data.preprocess)

    def digest(self) -> str:
        """Short hash of every setting: names a configuration in checkpoints and caches."""
        return hashlib.sha256(json.dumps(self.to_flat(), sort_keys=True).encode()).hexdigest()[:12]


__all__ = [
    "DataConfig",
    "FederationConfig",
    "FedsynthConfig",
    "ModelConfig",
    "PreprocessConfig",
    "PrivacyConfig",
    "TrainConfig",
]
