"""Volume → slices, and every kind of bad input named with its file and reason."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import AFFINE, SHAPE, head
from conftest import save_nifti as save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import DatasetError, SubjectRecord
from fedsynth.data.preprocess import SlicePipeline, preprocess_subject
from fedsynth.data.validation import read_volume

CFG = PreprocessConfig(image_size=32)


def record(tmp_path: Path, t1: np.ndarray, t2: np.ndarray | None = None, **kw) -> SubjectRecord:
    images = {"T1": save(tmp_path / "t1.nii.gz", t1, kw.pop("a1", AFFINE))}
    if t2 is not None:
        images["T2"] = save(tmp_path / "t2.nii.gz", t2, kw.pop("a2", AFFINE))
    return SubjectRecord("s1", "site", images, **kw)


def test_slices_are_scaled_sized_and_paired(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    subj = preprocess_subject(record(tmp_path, head(rng, 1.0), head(rng, -1.5)), CFG)
    t1, t2 = subj.images["T1"], subj.images["T2"]
    assert t1.shape == t2.shape == subj.mask.shape
    assert t1.shape[1:] == (32, 32) and t1.dtype == np.float32
    assert t1.min() == -1.0 and 0.5 < t1.max() <= 1.0
    assert np.all(t1[~subj.mask] == -1.0)
    # Only slices with foreground are kept; positions index the original z axis.
    assert 0 < len(subj.positions) < SHAPE[2]
    assert subj.mask.mean(axis=(1, 2)).min() >= CFG.min_foreground


def _brain_with_lesion(lesion_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 'FLAIR' brain: grey matter 60, white matter 50, CSF 10 (±2 noise), and a lesion at
    140 filling `lesion_share` of the brain; returns the volume, its brain mask, the WM mask."""
    rng = np.random.default_rng(5)
    n = 20_000
    tissue = rng.choice([60.0, 50.0, 10.0], size=n, p=[0.5, 0.4, 0.1])
    tissue[: int(lesion_share * n)] = 140.0
    vol = (tissue + rng.normal(0, 2, n)).astype(np.float32).reshape(20, 25, 40)
    return vol, np.ones(vol.shape, bool), (tissue == 50.0).reshape(vol.shape)


def test_median_scaling_keeps_normal_tissue_in_place_whatever_the_lesion_load() -> None:
    """Oracle: the formula written out with numpy. Under the median scaling white matter
    lands at the same value with a lesion filling 0 % or 4 % of the brain; under the
    percentile scaling the lesion pulls the 99.5th percentile and moves white matter."""
    wm_level = {}
    for scaling in ("median", "percentile"):
        pipe = SlicePipeline(PreprocessConfig(scaling=scaling))
        for share in (0.0, 0.04):
            vol, mask, wm = _brain_with_lesion(share)
            out = pipe.scale(vol, mask, Path("flair.nii.gz"))
            wm_level[scaling, share] = float(out[wm].mean())
            if scaling == "median":
                lo, med = np.percentile(vol[mask], [0.5, 50])
                want = np.clip(-1 + 2 * (vol - lo) / (5.0 * (med - lo)), -1, 1)
                np.testing.assert_allclose(out, want, atol=1e-5)
    assert abs(wm_level["median", 0.0] - wm_level["median", 0.04]) < 0.02
    assert abs(wm_level["percentile", 0.0] - wm_level["percentile", 0.04]) > 0.5


def test_reorients_to_ras(tmp_path: Path) -> None:
    vol = head(np.random.default_rng(2), 1.0)
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (SHAPE[0] - 1)
    a = read_volume(save(tmp_path / "a.nii.gz", vol))
    b = read_volume(save(tmp_path / "b.nii.gz", vol[::-1].copy(), flipped))
    np.testing.assert_array_equal(a.data, b.data)
    assert b.affine[0, 0] > 0


def test_to_volume_inverts_to_slices() -> None:
    vol = head(np.random.default_rng(3), 1.0) / 150
    pipe = SlicePipeline(PreprocessConfig(image_size=28))
    back = pipe.to_volume(pipe.to_slices(vol, fill=0.0), vol.shape)
    assert back.shape == vol.shape
    assert np.abs(back - vol).mean() < 0.05


def test_given_mask_is_used(tmp_path: Path) -> None:
    vol = head(np.random.default_rng(4), 1.0)
    mask = np.zeros(SHAPE, np.uint8)
    mask[8:16, 8:20, 5:15] = 1
    rec = record(tmp_path, vol, mask=save(tmp_path / "m.nii.gz", mask))
    subj = preprocess_subject(rec, CFG)
    assert set(subj.positions.tolist()) <= set(range(5, 15))


# --- bad input ------------------------------------------------------------------------------


def _vol(rng=None):
    return head(rng or np.random.default_rng(0), 1.0)


