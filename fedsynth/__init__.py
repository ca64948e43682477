"""fedsynth: federated, privacy-preserving cross-modality MRI synthesis."""

__version__ = "0.1.0"
