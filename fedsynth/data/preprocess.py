"""Volume → slices, as in a paper's preprocessing section:

1. load with nibabel and validate (3D, finite, not empty or constant);
2. reorient to the closest canonical orientation (RAS);
3. check all of a subject's volumes share one grid;
4. foreground mask: the subject's mask file (a brain mask: whole-head input is then cropped
   to the brain and everything outside it is background), or else the union of thresholded
   volumes (the head, scalp and skull included);
5. percentile scaling of the foreground to [-1, 1], background -1;
6. crop in-plane to the foreground's bounding box (plus a margin);
7. axial slices with enough foreground, padded to square and resized; the subject's label
   map (if any) the same way (majority label per pixel), 0 outside the foreground.

Every failure raises `DatasetError` naming the file and the reason.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import DatasetError, SubjectRecord

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A validated 3D float32 volume in RAS orientation and its affine."""
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except _READ_ERRORS as err:
        raise DatasetError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: is {data.ndim}D (shape {data.shape}); expected a 3D volume")
    if min(data.shape) < 2:
        raise DatasetError(f"{path}: shape {data.shape} is too small for a 3D volume")
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise DatasetError(f"{path}: has {bad} NaN/inf voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        what = "empty (all voxels 0)" if hi == 0 else f"constant (all voxels {hi:g})"
        raise DatasetError(f"{path}: is {what}")
    return data, img.affine


def same_grid(a: tuple[tuple[int, ...], np.ndarray], b: tuple[tuple[int, ...], np.ndarray]) -> bool:
    """Same shape and (to 1e-3 mm) the same affine."""
    return a[0] == b[0] and np.allclose(a[1], b[1], atol=1e-3)


def foreground_mask(volumes: list[np.ndarray], threshold: float) -> np.ndarray:
    """Union over contrasts of voxels above `threshold` × the volume's 99th percentile,
    holes filled: a head/brain mask that needs no skull stripping."""
    mask = np.zeros(volumes[0].shape, dtype=bool)
    for vol in volumes:
        mask |= vol > threshold * np.percentile(vol, 99)
    mask = ndimage.binary_opening(mask, iterations=1)
    return ndimage.binary_fill_holes(mask)


@dataclass(frozen=True)
class SubjectSlices:
    """A subject's kept axial slices: one (S, H, W) array per modality, one shared mask, the
    label map's slices when the subject has one, and the volume of one slice pixel in ml."""

    record: SubjectRecord
    images: dict[str, np.ndarray]
    mask: np.ndarray
    positions: np.ndarray
    labels: np.ndarray | None = None
    voxel_ml: float = float("nan")


class SlicePipeline:
    """The in-plane part of preprocessing, shared by training (volume → slices) and
    translation (slices → volume of the original grid)."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg

    def _square(self, shape: tuple[int, ...]) -> int:
        return max(shape[0], shape[1])

    def crop_box(self, mask: np.ndarray) -> tuple[slice, slice, slice]:
        """In-plane bounding box of the foreground over all slices, widened by `crop_margin`
        voxels: the brain fills the slice instead of a corner of the field of view."""
        if self.cfg.crop_margin < 0 or not mask.any():
            return (slice(None), slice(None), slice(None))
        m = self.cfg.crop_margin
        xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
        return (
            slice(max(xs[0] - m, 0), min(xs[-1] + m + 1, mask.shape[0])),
            slice(max(ys[0] - m, 0), min(ys[-1] + m + 1, mask.shape[1])),
            slice(None),
        )

    def to_slices(self, volume: np.ndarray, fill: float, nearest: bool = False) -> np.ndarray:
        """(X, Y, Z) → (Z, size, size): pad in-plane to a centred square, resize."""
        from monai.transforms import Compose, Resize, SpatialPad  # seconds to import: on use

        side, size = self._square(volume.shape), self.cfg.image_size
        steps = Compose(
            [
                SpatialPad((side, side, -1), mode="constant", value=fill),
                Resize((size, size, -1), mode="nearest" if nearest else "area"),
            ]
        )
        out = steps(torch.from_numpy(np.ascontiguousarray(volume))[None].float())
        return np.moveaxis(np.asarray(out[0], dtype=np.float32), -1, 0)

    def to_label_slices(self, labels: np.ndarray) -> np.ndarray:
        """(X, Y, Z) label map → (Z, size, size) uint8: each pixel takes the label covering
        most of it (area-resized one-hot, argmax), so labels stay aligned with the
        area-resized images; nearest-neighbour sampling shifts them by up to half a pixel."""
        values = np.union1d([0], np.unique(labels))  # padding is background
        cover = np.stack([self.to_slices((labels == v).astype(np.float32), 0.0) for v in values])
        return values[cover.argmax(axis=0)].astype(np.uint8)

    def pixel_ml(
        self, box: tuple[slice, slice, slice], grid: tuple[tuple[int, ...], np.ndarray]
    ) -> float:
        """Volume of one slice pixel (ml): the padded square's side over the slice size, times
        the voxel's in-plane sizes and thickness (from the RAS affine)."""
        shape, affine = grid
        cropped = [len(range(*b.indices(n))) for b, n in zip(box, shape, strict=True)]
        dx, dy, dz = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        scale = self._square(cropped) / self.cfg.image_size
        return float(scale * dx * scale * dy * dz / 1000.0)

    def to_volume(self, slices: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """(Z, size, size) → (X, Y, Z) on the original in-plane grid (inverse of to_slices)."""
        from monai.transforms import Resize

        side = self._square(shape)
        vol = torch.from_numpy(np.moveaxis(np.asarray(slices, np.float32), 0, -1))[None]
        vol = Resize((side, side, -1), mode="bilinear")(vol)[0]
        x0, y0 = (side - shape[0]) // 2, (side - shape[1]) // 2
        return np.asarray(vol[x0 : x0 + shape[0], y0 : y0 + shape[1]], dtype=np.float32)

    def scale(self, volume: np.ndarray, mask: np.ndarray, path: Path) -> np.ndarray:
        """Foreground percentiles → [-1, 1], clipped; background -1."""
        fg = volume[mask]
        lo, hi = np.percentile(fg, [self.cfg.lower_percentile, self.cfg.upper_percentile])
        if not hi > lo:
            raise DatasetError(f"{path}: no intensity range inside the foreground ({lo:g})")
        from monai.transforms import ScaleIntensityRangePercentiles

        scaler = ScaleIntensityRangePercentiles(
            lower=self.cfg.lower_percentile,
            upper=self.cfg.upper_percentile,
            b_min=-1.0,
            b_max=1.0,
            clip=True,
        )
        # MONAI takes percentiles over the whole array: give it the foreground only.
        scaled = np.asarray(scaler(torch.from_numpy(fg)), dtype=np.float32)
        out = np.full(volume.shape, -1.0, dtype=np.float32)
        out[mask] = scaled
        return out


def preprocess_subject(record: SubjectRecord, cfg: PreprocessConfig) -> SubjectSlices:
    """Validated, scaled, sliced volumes of one subject (all modalities, same positions)."""
    volumes: dict[str, np.ndarray] = {}
    grid: tuple[tuple[int, ...], np.ndarray] | None = None
    first: Path | None = None
    for modality, path in record.images.items():
        data, affine = load_volume(path)
        if grid is None:
            grid, first = (data.shape, affine), path
        elif not same_grid(grid, (data.shape, affine)):
            raise DatasetError(
                f"{path}: grid {data.shape} differs from {first} {grid[0]} "
                f"(subject {record.subject}); resample the modalities onto one grid first"
            )
        volumes[modality] = data
    assert grid is not None
    labels = None
    if record.labels is not None:
        ldata, laffine = load_volume(record.labels)
        if not same_grid(grid, (ldata.shape, laffine)):
            raise DatasetError(f"{record.labels}: label grid differs from {first}")
        labels = np.rint(ldata)
    if record.mask is not None:
        mdata, maffine = load_volume(record.mask)
        if not same_grid(grid, (mdata.shape, maffine)):
            raise DatasetError(f"{record.mask}: mask grid differs from {first}")
        mask = mdata > 0.5
    else:
        mask = foreground_mask(list(volumes.values()), cfg.foreground_threshold)
    if not mask.any():
        raise DatasetError(f"{first}: foreground mask of subject {record.subject} is empty")

    pipe = SlicePipeline(cfg)
    box = pipe.crop_box(mask)
    mask_slices = pipe.to_slices(mask[box].astype(np.float32), fill=0.0, nearest=True) > 0.5
    keep = np.flatnonzero(mask_slices.mean(axis=(1, 2)) >= max(cfg.min_foreground, 1e-9))
    images = {
        m: pipe.to_slices(pipe.scale(v, mask, record.images[m])[box], fill=-1.0)[keep]
        for m, v in volumes.items()
    }
    masks = mask_slices[keep]
    for m in images:  # resizing blurs edges: background is exactly -1 again
        np.clip(images[m], -1.0, 1.0, out=images[m])
        images[m][~masks] = -1.0
    label_slices = None
    if labels is not None:
        label_slices = pipe.to_label_slices(labels[box])[keep]
        label_slices[~masks] = 0
    return SubjectSlices(
        record, images, masks, keep.astype(np.int32), label_slices, pipe.pixel_ml(box, grid)
    )
