"""One input-validation policy for every command that reads volumes.

`prepare`, training and simulation (through `prepare_sites`), the ClientApp (same) and
`translate` all judge input files by the rules below, so one bad file gets one answer
everywhere: a `DatasetError` whose one-line message names the file and says why.

Rules for one file, in the order they are checked (the first that fails is the reason):

1. It opens for reading: it exists, its permissions allow reading, a link is not dangling.
   → "cannot open (…)"; checked when a layout lists the file (and every folder it walks) and
   again when the file is read.
2. Its header parses as NIfTI-1/2. → "cannot read as NIfTI (…)"
3. It is 3D. Trailing dimensions of length 1 are dropped first, so a 4D file holding a single
   volume is accepted as 3D; 2D, or 4D with several volumes, is refused. → "is 4D (shape …)"
4. Its voxel sizes — `pixdim` as stored in the file (nibabel's loader would silently turn 0 into
   1 and a negative size into its absolute value) and the voxel-to-world affine — are finite
   and > 0. → "voxel sizes … in the header must be finite and > 0"
5. Its orientation is unambiguous: when both the sform and the qform are set (codes > 0), they
   agree to `SFORM_QFORM_TOLERANCE` mm beyond the qform's float32 round-off
   (`QFORM_ROUNDOFF` × voxel size in the rotation columns). nibabel (and so fedsynth) would
   use the sform and another tool the qform, so the same file would put the brain in two
   places.
   → "sform (code …) and qform (code …) disagree by … mm"; a file with one code 0 uses the
   other transform and passes.
6. It has at least `MIN_VOXELS` voxels along every axis: fewer cannot give a slice once the
   foreground is opened and cropped. → "shape … is too small: …"
7. Its voxel data read in full (a corrupt or truncated gzip stream fails here).
   → "cannot read as NIfTI (…)"
8. Every voxel is finite. → "has N NaN/inf voxels"
9. It is not empty (all 0) or constant. → "is empty (all voxels 0)" / "is constant (…)"

Rules for one subject (`fedsynth.data.preprocess`):

10. All of a subject's volumes and its mask lie on one grid (shape, and affine to 1e-3 mm).
    → "grid … differs from …"
11. Each volume shows a foreground of its own (without a mask file; with one, the mask is not
    empty), the foreground has an intensity range, and for training at least one axial slice
    keeps `min_foreground` of it. → "no foreground (…)" / "no intensity range inside the
    foreground" / "no axial slice has >= … foreground"

Rules for a layout (`fedsynth.data.layouts`): every modality name is known ("unknown modality
…") and a subject has one file per modality ("already has a T1 file").

Strict mode (the default) stops at the first bad input. Lenient mode (`data.lenient=true`)
skips the bad file (layout rules) or subject (volume and subject rules) with a logged warning
and a record in the slice cache's `meta.json`. `translate` reads a single file: always strict.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

log = logging.getLogger(__name__)

MIN_VOXELS = 8
SFORM_QFORM_TOLERANCE = 1e-3
"""mm: how far a set sform and a set qform may differ (max abs difference of the two 4x4
affines) beyond the qform's own float32 round-off (`QFORM_ROUNDOFF`). The offsets of both are
stored as the same float32 numbers, so a faithful copy differs there by 0; any real
disagreement (a shift, a flip, a shear the quaternion cannot hold) is far above 1e-3 mm."""
QFORM_ROUNDOFF = 2e-3
"""The float32 round-off of a qform's rotation columns, relative to the voxel size. The file
stores only the quaternion's b, c, d (float32); a = sqrt(1 - b² - c² - d²) is recovered, and
nibabel sets it to 0 when a² < 3·eps32 ≈ 3.6e-7. Near a 180° rotation (a ≈ 0, e.g. a flipped
patient position with a tilt under 0.1°) a is therefore off by up to ≈ 6e-4 and the rotation
entries, which hold 2·a·(b, c, d), by up to ≈ 1.2e-3 × the voxel size: 2.4e-3 mm for 2-mm
voxels in a file nibabel itself wrote faithfully (measured worst over 20 000 near-180°
rotations: 1.23e-3 × voxel size). For turns under about 170° it stays below 1e-5 mm."""


class DatasetError(ValueError):
    """Bad input data: the message names the file (or folder) and the reason."""


def cannot_open(path: Path | str, err: OSError) -> DatasetError:
    """Rule 1's error, for a file or a folder that could not be opened."""
    return DatasetError(f"{path}: cannot open ({(err.strerror or type(err).__name__).lower()})")


def check_readable(path: Path) -> None:
    """Rule 1: the file opens for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise cannot_open(path, err) from err


def _unreadable(path: Path, err: Exception) -> DatasetError:
    """Rules 2 and 7's error: the bytes are not a readable NIfTI."""
    return DatasetError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})")