def test_whole_head_input_keeps_the_head_without_a_mask_and_the_brain_with_one(
    tmp_path: Path,
) -> None:
    """A 'head': a bright brain ball inside a dark skull ring inside bright scalp. Without a
    mask the foreground is the whole head (the skull's gap filled); with the brain mask given,
    only the brain is foreground and everything else is background -1."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in SHAPE), indexing="ij")
    r = np.sqrt(x**2 + y**2 + (z / 1.2) ** 2)
    vol = np.select([r < 0.45, r < 0.6, r < 0.95], [100.0, 2.0, 150.0], 0.0)
    vol = (vol * np.random.default_rng(2).uniform(0.9, 1.1, SHAPE)).astype(np.float32)
    brain = (r < 0.45).astype(np.uint8)
    head_only = preprocess_subject(record(tmp_path, vol), CFG)
    mask_file = save(tmp_path / "mask.nii.gz", brain)
    brain_only = preprocess_subject(record(tmp_path, vol, mask=mask_file), CFG)
    head_area = head_only.mask.sum(axis=(1, 2)).max() * head_only.voxel_ml
    brain_area = brain_only.mask.sum(axis=(1, 2)).max() * brain_only.voxel_ml
    assert head_area / brain_area == pytest.approx((0.95 / 0.45) ** 2, rel=0.2)
    assert head_only.mask.sum() * head_only.voxel_ml == pytest.approx(
        (r < 0.95).sum() * 8e-3, rel=0.15
    )


def test_label_map_is_sliced_with_the_images(tmp_path: Path) -> None:
    """Labels follow the images through crop, pad and resize (nearest), 0 outside the mask,
    and pixel count × voxel_ml gives back the labelled volume in ml."""
    rng = np.random.default_rng(3)
    t1 = head(rng, 1.0)  # inner blob brighter than the outer ellipsoid
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in SHAPE), indexing="ij")
    inner = (x / 0.4) ** 2 + (y / 0.45) ** 2 + (z / 0.5) ** 2 < 1
    outer = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.9) ** 2 < 1
    labels = np.where(inner, 2, np.where(outer, 1, 0)).astype(np.uint8)
    rec = record(tmp_path, t1, labels=save(tmp_path / "seg.nii.gz", labels))
    subj = preprocess_subject(rec, CFG)
    assert subj.labels is not None and subj.labels.shape == subj.mask.shape
    assert not subj.labels[~subj.mask].any()
    img = subj.images["T1"]
    assert img[subj.labels == 2].mean() > img[subj.labels == 1].mean() + 0.5
    voxel_ml = 2.0**3 / 1000  # AFFINE: 2 mm isotropic
    assert (subj.labels == 2).sum() * subj.voxel_ml == pytest.approx(
        inner.sum() * voxel_ml, rel=0.15
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"not a nifti at all"), "cannot read as NIfTI"),
        (
            lambda p: p.write_bytes(gzip.compress(save(p, _vol()).read_bytes())[:5000]),
            "cannot read",
        ),
        (lambda p: save(p, _vol()[:, :, 0]), "is 2D"),
        (lambda p: save(p, np.stack([_vol(), _vol()], -1)), "is 4D"),
        (lambda p: save(p, np.where(_vol() > 50, np.nan, _vol())), "NaN/inf voxels"),
        (lambda p: save(p, np.zeros(SHAPE, np.float32)), "is empty"),
        (lambda p: save(p, np.full(SHAPE, 7.0, np.float32)), "is constant"),
    ],
    ids=["corrupt", "truncated", "2d", "4d", "nan", "empty", "constant"],
)
def test_bad_volume_named_with_reason(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(DatasetError, match=f"bad.nii.gz.*{reason}"):
        read_volume(path)


def test_inf_is_refused(tmp_path: Path) -> None:
    vol = _vol()
    vol[3, 3, 3] = np.inf
    with pytest.raises(DatasetError, match="1 NaN/inf"):
        read_volume(save(tmp_path / "inf.nii", vol))


def test_single_volume_4d_is_accepted(tmp_path: Path) -> None:
    assert read_volume(save(tmp_path / "v.nii.gz", _vol()[..., None])).data.shape == SHAPE


def test_modalities_on_different_grids(tmp_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    rec = record(tmp_path, _vol(), _vol(), a2=shifted)
    with pytest.raises(DatasetError, match=r"t2.nii.gz: grid .* differs from .*t1.nii.gz"):
        preprocess_subject(rec, CFG)
    rec = record(tmp_path, _vol(), _vol()[:-2])
    with pytest.raises(DatasetError, match="differs"):
        preprocess_subject(rec, CFG)


# --- property: any finite volume gives valid slices or a clear error -----------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    vol=arrays(np.float32, st.tuples(*(st.integers(2, 12),) * 3), elements=finite),
    size=st.sampled_from([8, 16, 24]),
)
def test_any_finite_volume_gives_valid_slices_or_error(tmp_path: Path, vol, size) -> None:
    cfg = PreprocessConfig(image_size=size, min_foreground=0.0)
    try:
        subj = preprocess_subject(record(tmp_path, vol), cfg)
    except DatasetError as err:
        assert "t1.nii.gz" in str(err)
        return
    out = subj.images["T1"]
    assert out.shape[1:] == (size, size)
    assert np.isfinite(out).all() and out.min() >= -1.0 and out.max() <= 1.0
