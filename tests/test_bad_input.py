"""One answer for every bad input: `prepare` and `translate` refuse the same file with the same
one-line error (exit 2, the file named, no traceback) and write nothing; `prepare` in lenient
mode skips it and counts it; signed intensities are handled, not refused."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINE, SHAPE, deny_access, head, save_nifti, write_tiny_dataset

from fedsynth.cli import main
from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import SubjectRecord
from fedsynth.data.preprocess import preprocess_subject
from fedsynth.data.validation import DatasetError, read_volume


def _vol() -> np.ndarray:
    return head(np.random.default_rng(0), 1.0)


def _voxel_size(value: float) -> Callable[[Path], None]:
    """A volume whose stored pixdim[1] is `value`; its sform affine stays valid. (nibabel fixes
    such a header when it writes one, so the bytes are patched: pixdim[1] is at offset 80.)"""

    def make(path: Path) -> None:
        raw = bytearray(nib.Nifti1Image(_vol(), AFFINE).to_bytes())
        raw[80:84] = np.float32(value).tobytes()
        path.write_bytes(gzip.compress(bytes(raw)))

    return make


def _truncated(path: Path) -> None:
    path.write_bytes(gzip.compress(save_nifti(path, _vol()).read_bytes())[:5000])


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "moved-away.nii.gz")


def _one_voxel(path: Path) -> None:
    vol = np.zeros(SHAPE, np.float32)
    vol[10, 10, 10] = 100.0
    save_nifti(path, vol)


def _with_forms(path: Path, qform: np.ndarray, q_code: int = 1, s_code: int = 1) -> Path:
    """A volume whose sform is AFFINE and whose qform is `qform`, with the codes given."""
    img = nib.Nifti1Image(_vol(), AFFINE)
    img.set_sform(AFFINE, code=s_code)
    img.set_qform(qform, code=q_code)
    nib.save(img, path)
    return path


def _shifted(mm: float) -> np.ndarray:
    moved = AFFINE.copy()
    moved[0, 3] += mm
    return moved


# case -> (how to spoil a subject's T1 file in place, the reason both commands must give)
CASES: dict[str, tuple[Callable[[Path], object] | None, str]] = {
    "corrupt": (lambda p: p.write_bytes(b"not a nifti at all"), ": cannot read as NIfTI ("),
    "truncated": (_truncated, ": cannot read as NIfTI ("),
    "dangling-link": (_dangling, ": cannot open (no such file or directory)"),
    "permission": (None, ": cannot open (permission denied)"),  # made in the test
    "2d": (lambda p: save_nifti(p, _vol()[:, :, 0]), ": is 2D (shape (24, 28)); expected 3D"),
    "4d": (lambda p: save_nifti(p, np.stack([_vol()] * 2, -1)), ": is 4D (shape (24, 28, 20, 2))"),
    "nan": (lambda p: save_nifti(p, np.where(_vol() > 50, np.nan, _vol())), " NaN/inf voxels"),
    "empty": (lambda p: save_nifti(p, np.zeros(SHAPE, np.float32)), ": is empty (all voxels 0)"),
    "constant": (lambda p: save_nifti(p, np.full(SHAPE, 7.0, np.float32)), ": is constant"),
    "zero-voxel": (_voxel_size(0.0), ": voxel sizes (0.0, 2.0, 2.0) in the header must be finite"),
    "negative-voxel": (_voxel_size(-2.0), ": voxel sizes (-2.0, 2.0, 2.0) in the header"),
    "nan-voxel": (_voxel_size(np.nan), ": voxel sizes (nan, 2.0, 2.0) in the header"),
    "sform-qform": (
        lambda p: _with_forms(p, _shifted(5.0)),
        ": sform (code 1) and qform (code 1) disagree by 5 mm",
    ),
    "too-small": (lambda p: save_nifti(p, _vol()[:4]), ": shape (4, 28, 20) is too small"),
    "no-foreground": (_one_voxel, ": no foreground (no region above 0.1"),
    "unknown-modality": (None, "unknown modality 'DWI' in "),  # made in the test
}


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDSYNTH_CACHE", str(tmp_path / "cache"))
    return write_tiny_dataset(tmp_path / "data", sites=("hospA", "hospB"), n=4)


def _spoil(case: str, data: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Spoil one file of subject hospA000: the bad file, and what translate needs to be told."""
    anat = data / "hospA" / "sub-hospA000" / "anat"
    t1 = anat / "sub-hospA000_T1w.nii.gz"
    if case == "unknown-modality":
        dwi = anat / "sub-hospA000_DWI.nii.gz"
        save_nifti(dwi, _vol())
        return dwi, ["--source", "DWI"]
    if case == "permission":
        deny_access(t1, monkeypatch)
    else:
        CASES[case][0](t1)
    return t1, []


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and the one `error:` line; never a traceback."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    return code, errors[0] if errors else ""


