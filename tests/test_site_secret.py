"""DP randomness is a site secret (issue: a seed in the run config let the server regenerate
and subtract every site's noise). Two sites with the same config draw different noise; a
restarted site reproduces its own exactly; nothing the server sends or knows fixes it."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_dataset

from fedsynth.client.site import Site, SiteIdentity, site_data
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.models import build_model
from fedsynth.models.checkpoint import save_checkpoint
from fedsynth.simulations.scenarios import TINY_MODEL

FLAT = TINY_MODEL | {
    "privacy.unit": "slice",
    "privacy.noise-multiplier": 1.0,
    "federation.num-rounds": 2,
    "federation.local-steps": 2,
}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> FedsynthConfig:
    root = tmp_path_factory.mktemp("secret")
    data = write_tiny_dataset(root / "data", sites=("hospA",), n=4)
    return FedsynthConfig.from_flat(
        FLAT | {"data.root": str(data), "data.cache-dir": str(root / "cache")}
    )


def site_at(cfg: FedsynthConfig, state: Path) -> Site:
    return Site(cfg, SiteIdentity.of("hospA", state, 0), site_data(cfg, 0, None))


def global_arrays(cfg: FedsynthConfig) -> dict[str, np.ndarray]:
    model = build_model(cfg.model, seed=123)
    keys = model.shared_keys(cfg.federation.shared_groups)
    return {k: v.numpy() for k, v in model.state_dict().items() if k in keys}


def update(site: Site, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    site.train_round(arrays, 1)
    return site.shared_arrays()


def differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


def test_two_sites_with_one_config_draw_different_noise(cfg, tmp_path: Path) -> None:
    arrays = global_arrays(cfg)
    a = update(site_at(cfg, tmp_path / "a"), arrays)
    b = update(site_at(cfg, tmp_path / "b"), arrays)
    assert differ(a, b)
    secrets = {SiteStateDir(tmp_path / d).secret_seed() for d in "ab"}
    assert len(secrets) == 2
    assert not any(str(s) in str(cfg.to_flat()) for s in secrets)


def test_a_restarted_site_reproduces_its_own_noise_exactly(cfg, tmp_path: Path) -> None:
    arrays = global_arrays(cfg)
    state = tmp_path / "a"
    first = update(site_at(cfg, state), arrays)
    shutil.copytree(state, tmp_path / "after-round-1")
    second = update(site_at(cfg, state), first)
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "after-round-1", state)  # the site restarts from its disk
    again = update(site_at(cfg, state), first)
    assert not differ(second, again)


def test_same_secret_same_noise_whatever_the_seed_in_the_config(cfg, tmp_path: Path) -> None:
    """What determines the noise is the secret, not `train.seed`: with the secret and the
    local model copied over, a different configured seed changes nothing."""
    arrays = global_arrays(cfg)
    a = site_at(cfg, tmp_path / "a")
    a.identity.state.secret_seed()
    save_checkpoint(a.identity.state.model_file, a.model, cfg.data.preprocess)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = site_at(cfg.evolve(train={"seed": 99}), tmp_path / "b")
    assert not differ(update(a, arrays), update(b, arrays))
    c = site_at(cfg, tmp_path / "c")  # the same config and model, its own secret
    save_checkpoint(c.identity.state.model_file, a.model, cfg.data.preprocess)
    assert differ(update(site_at(cfg, tmp_path / "a2"), arrays), update(c, arrays))


def test_the_secret_and_the_rng_state_are_owner_only(cfg, tmp_path: Path) -> None:
    site = site_at(cfg, tmp_path / "a")
    update(site, global_arrays(cfg))
    for name in (SiteStateDir.SECRET, SiteStateDir.STATE):
        mode = stat.S_IMODE((tmp_path / "a" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_a_site_without_dp_keeps_no_secret(cfg, tmp_path: Path) -> None:
    site = Site(
        cfg.evolve(privacy={"enabled": False}),
        SiteIdentity.of("hospA", tmp_path / "a", 0),
        site_data(cfg, 0, None),
    )
    update(site, global_arrays(cfg))
    assert (tmp_path / "a" / SiteStateDir.STATE).exists()
    assert not (tmp_path / "a" / SiteStateDir.SECRET).exists()
