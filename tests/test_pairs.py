"""Paired data (`data.pairing=paired`): training subjects give every contrast they have, and
a partly paired site keeps its pairs together (partners found by subject and position) and its
single-contrast subjects unpaired, with subject-level splits; each sampled image carries its
partners through augmentation; the supervised term is the per-sample L1 to the real target of
the same slice (a loop over samples is the oracle); and the settings that would break it are
refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_slices import SIZE, site, tiny_config

from fedsynth.config import FedsynthConfig
from fedsynth.data.config import DataConfig, PreprocessConfig
from fedsynth.data.pairs import PartnerIndex
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData
from fedsynth.models import build_model
from fedsynth.models.base import Partners
from fedsynth.privacy import PrivacyConfig
from fedsynth.training import TrainConfig, train_local
from fedsynth.training.engine import _augmented, _partners


def test_paired_sites_train_on_every_contrast_of_their_training_subjects(
    tiny_bids: Path, tmp_path: Path
) -> None:
    pre = PreprocessConfig(image_size=32)
    unpaired, _ = prepare_sites(
        DataConfig(root=tiny_bids, preprocess=pre, cache_dir=tmp_path / "c"), progress=False
    )
    paired, _ = prepare_sites(
        DataConfig(root=tiny_bids, preprocess=pre, cache_dir=tmp_path / "c", pairing="paired"),
        progress=False,
    )
    for u, p in zip(unpaired, paired, strict=True):
        assert p.paired and not u.paired
        a, b = p.train["T1"], p.train["T2"]
        np.testing.assert_array_equal(a.subjects, b.subjects)
        np.testing.assert_array_equal(a.positions, b.positions)
        every = set(u.train["T1"].unique_subjects()) | set(u.train["T2"].unique_subjects())
        assert set(a.unique_subjects()) == every  # the same training subjects, all contrasts
        assert not set(a.unique_subjects()) & set(p.test["T1"].unique_subjects())
        np.testing.assert_array_equal(p.test["T1"].subjects, u.test["T1"].subjects)


def paired_site(modalities=("T1", "T2", "PD")) -> SiteData:
    data = site(modalities, slices=8, subjects=4)
    subjects, positions = data.train[modalities[0]].subjects, data.train[modalities[0]].positions
    for s in data.train.values():  # make the sets row-aligned, as a paired split is
        s.subjects[:], s.positions[:] = subjects, positions
    return SiteData(data.site, data.train, paired=True)


def test_partners_are_the_same_rows_in_every_modality_and_zero_where_missing() -> None:
    data = paired_site(("T1", "PD"))
    rows = {"T1": np.array([0, 3, 5]), "PD": np.array([1, 2])}
    partners = _partners(
        data.train, rows, tiny_config("unified"), torch.device("cpu"), PartnerIndex(data.train)
    )
    assert partners.weights is None
    for m, r in rows.items():
        assert partners.available[m].tolist() == [[True, False, True]] * len(r)
    for m, r in rows.items():
        got = partners.images[m]
        assert got.shape == (len(r), 3, SIZE, SIZE)
        np.testing.assert_array_equal(got[:, 0].numpy(), data.train["T1"].images[r])
        np.testing.assert_array_equal(got[:, 2].numpy(), data.train["PD"].images[r])
        assert (got[:, 1] == 0).all()


def test_augmentation_moves_an_image_and_its_partners_together() -> None:
    data = paired_site()
    rows = {"T2": np.array([0, 1, 2, 3])}
    images = {"T2": torch.from_numpy(data.train["T2"].images[rows["T2"]])[:, None]}
    partners = _partners(
        data.train, rows, tiny_config("unified"), torch.device("cpu"), PartnerIndex(data.train)
    )
    views, moved = _augmented(images, partners, 3, torch.Generator().manual_seed(0))
    assert views["T2"].shape == (12, 1, SIZE, SIZE)
    # the partner plane of the image's own contrast is the image, view by view
    torch.testing.assert_close(moved.images["T2"][:, 1:2], views["T2"], rtol=0, atol=0)
    assert not torch.equal(views["T2"][0], views["T2"][1]) or not torch.equal(
        views["T2"][1], views["T2"][2]
    )


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_paired_term_is_the_l1_to_the_real_target_of_the_same_slice(kind: str) -> None:
    mods = ("T1", "T2") if kind == "cyclegan" else ("T1", "T2", "PD")
    model = build_model(tiny_config(kind, lambda_paired=3.0, modalities=mods))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, SIZE, SIZE, generator=g) * 2 - 1
    planes = torch.rand(4, len(mods), SIZE, SIZE, generator=g) * 2 - 1
    available = torch.tensor([True] * (len(mods) - 1) + [False])
    partners = Partners({"T1": planes}, {"T1": available.expand(4, -1)})
    batch = model.make_batch({"T1": x}, torch.Generator().manual_seed(0), partners)
    stream, tensors = next(iter(batch.items()))
    with torch.no_grad():
        terms = model(stream, "generators", tensors)
        targets = tensors["target"] if kind == "unified" else torch.full((4,), 1)
        fakes = model.generate(x, targets, torch.zeros(4, dtype=torch.long)) if kind == "unified" \
            else model.translate(x, "T1", "T2")
    for i in range(4):  # the oracle: one sample at a time
        t = int(targets[i])
        expected = (fakes[i, 0] - planes[i, t]).abs().mean() if available[t] else 0.0
        torch.testing.assert_close(terms["paired"][i], torch.as_tensor(expected))


LESION = (4, 5)


def labelled_paired_site() -> SiteData:
    """A paired site whose label maps hold a lesion (labels 4, 5) in a corner of each slice."""
    data = paired_site()
    labels = np.full((8, SIZE, SIZE), 3, np.uint8)
    labels[:, 2:9, 3:12] = 4
    labels[:, 4:6, 5:7] = 5
    train = {m: dataclasses.replace(s, labels=labels) for m, s in data.train.items()}
    return SiteData(data.site, train, paired=True)


def test_lesion_weights_are_one_plus_lambda_on_lesion_pixels_and_follow_augmentation() -> None:
    data = labelled_paired_site()
    cfg = tiny_config("unified", lambda_paired=1.0, lambda_lesion=9.0, lesion_labels=LESION)
    rows = {"T2": np.array([0, 1, 2, 3])}
    partners = _partners(data.train, rows, cfg, torch.device("cpu"), PartnerIndex(data.train))
    lesion = np.isin(data.train["T2"].labels[rows["T2"]], LESION)  # the oracle: the label map
    np.testing.assert_array_equal(partners.weights["T2"][:, 0].numpy(), np.where(lesion, 10, 1))
    assert partners.images["T2"].shape == (4, 3, SIZE, SIZE)  # the weights are not a contrast
    # Mark the lesion in the T2 plane: after augmentation the weights must still sit on it.
    partners.images["T2"][:, 1] = torch.from_numpy(np.where(lesion, 1.0, 0.0))
    images = {"T2": torch.zeros(4, 1, SIZE, SIZE)}
    _, moved = _augmented(images, partners, 3, torch.Generator().manual_seed(2))
    on_lesion = moved.images["T2"][:, 1] == 1.0
    assert moved.weights["T2"].shape == (12, 1, SIZE, SIZE)
    torch.testing.assert_close(moved.weights["T2"][:, 0], torch.where(on_lesion, 10.0, 1.0))


def test_weighted_paired_term_is_the_weighted_mean_of_absolute_errors() -> None:
    model = build_model(tiny_config("unified", lambda_paired=1.0, lambda_lesion=4.0,
                                    lesion_labels=LESION))  # fmt: skip
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, SIZE, SIZE, generator=g) * 2 - 1
    planes = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    weight = torch.ones(2, 1, SIZE, SIZE)
    weight[0, 0, :5, :7] = 5.0
    partners = Partners({"T1": planes}, {"T1": torch.ones(2, 3, dtype=torch.bool)}, {"T1": weight})
    batch = model.make_batch({"T1": x}, torch.Generator().manual_seed(0), partners)
    stream, tensors = next(iter(batch.items()))
    with torch.no_grad():
        terms = model(stream, "generators", tensors)
        fakes = model.generate(x, tensors["target"], torch.zeros(2, dtype=torch.long))
    for i in range(2):  # the oracle: a loop over pixels of one sample
        t, total = int(tensors["target"][i]), 0.0
        for r in range(SIZE):
            for c in range(SIZE):
                error = float(fakes[i, 0, r, c] - planes[i, t, r, c])
                total += float(weight[i, 0, r, c]) * abs(error)
        expected = torch.tensor(total / SIZE**2)
        torch.testing.assert_close(terms["paired"][i], expected, rtol=1e-5, atol=1e-6)


def test_lesion_weighting_needs_labels_and_a_paired_term() -> None:
    with pytest.raises(ValueError, match="needs lambda_paired > 0 and lesion_labels"):
        tiny_config("unified", lambda_lesion=1.0, lesion_labels=LESION)
    with pytest.raises(ValueError, match="needs lambda_paired > 0 and lesion_labels"):
        tiny_config("unified", lambda_paired=1.0, lambda_lesion=1.0)
    cfg = tiny_config("unified", lambda_paired=1.0, lambda_lesion=1.0, lesion_labels=LESION)
    with pytest.raises(ValueError, match="needs label maps, and the T1 training slices have none"):
        train_local(build_model(cfg), paired_site(), TrainConfig(steps=1, batch_size=2),
                    PrivacyConfig(enabled=False))  # fmt: skip
    flat = FedsynthConfig.from_flat({"model.lesion-labels": "4,5"}).model.lesion_labels
    assert flat == LESION and FedsynthConfig().model.lesion_labels == ()


def test_a_lesion_weighted_private_step_trains() -> None:
    cfg = tiny_config("unified", lambda_paired=10.0, lambda_lesion=5.0, lesion_labels=LESION)
    dp = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, unit="subject", noise_seed=3)
    metrics, _ = train_local(build_model(cfg), labelled_paired_site(),
                             TrainConfig(steps=2, batch_size=2, augmentations=2), dp)  # fmt: skip
    assert np.isfinite(metrics["generators/paired"]) and metrics["generators/paired"] > 0


def test_paired_training_needs_paired_data_and_subject_level_dp() -> None:
    base = {"data.modalities": "T1,T2", "model.lambda-paired": 10.0}
    with pytest.raises(ValueError, match="needs paired training data: data.pairing=paired"):
        FedsynthConfig.from_flat(base)
    with pytest.raises(ValueError, match="needs privacy.unit=subject"):
        FedsynthConfig.from_flat(
            base | {"data.pairing": "paired", "privacy.enabled": True, "privacy.unit": "slice"}
        )
    FedsynthConfig.from_flat(
        base | {"data.pairing": "paired", "privacy.enabled": True, "privacy.unit": "subject"}
    )
    model = build_model(tiny_config("cyclegan", lambda_paired=1.0))
    with pytest.raises(ValueError, match="needs paired training slices"):
        train_local(model, site(), TrainConfig(steps=1, batch_size=2), PrivacyConfig(enabled=False))


def test_a_private_paired_step_clips_per_subject_and_trains() -> None:
    model = build_model(tiny_config("unified", lambda_paired=10.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dp = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, unit="subject", noise_seed=3)
    metrics, _ = train_local(model, paired_site(), TrainConfig(steps=2, batch_size=2), dp)
    assert np.isfinite(metrics["generators/paired"]) and metrics["generators/paired"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def partly_paired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two sites of 6 subjects: 2 held out, 2 with T1 and T2 (misaligned), 2 with one."""
    from fedsynth.data.phantom import PhantomConfig, generate_phantom

    root = tmp_path_factory.mktemp("partly")
    cfg = PhantomConfig(sites=2, subjects_per_site=6, modalities=("T1", "T2"), seed=11,
                        paired_fraction=0.5, misalign=(2.0, 3.0))  # fmt: skip
    return root, generate_phantom(cfg, root, progress=False)


