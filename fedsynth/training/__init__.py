"""The one local training engine (centralized, local-only and federated runs alike)."""

from fedsynth.training.config import TrainConfig
from fedsynth.training.engine import SHAREABLE_METRICS, train_local, training_sets
from fedsynth.training.state import LocalState

__all__ = ["SHAREABLE_METRICS", "LocalState", "TrainConfig", "train_local", "training_sets"]