def _cache_entries(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "cache"
    return list(cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("case", CASES)
def test_prepare_and_translate_give_one_answer(
    case: str, data: Path, ckpt: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    bad, extra = _spoil(case, data, monkeypatch)
    out_dir = tmp_path / "out"
    code_p, error_p = _run(["prepare", "--data", str(data), "--size", "32"], capsys)
    translate = ["translate", "--checkpoint", str(ckpt), "--input", str(bad), "--target", "T2"]
    code_t, error_t = _run([*translate, "--output", str(out_dir / "t2.nii.gz"), *extra], capsys)
    assert code_p == code_t == 2
    assert error_p == error_t  # same file, same reason, word for word
    assert CASES[case][1] in error_p and str(bad) in error_p
    assert _cache_entries(tmp_path) == []  # no cache, not even a half-built one
    assert not out_dir.exists()  # no output, not even a temporary file


@pytest.mark.parametrize("case", [*CASES, "grid"])
def test_lenient_prepare_skips_and_counts(
    case: str, data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    if case == "grid":  # a subject's modalities on different grids: prepare only
        bad = data / "hospA" / "sub-hospA000" / "anat" / "sub-hospA000_T1w.nii.gz"
        shifted = AFFINE.copy()
        shifted[0, 3] = 5.0
        save_nifti(bad, _vol(), shifted)
        reason = " differs from "
    else:
        bad, _ = _spoil(case, data, monkeypatch)
        reason = CASES[case][1]
    argv = ["prepare", "--data", str(data), "--size", "32", "--set", "data.lenient=true"]
    assert _run(argv, capsys) == (0, "")
    [entry] = _cache_entries(tmp_path)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["num_skipped"] == 1
    [skipped] = meta["skipped"]
    assert reason in skipped["reason"] and str(bad) in skipped["reason"]
    assert skipped["site"] == "hospA" and skipped["subject"] == "sub-hospA000"
    # A file the layout refused drops that file; a bad volume drops its whole subject.
    index = np.load(entry / "index.npz")
    kept = set(index["uid"][index["modality"] == "T1"].tolist())
    assert ("hospA/sub-hospA000" in kept) == (case == "unknown-modality")


def _oblique() -> np.ndarray:
    """A 2-mm grid rotated 10° about two axes, 120 mm off the origin: float32 quaternion
    round-off of its qform is what the tolerance must accept."""
    a, b = np.radians(10.0), np.radians(-7.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([2.0, 2.0, 2.0])
    affine[:3, 3] = [-121.3, 97.7, -63.1]
    return affine


def _near_half_turn() -> np.ndarray:
    """2-mm voxels turned 179.93° about z (a flipped patient position, tilted 0.07°). The
    quaternion's a ≈ 5.9e-4 is not stored: recovered from float32 b, c, d it becomes 0, so even
    a faithful qform differs from the sform by 2.4e-3 mm — round-off the check must accept."""
    turn = 2 * np.arccos(5.9e-4)
    affine = np.eye(4)
    affine[:2, :2] = 2.0 * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    affine[2, 2] = 2.0
    affine[:3, 3] = [60.0, 40.0, -30.0]
    return affine


@pytest.mark.parametrize(
    "case",
    ["agree", "agree-oblique", "agree-near-half-turn", "qform-code-0", "sform-code-0"],
)
def test_sform_and_qform_that_agree_or_are_unset_pass(case: str, tmp_path: Path) -> None:
    path = tmp_path / "v.nii.gz"
    if case == "agree":
        _with_forms(path, AFFINE)
    elif case.startswith("agree-"):  # a faithful copy: the qform's own float32 round-off
        affine, (lo, hi) = {
            "agree-oblique": (_oblique(), (0, 1e-3)),
            "agree-near-half-turn": (_near_half_turn(), (2e-3, 3e-3)),
        }[case]
        img = nib.Nifti1Image(_vol(), affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        nib.save(img, path)
        header = nib.load(path).header
        assert lo < np.abs(header.get_qform() - header.get_sform()).max() < hi
    elif case == "qform-code-0":  # the sform is used; the stale qform is ignored
        _with_forms(path, _shifted(5.0), q_code=0)
    else:  # only the qform is set
        _with_forms(path, _shifted(5.0), s_code=0)
    volume = read_volume(path)
    expected = {
        "sform-code-0": _shifted(5.0),
        "agree-oblique": _oblique(),
        "agree-near-half-turn": _near_half_turn(),
    }.get(case, AFFINE)
    assert np.allclose(nib.load(path).affine, expected, atol=1e-3)
    assert volume.data.shape == _vol().shape


def test_a_small_rotation_in_one_form_is_refused(tmp_path: Path) -> None:
    """The round-off allowance does not hide a real disagreement: a qform turned 0.5° from the
    sform (2.4e-2 mm per 2-mm voxel column) is refused, naming the file and both codes."""
    turn = np.radians(0.5)
    qform = AFFINE.copy()
    qform[:2, :2] = AFFINE[:2, :2] @ np.array(
        [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    )
    path = _with_forms(tmp_path / "turned.nii.gz", qform, q_code=2, s_code=1)
    with pytest.raises(DatasetError, match="sform \\(code 1\\) and qform \\(code 2\\)") as err:
        read_volume(path)
    assert str(path) in str(err.value) and "would use the sform" in str(err.value)


# --- signed intensities: handled, not refused -------------------------------------------------


def _signed(offset: float = 0.0) -> np.ndarray:
    """int16 like a CT-style or signed scanner export: background -1024, tissue -900..+1500."""
    vol = _vol()  # background 0, 'brain' 100, inner 'tissue' 150, noise
    tissue = np.interp(vol, [5.0, 100.0, 160.0], [-900.0, -300.0, 1500.0])  # brain < 0
    return (np.where(vol > 5.0, tissue, -1024.0) + offset).astype(np.int16)


def test_signed_volume_preprocesses_like_its_unsigned_shift(tmp_path: Path) -> None:
    cfg = PreprocessConfig(image_size=32)
    slices = [
        preprocess_subject(
            SubjectRecord("s", "x", {"T1": save_nifti(tmp_path / f"{name}.nii.gz", vol)}), cfg
        )
        for name, vol in (("signed", _signed()), ("shifted", _signed(1024.0).astype(np.uint16)))
    ]
    np.testing.assert_array_equal(slices[0].positions, slices[1].positions)
    np.testing.assert_allclose(slices[0].images["T1"], slices[1].images["T1"], atol=1e-3)
    # The foreground is the head, dark tissue (below 0) included, not just what is above 0.
    head_slices = (_vol() > 5).any(axis=(0, 1))
    assert set(slices[0].positions.tolist()) <= set(np.flatnonzero(head_slices).tolist())
    assert slices[0].mask.sum() > 0.8 * (slices[0].images["T1"] > -1).sum()


def test_signed_volume_translates_end_to_end(ckpt: Path, tmp_path: Path, capsys) -> None:
    signed = save_nifti(tmp_path / "sub-03_T1w.nii.gz", _signed())
    shifted = save_nifti(tmp_path / "sub-04_T1w.nii.gz", _signed(1024.0).astype(np.uint16))
    outputs = [tmp_path / "signed-T2.nii.gz", tmp_path / "shifted-T2.nii.gz"]
    argv = ["translate", "--checkpoint", str(ckpt), "--target", "T2"]
    for src, out in zip((signed, shifted), outputs, strict=True):
        assert _run([*argv, "--input", str(src), "--output", str(out)], capsys) == (0, "")
    result, reference = (nib.load(p).get_fdata() for p in outputs)
    np.testing.assert_allclose(result, reference, atol=1e-3)
    brain = _vol() > 5
    dark = brain & (_signed() < 0)  # tissue below 0: outside a mask measured from 0
    assert dark.sum() > 100
    assert (result[dark] > 0).mean() > 0.9
    assert result[~brain].max() == 0.0