@dataclass(frozen=True)
class Volume:
    """A validated volume: float32 data reoriented to the closest canonical (RAS) orientation,
    its RAS affine, and the image as stored (whose header and orientation results go back to)."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    image: nib.Nifti1Image

    @property
    def grid(self) -> tuple[tuple[int, ...], np.ndarray]:
        return self.data.shape, self.affine

    def to_stored(self, ras: np.ndarray) -> np.ndarray:
        """An array on this volume's RAS grid, in the file's own voxel order (undoes the
        reorientation `read_volume` applied)."""
        stored = io_orientation(self.image.affine)
        return apply_orientation(ras, ornt_transform(axcodes2ornt("RAS"), stored))


_READ_ERRORS = (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError)


def _header(path: Path) -> tuple[nib.Nifti1Image, tuple[int, ...]]:
    """Rules 2–6, judged from the header alone: the image and its 3D shape."""
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as err:
        raise _unreadable(path, err) from err
    if not isinstance(img, nib.Nifti1Image):
        raise DatasetError(f"{path}: cannot read as NIfTI (it is a {type(img).__name__})")
    shape = img.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DatasetError(f"{path}: is {len(shape)}D (shape {img.shape}); expected 3D")
    with ImageOpener(str(path)) as fh:  # the header as stored, before nibabel's silent fixes
        stored = type(img.header).from_fileobj(fh, check=False)["pixdim"][1:4]
    affine = img.affine
    if not (np.all(np.isfinite(stored)) and np.all(stored > 0)) or not (
        np.all(np.isfinite(affine)) and abs(np.linalg.det(affine[:3, :3])) > 0
    ):
        columns = np.linalg.norm(affine[:3, :3], axis=0)
        raise DatasetError(
            f"{path}: voxel sizes {tuple(float(z) for z in stored)} in the header must be "
            f"finite and > 0 (affine column sizes {tuple(round(float(c), 4) for c in columns)})"
        )
    check_sform_qform(path, img.header)
    if min(shape) < MIN_VOXELS:
        raise DatasetError(
            f"{path}: shape {shape} is too small: need >= {MIN_VOXELS} voxels along every axis"
        )
    return img, shape


def check_sform_qform(path: Path, header: nib.Nifti1Header) -> None:
    """Rule 5: a set sform and a set qform describe the same voxel-to-world transform.

    Raises:
        DatasetError: naming the file, both codes, the disagreement and the transform used.
    """
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    if not (s_code and q_code):
        return
    diff = np.abs(sform - qform)
    allowed = np.full((4, 4), SFORM_QFORM_TOLERANCE)
    allowed[:3, :3] += QFORM_ROUNDOFF * np.linalg.norm(sform[:3, :3], axis=0)  # voxel sizes
    if np.any(diff > allowed):
        raise DatasetError(
            f"{path}: sform (code {int(s_code)}) and qform (code {int(q_code)}) disagree by "
            f"{float(diff.max()):.3g} mm (> {SFORM_QFORM_TOLERANCE:g} + float32 round-off); "
            "fedsynth would use the sform, other tools may use the qform — fix the header "
            "(e.g. set one code to 0)"
        )


def read_volume(path: Path) -> Volume:
    """Read and validate one NIfTI volume (rules 1–9)."""
    path = Path(path)
    check_readable(path)
    img, shape = _header(path)
    try:
        data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (*_READ_ERRORS, zlib.error) as err:
        raise _unreadable(path, err) from err
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise DatasetError(f"{path}: has {bad} NaN/inf voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        what = "empty (all voxels 0)" if hi == 0 else f"constant (all voxels {hi:g})"
        raise DatasetError(f"{path}: is {what}")
    ornt = io_orientation(img.affine)
    ras = apply_orientation(data, ornt).astype(np.float32, copy=False)
    return Volume(path, ras, img.affine @ inv_ornt_aff(ornt, shape), img)


def check_same_grid(volume: Volume, reference: Volume, what: str = "grid") -> None:
    """Rule 10: same shape and (to 1e-3 mm) the same affine as the subject's first volume."""
    if volume.data.shape != reference.data.shape or not np.allclose(
        volume.affine, reference.affine, atol=1e-3
    ):
        raise DatasetError(
            f"{volume.path}: {what} {volume.data.shape} differs from {reference.path} "
            f"{reference.data.shape}; resample the modalities onto one grid first"
        )


@dataclass
class BadInputPolicy:
    """What a bad file or subject does: strict (raise) or lenient (warn, record, go on).

    `skipped` holds one record per skipped input — the file (if one), site, subject and the
    reason — for the slice cache's `meta.json`.
    """

    lenient: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)

    def reject(self, err: DatasetError, **where: str) -> None:
        """Raise `err` (strict), or log and record it (lenient)."""
        if not self.lenient:
            raise err
        log.warning("skipped %s: %s", " ".join(f"{k} {v}" for k, v in where.items()), err)
        self.skipped.append({**where, "reason": str(err)})
