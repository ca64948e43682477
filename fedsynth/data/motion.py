"""Random smooth fields and between-sequence patient motion on a voxel grid (the phantom's).

A patient moves between the sequences of one session, and each sequence distorts a little
differently: the contrasts of a subject are then on one grid but not voxel-aligned. The motion
is not zero-mean jitter: a supine head settles into the cushion over a session, so a later
sequence is displaced mostly backwards (posterior, gravity) and nodded (pitch, about the
left-right axis) relative to an earlier one — the slow drift that dominates in-scanner motion
traces. A `Misalignment` bound draws, per contrast, how far the subject has settled (a share
`SETTLED` .. 1 of the bound) and a rigid motion of that size — a translation of length share ×
`mm` along posterior, a rotation about the volume's centre by share × `degrees` about the
left-right axis (chin down), each direction scattered by `SCATTER` × a uniformly random unit
vector — plus a smooth elastic deformation whose displacement SD is `DEFORMATION_FRACTION` ×
`mm` (control points `DEFORMATION_SPACING_MM` apart). Zero-mean jitter would not show what
misalignment costs: a per-pixel L1 fits the median target, and the median of symmetric shifts
is the unshifted edge. The volume is resampled with scipy's `map_coordinates` (linear); what
moves in from outside is 0 (air). Axes are the voxel grid's, RAS (x right, y anterior, z up:
the phantom's MNI grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates, zoom
from scipy.spatial.transform import Rotation

DEFORMATION_FRACTION = 0.25
"""SD (mm) of the smooth deformation per `Misalignment.mm` of translation: 1 mm at 4 mm."""
DEFORMATION_SPACING_MM = 40.0
SETTLED = 0.5
"""The least share of the bound a misaligned contrast has settled by (uniform up to 1)."""
SCATTER = 0.5
"""Length of the random unit vector added to the settling direction and the nodding axis."""
POSTERIOR = np.array([0.0, -1.0, 0.0])
"""Where a supine head settles: towards the table (RAS −y)."""
CHIN_DOWN = np.array([-1.0, 0.0, 0.0])
"""The nodding axis: a positive rotation about RAS −x tips the chin towards the chest."""
MAX_MM, MAX_DEGREES = 20.0, 30.0
"""Bounds a `Misalignment` accepts: beyond them a registration is no longer 'small'."""


def smooth_field(
    shape: tuple[int, ...], spacing_vox: float, rng: np.random.Generator
) -> np.ndarray:
    """Unit-scale random field, smooth at `spacing_vox`: cubic upsampling of coarse noise.

    Upsampled one axis at a time (a small weight matrix per axis), which is ~50x faster than
    `zoom` on the 3D grid and gives the same tensor-product spline.
    """
    field = rng.standard_normal([max(2, math.ceil(s / spacing_vox)) + 1 for s in shape])
    for axis, size in enumerate(shape):
        n = field.shape[axis]
        weights = zoom(np.eye(n), (size / n, 1), order=3)  # (size, n) interpolation weights
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return field.astype(np.float32)


@dataclass(frozen=True)
class Misalignment:
    """Upper bounds of one contrast's motion: translation `mm`, rotation `degrees`."""

    mm: float = 0.0
    degrees: float = 0.0

    def __post_init__(self) -> None:
        for name, value, high in (("mm", self.mm, MAX_MM), ("degrees", self.degrees, MAX_DEGREES)):
            if not (isinstance(value, (int, float)) and 0 <= value <= high):
                raise ValueError(
                    f"misalign {name}={value!r}: expected a number in [0, {high:g}] "
                    "(misalign is MM,DEG: translation up to MM mm, rotation up to DEG degrees)"
                )

    @property
    def moves(self) -> bool:
        return self.mm > 0 or self.degrees > 0


@dataclass(frozen=True)
class Motion:
    """One drawn motion: where each output voxel samples the input (3, X·Y·Z), and the
    rigid part's size (for the record)."""

    coords: np.ndarray
    shape: tuple[int, ...]
    translation_mm: float
    rotation_degrees: float

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """`volume` (on `shape`) moved: linear resampling, 0 outside the field of view."""
        moved = map_coordinates(volume, self.coords, order=1, mode="constant", cval=0.0)
        return moved.reshape(self.shape).astype(volume.dtype, copy=False)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _scattered(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = direction + SCATTER * _unit(rng)
    return v / np.linalg.norm(v)


def random_motion(
    shape: tuple[int, ...], voxel_mm: float, bound: Misalignment, rng: np.random.Generator
) -> Motion:
    """A settling rigid motion within `bound` plus a smooth deformation, on a grid of `shape`
    voxels of `voxel_mm` (isotropic), drawn from `rng`."""
    settled = rng.uniform(SETTLED, 1.0)
    shift_mm, angle = settled * bound.mm, settled * bound.degrees
    rotation = Rotation.from_rotvec(_scattered(CHIN_DOWN, rng) * angle, degrees=True).as_matrix()
    shift_vox = _scattered(POSTERIOR, rng) * shift_mm / voxel_mm
    centre = (np.array(shape, dtype=np.float64)[:, None] - 1) / 2
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1) - centre
    # the content turns by `rotation` and moves by `shift_vox`: sample at its inverse
    coords = rotation.T @ grid + centre - shift_vox[:, None]
    sd_vox = DEFORMATION_FRACTION * bound.mm / voxel_mm
    if sd_vox > 0:
        spacing = DEFORMATION_SPACING_MM / voxel_mm
        for axis in range(3):
            coords[axis] += sd_vox * smooth_field(shape, spacing, rng).ravel()
    return Motion(coords.astype(np.float32), tuple(shape), float(shift_mm), float(angle))
