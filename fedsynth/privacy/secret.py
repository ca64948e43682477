"""Where DP randomness comes from: a secret, never the run config.

The Poisson sampling and the Gaussian noise of DP-SGD are drawn from a torch.Generator. If
its seed were known to the server (say `train.seed`, which travels in every instruction), the
server could regenerate every site's batches and noise vectors and subtract the noise from
the update it receives: the shared weights would not be private at all. So the seed is
drawn from the operating system's secure random source (`secrets`) when a site's state is
created, and kept at the site (`SiteStateDir`, owner-only); only `privacy.noise-seed`, an
explicit opt-in for reproducible experiments that the README marks as NOT private, replaces it.
"""

from __future__ import annotations

import secrets

from fedsynth.privacy.config import PrivacyConfig

SECRET_BITS = 63


def draw_seed() -> int:
    """A fresh seed from the OS's cryptographically secure random source."""
    return secrets.randbits(SECRET_BITS)


def dp_seed(privacy: PrivacyConfig, secret: int | None) -> int:
    """The seed of a new private run's random streams: the opted-in fixed `noise_seed`, else
    the site's `secret`, else a fresh secret (a run that keeps no state across processes)."""
    if privacy.noise_seed is not None:
        return privacy.noise_seed
    return secret if secret is not None else draw_seed()