def _prepare(root: Path, pairing: str) -> list[SiteData]:
    cfg = DataConfig(root=root, preprocess=PreprocessConfig(image_size=32), pairing=pairing,
                     cache_dir=root / "cache")  # fmt: skip
    return prepare_sites(cfg, progress=False)[0]


def test_a_partly_paired_site_keeps_pairs_together_and_splits_by_subject(partly_paired) -> None:
    root, meta = partly_paired
    for data, described in zip(_prepare(root, "paired"), meta["sites"], strict=True):
        uid = f"{data.site}/{{}}".format
        held = {uid(s) for s in described["held_out"]}
        paired = {uid(s) for s in described["paired"]}
        single = {uid(s): m for s, m in described["single"].items()}
        assert set(data.test["T1"].unique_subjects()) == held  # what the phantom held out
        for m, s in data.train.items():  # the paired give both, the single their own
            expected = paired | {u for u, own in single.items() if own == m}
            assert set(s.unique_subjects()) == expected and not expected & held
        index = PartnerIndex(data.train)
        t1, t2 = data.train["T1"], data.train["T2"]
        found = index.rows("T1", "T2", np.arange(len(t1)))
        for row, partner in enumerate(found):  # the oracle: search by subject and position
            same = (t2.subjects == t1.subjects[row]) & (t2.positions == t1.positions[row])
            hits = np.flatnonzero(same)
            assert partner == (hits[0] if len(hits) else -1)
        assert (found >= 0).any() and (found < 0).any()
        partners = _partners(data.train, {"T1": np.arange(len(t1))},
                             tiny_config("cyclegan"), torch.device("cpu"), index)  # fmt: skip
        have = partners.available["T1"][:, 1].numpy()
        np.testing.assert_array_equal(have, np.isin(t1.subjects, sorted(paired)))
        got = partners.images["T1"][have, 1].numpy()
        np.testing.assert_array_equal(got, t2.images[found[have]])
        assert (partners.images["T1"][~have, 1] == 0).all()


def test_unpaired_mode_never_pairs_and_the_split_is_the_same(partly_paired) -> None:
    root, _ = partly_paired
    for unpaired, paired in zip(_prepare(root, "unpaired"), _prepare(root, "paired"), strict=True):
        t1, t2 = (set(unpaired.train[m].unique_subjects()) for m in ("T1", "T2"))
        assert not t1 & t2 and not unpaired.paired
        assert t1 | t2 == set(paired.train["T1"].unique_subjects()) | set(
            paired.train["T2"].unique_subjects()
        )
        np.testing.assert_array_equal(unpaired.test["T1"].subjects, paired.test["T1"].subjects)


def test_a_registered_model_trains_on_a_partly_paired_site(partly_paired) -> None:
    root, _ = partly_paired
    data = _prepare(root, "paired")[0]
    model = build_model(tiny_config("cyclegan", lambda_paired=5.0, pairing_loss="registered",
                                    registration_channels=4))  # fmt: skip
    off = PrivacyConfig(enabled=False)
    metrics, _ = train_local(model, data, TrainConfig(steps=2, batch_size=4), off)
    assert np.isfinite(metrics["generators/paired"]) and np.isfinite(metrics["generators/smooth"])
