"""Volume → slices, as in a paper's preprocessing section:

1. read and validate every volume (`fedsynth.data.validation`: NIfTI, 3D, voxel sizes, size,
   finite, not constant), reoriented to the closest canonical orientation (RAS);
2. check all of a subject's volumes share one grid;
3. foreground mask: the subject's mask file (a brain mask: whole-head input is then cropped
   to the brain and everything outside it is background), or else the union of each
   volume's thresholded foreground (the head, scalp and skull included; the threshold is
   relative to the volume's background floor: signed data work);
4. intensity scaling of the foreground to [-1, 1] anchored on its median (robust to lesion
   load; `PreprocessConfig.scaling`), background -1;
5. crop in-plane to the foreground's bounding box (plus a margin);
6. axial slices with enough foreground, padded to square and resized; the subject's label
   map (if any) the same way (majority label per pixel), 0 outside the foreground.

Training (`preprocess_subject`) and `translate` (`load_subject` + `SlicePipeline`) run the same
steps, so they accept, reject and scale the same input the same way. Every failure raises
`DatasetError` naming the file and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from fedsynth.data.config import BACKGROUND, PreprocessConfig
from fedsynth.data.layouts import DatasetError, SubjectRecord
from fedsynth.data.validation import Volume, check_same_grid, read_volume


def foreground_mask(volume: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels above floor + `threshold` × (99th percentile − floor), opened and holes filled:
    a head/brain mask that needs no skull stripping.

    The floor is the volume's minimum — its background level: 0 for most MR exports, negative
    for signed ones (e.g. int16 with background −1024 and tissue −900..1500). Measuring the
    threshold from the floor, not from 0, keeps the dark tissue of signed data in the mask,
    makes the mask (and so the scaling) the same for a volume and the volume plus a constant,
    and changes nothing for data whose background is 0.
    """
    floor = float(volume.min())
    mask = volume > floor + threshold * (float(np.percentile(volume, 99)) - floor)
    return ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=1))


@dataclass(frozen=True)
class SubjectVolumes:
    """A subject's validated volumes (RAS, one grid) and its foreground mask."""

    volumes: dict[str, Volume]
    mask: np.ndarray


def load_subject(record: SubjectRecord, cfg: PreprocessConfig) -> SubjectVolumes:
    """Read and validate a subject's volumes (validation rules 1–11, up to the slices)."""
    volumes: dict[str, Volume] = {}
    for modality, path in record.images.items():
        volumes[modality] = read_volume(path)
        check_same_grid(volumes[modality], next(iter(volumes.values())))
    if record.mask is not None:
        given = read_volume(record.mask)
        check_same_grid(given, next(iter(volumes.values())), what="mask grid")
        if not (given.data > 0.5).any():
            raise DatasetError(f"{record.mask}: no foreground (no voxel > 0.5)")
        return SubjectVolumes(volumes, given.data > 0.5)
    # Without a mask file, the union of each volume's own foreground, each required.
    mask = np.zeros(next(iter(volumes.values())).data.shape, bool)
    for vol in volumes.values():
        own = foreground_mask(vol.data, cfg.foreground_threshold)
        if not own.any():
            raise DatasetError(
                f"{vol.path}: no foreground (no region above {cfg.foreground_threshold:g} of "
                "the intensity range over the background)"
            )
        mask |= own
    return SubjectVolumes(volumes, mask)


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
        """Foreground intensities → [-1, 1] by `cfg.scaling`, clipped; background -1."""
        from monai.transforms import ScaleIntensityRange

        fg = volume[mask]
        c = self.cfg
        if c.scaling == "median":
            lo, median = np.percentile(fg, [c.lower_percentile, 50.0])
            hi = lo + c.median_span * (median - lo)
        else:
            lo, hi = np.percentile(fg, [c.lower_percentile, c.upper_percentile])
        if not hi > lo:
            raise DatasetError(f"{path}: no intensity range inside the foreground ({lo:g})")
        scaler = ScaleIntensityRange(
            a_min=float(lo), a_max=float(hi), b_min=-1.0, b_max=1.0, clip=True
        )
        out = np.full(volume.shape, BACKGROUND, dtype=np.float32)
        out[mask] = np.asarray(scaler(torch.from_numpy(fg)), dtype=np.float32)
        return out

    def subject_slices(
        self, subject: SubjectVolumes
    ) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[slice, slice, slice]]:
        """Every axial slice of every modality — scaled, cropped, padded, resized, background
        exactly -1 — with the mask slices and the crop box (to map slices back)."""
        box = self.crop_box(subject.mask)
        masks = self.to_slices(subject.mask[box].astype(np.float32), fill=0.0, nearest=True) > 0.5
        images = {}
        for modality, vol in subject.volumes.items():
            scaled = self.scale(vol.data, subject.mask, vol.path)[box]
            slices = self.to_slices(scaled, fill=BACKGROUND)
            np.clip(slices, -1.0, 1.0, out=slices)  # resizing blurs edges: background is
            slices[~masks] = BACKGROUND  # exactly -1 again
            images[modality] = slices
        return images, masks, box


def preprocess_subject(record: SubjectRecord, cfg: PreprocessConfig) -> SubjectSlices:
    """Validated, scaled, sliced volumes of one subject (all modalities, same positions):
    the axial slices with at least `min_foreground` foreground, and its label map's slices."""
    subject = load_subject(record, cfg)
    pipe = SlicePipeline(cfg)
    images, masks, box = pipe.subject_slices(subject)
    keep = np.flatnonzero(masks.mean(axis=(1, 2)) >= max(cfg.min_foreground, 1e-9))
    if not len(keep):
        first = next(iter(record.images.values()))
        raise DatasetError(
            f"{first}: no axial slice has >= {cfg.min_foreground:g} foreground "
            f"(subject {record.subject})"
        )
    reference = next(iter(subject.volumes.values()))
    labels = None
    if record.labels is not None:
        given = read_volume(record.labels)
        check_same_grid(given, reference, what="label grid")
        labels = pipe.to_label_slices(np.rint(given.data)[box])[keep]
        labels[~masks[keep]] = 0
    return SubjectSlices(
        record,
        {m: v[keep] for m, v in images.items()},
        masks[keep],
        keep.astype(np.int32),
        labels,
        pipe.pixel_ml(box, reference.grid),
    )
