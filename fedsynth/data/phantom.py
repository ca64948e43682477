"""Embedded multi-site, multi-contrast brain MRI phantom (no download, ever).

Anatomy: the MNI152 ICBM 2009a T1 template, grey/white-matter probability maps and brain mask
that ship inside the nilearn wheel; CSF = clip(mask − GM − WM). Each subject is a smooth random
elastic warp of that anatomy (optionally with a tumour core + oedema). Contrasts come from MR
signal equations (`mr_signal`) mixed per voxel by tissue fraction, |Σ fraction·signal|. Each
site is a scanner: field strength, TR/TE/TI, Rician noise, bias field and subject count differ,
which is the heterogeneity federated training has to cope with. A *domain-randomised* cohort
(`acquisition="randomised"`) draws a scanner per subject instead, over clinical ranges: the
public pretraining data of a warm start that has seen the protocols hospitals use.
Intensities are scanner-like (brightest normal tissue = FULL_SCALE before bias and noise;
noise σ is a fraction of it).
Labels: 0 background, 1 CSF, 2 GM, 3 WM, 4 oedema, 5 tumour core. With `heads`, the brain sits
in a whole head — extra-cerebral CSF, skull, muscle and scalp fat in shells around it (labels
6–9), rendered with their own relaxation values by the same signal equations — and the brain
mask is still written, so preprocessing can crop to the brain or keep the head. Files are
written with the same layout writers the loaders read, so phantom and hospital data share one
code path.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates
from scipy.spatial.transform import Rotation
from scipy.special import expit

from fedsynth.data.layouts import (
    HELD_OUT_KEY,
    LAYOUTS,
    SITES_FILE,
    DatasetError,
    get_layout,
    normalise_modality,
    write_subject,
)
from fedsynth.data.motion import Misalignment, Motion, random_motion, smooth_field
from fedsynth.data.mr_signal import RELAXATION, TISSUES, PulseSequence, csf_null_ti, tissue_signal

PHANTOM_MODALITIES = ("T1", "T2", "PD", "FLAIR")
LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "oedema", 5: "tumour core"}
HEAD_LABELS = {6: "extra-cerebral CSF", 7: "skull", 8: "muscle", 9: "scalp fat"}
TUMOUR_LABEL = 5
MAX_SUBJECTS_PER_SITE = 999  # subject number = site_index * 1000 + k + 1 stays unique
GENERATOR = "fedsynth phantom"

# docs/architecture.md §2 protocols; the reference site (hospA, 1.5 T) uses them unchanged.
REFERENCE_SEQUENCES = {
    "T1": PulseSequence("MPRAGE", tr=2400, te=3, ti=1000, flip=8),
    "T2": PulseSequence("SE", tr=4000, te=100),
    "PD": PulseSequence("SE", tr=4000, te=15),
    "FLAIR": PulseSequence("FLAIR", tr=9000, te=120),  # TI set per site to null CSF
}

# Anatomy variation between subjects.
WARP_SPACING_MM = 40.0  # control-point spacing of the elastic displacement field
WARP_SD_MM = 2.0  # displacement SD at control points (peaks of a few mm)
SCALE_SD = 0.03  # global isotropic scale
ROTATION_SD_DEG = 3.0  # global rotation about each axis
BIAS_SPACING_MM = 100.0  # bias field control-point spacing (very smooth)
LESION_SPACING_MM = 15.0  # scale of the lesion outline's irregularity
MONTAGE_ROWS = 3
FULL_SCALE = 1000.0  # intensity of the brightest normal tissue, scanner-like units
NORMAL_TISSUES = ("csf", "gm", "wm")
# Head shells outward from the brain surface (mm): extra-cerebral CSF, skull (± a smooth
# variation), muscle (thickest at the temples, as temporalis), then scalp fat.
ECSF_MM = 3.0
SKULL_MM, SKULL_SD_MM = 6.0, 1.0
MUSCLE_MM, TEMPORALIS_MM = 1.5, 6.0
FAT_MM = 5.0
SHELL_EDGE_MM = 0.5  # partial-volume width of each shell boundary

# Random streams: spawn keys under the config seed, so any subject can be regenerated alone and
# adding sites, subjects, modalities or lesions never changes the others.
_PROTOCOL, _SUBJECT = 0, 1
_WARP, _LESION, _NOISE = 0, 1, 2
_ACQUISITION = _NOISE + 4  # after the per-modality noise streams
ACQUISITIONS = ("site", "randomised")
_HAS_LESION = 9  # after the noise streams (2 + modality index)
DEFAULT_HELD_OUT = 0.25  # = DataConfig.test_fraction's default
_ROLES = 2  # per site, after _PROTOCOL and _SUBJECT: who is held out, paired or single
_MOTION = 10  # per subject and contrast: the between-sequence motion

# What a subject of a phantom that splits its training subjects holds (`subject_roles`):
HELD_OUT = "held-out"  # every contrast, aligned: test/validation ground truth
PAIRED = "paired"  # every contrast, each but the reference moved (`Misalignment`)
# ... or the name of the one contrast it has (an unpaired training subject).


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --- configuration ---------------------------------------------------------------------------


def _require_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _canonical_modalities(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise aliases (t1, T1w, flair, …) and refuse anything the phantom cannot simulate."""
    out = []
    for name in modalities:
        try:
            canon = normalise_modality(name)
        except DatasetError:
            canon = None
        if canon not in PHANTOM_MODALITIES:
            raise ValueError(
                f"modality {name!r} is not simulated by the phantom; "
                f"choose from {', '.join(PHANTOM_MODALITIES)}"
            )
        if canon in out:
            raise ValueError(f"modality {name!r} is listed twice in {modalities!r}")
        out.append(canon)
    if not out:
        raise ValueError("modalities must name at least one of " + ", ".join(PHANTOM_MODALITIES))
    return tuple(out)


@dataclass(frozen=True)
class PhantomConfig:
    """What to simulate. Validated on construction (ValueError naming the bad value).

    sites: number of hospitals (default 3: hospA 1.5 T, hospB and hospC 3 T; more are drawn
        from the seed). subjects_per_site: one count for every site, or one per site.
    modalities: any of T1, T2, PD, FLAIR (aliases such as t1/T1w accepted, stored canonical).
    resolution: 1 or 2 mm (MNI grid). seed: makes everything reproducible.
    lesions: add a tumour core + oedema; lesion_fraction: the share of subjects that get one
        (each subject draws from its own stream; 1.0: every subject), so a dataset also has
        lesion-free subjects on which to count invented lesions.
    heads: a whole head around the brain (scalp fat, skull, muscle, extra-cerebral CSF).
    layout: bids | ixi | brats | manifest.
    acquisition: "site" (every subject of a site on its scanner) or "randomised" (each subject
        on its own scanner drawn by `random_scanner`: domain randomisation for public data).
    scanners: the named set of the first sites' scanners (`SCANNER_SETS`): "default", or
        "long-te" (protocols outside the randomised ranges: private sites that differ from a
        public cohort).
    paired_fraction: the share of each site's *training* subjects that get every contrast
        (one value, or one per site); the other training subjects get one contrast each
        (balanced over `modalities`), as an unpaired hospital would have. 1.0: every subject
        gets every contrast (the default, and what the data layer's unpaired split expects).
    misalign: (MM, DEG): every contrast of a paired training subject but the reference (the
        first of `modalities`) is moved as a head settling into the cushion — translation
        of ½ to 1 × MM mm towards the table, a nod of ½ to 1 × DEG degrees, each direction
        scattered — plus a small smooth deformation (`fedsynth.data.motion`)
        after its anatomy is simulated, before bias and noise. The brain mask and the label
        map describe the reference contrast. (0, 0): aligned.
    held_out_fraction: the share of each site's subjects (at least one) held out — every
        contrast, aligned — and named in dataset.json, where the data layer then takes its
        test and validation subjects from; everyone else trains. None (default): 0.25 when
        the phantom splits its subjects (`splits_subjects`: a paired fraction below 1 or a
        misalignment), else none named (the data layer's split chooses, as before). Given,
        it always applies: phantoms of one seed that differ in pairing then share their
        held-out subjects, bitwise.
    Every choice draws from streams of its own: subjects, contrasts and noise are bitwise those
    of the same seed without the options.
    """

    sites: int = 3
    subjects_per_site: int | tuple[int, ...] = 8
    modalities: tuple[str, ...] = PHANTOM_MODALITIES
    resolution: int = 2
    seed: int = 0
    lesions: bool = False
    lesion_fraction: float = 1.0
    heads: bool = False
    layout: str = "bids"
    acquisition: str = "site"
    scanners: str = "default"
    paired_fraction: float | tuple[float, ...] = 1.0
    misalign: tuple[float, float] = (0.0, 0.0)
    held_out_fraction: float | None = None

    def __post_init__(self) -> None:
        _require_int("sites", self.sites, 1)
        self._freeze_per_site("subjects_per_site")
        for count in self.subject_counts:
            _require_int("subjects_per_site", count, 1, MAX_SUBJECTS_PER_SITE)
        object.__setattr__(self, "modalities", _canonical_modalities(tuple(self.modalities)))
        if self.resolution not in (1, 2) or isinstance(self.resolution, bool):
            raise ValueError(f"resolution must be 1 or 2 (mm), got {self.resolution!r}")
        _require_int("seed", self.seed, 0)
        for name in ("lesions", "heads"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not 0.0 <= self.lesion_fraction <= 1.0:
            raise ValueError(f"lesion_fraction must be in [0, 1], got {self.lesion_fraction!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(
                f"acquisition must be one of {', '.join(ACQUISITIONS)}, got {self.acquisition!r}"
            )
        if self.scanners not in SCANNER_SETS:
            raise ValueError(
                f"scanners must be one of {', '.join(SCANNER_SETS)}, got {self.scanners!r}"
            )
        self._check_pairing()

    def _freeze_per_site(self, name: str) -> None:
        """A per-site list of `name` has one entry per site, and is stored as a tuple."""
        value = getattr(self, name)
        if isinstance(value, (tuple, list)):
            if len(value) != self.sites:
                raise ValueError(
                    f"{name} {tuple(value)!r} has {len(value)} entries for {self.sites} sites"
                )
            object.__setattr__(self, name, tuple(value))

    def _check_pairing(self) -> None:
        self._freeze_per_site("paired_fraction")
        for f in self.paired_fractions:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
                raise ValueError(f"paired_fraction must be in [0, 1], got {f!r}")
        misalign = tuple(self.misalign) if isinstance(self.misalign, (tuple, list)) else ()
        if len(misalign) != 2:
            raise ValueError(
                f"misalign must be (MM, DEG) — translation up to MM mm, rotation up to DEG "
                f"degrees — got {self.misalign!r}"
            )
        object.__setattr__(self, "misalign", misalign)
        Misalignment(*misalign)  # checks the bounds
        given = self.held_out_fraction
        if given is not None and not 0.0 < given < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {given!r}")
        if self.splits_subjects:
            for count in self.subject_counts:
                if count - held_out_count(count, self.held_out_share) < 1:
                    raise ValueError(
                        f"subjects_per_site={count} leaves no training subject after holding "
                        f"out held_out_fraction={self.held_out_share}: give a site >= 2"
                    )

    @property
    def subject_counts(self) -> tuple[int, ...]:
        """Subjects at each site."""
        if isinstance(self.subjects_per_site, tuple):
            return self.subjects_per_site
        return (self.subjects_per_site,) * self.sites

    @property
    def paired_fractions(self) -> tuple[float, ...]:
        """The paired fraction of each site."""
        if isinstance(self.paired_fraction, tuple):
            return self.paired_fraction
        return (self.paired_fraction,) * self.sites

    @property
    def misalignment(self) -> Misalignment:
        return Misalignment(*self.misalign)

    @property
    def splits_subjects(self) -> bool:
        """Whether subjects get roles (held out, paired, single-contrast): a held-out fraction,
        a paired fraction below 1 or a misalignment. Otherwise every subject has every
        contrast, aligned, and none is named."""
        partly = any(f < 1.0 for f in self.paired_fractions)
        return self.held_out_fraction is not None or partly or self.misalignment.moves

    @property
    def held_out_share(self) -> float:
        """The held-out fraction in force (`DEFAULT_HELD_OUT` unless given)."""
        given = self.held_out_fraction
        return DEFAULT_HELD_OUT if given is None else given


def held_out_count(subjects: int, fraction: float) -> int:
    """Held-out subjects of a site of `subjects`: `fraction` of them, at least one."""
    return max(1, round(fraction * subjects))


# --- sites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scanner:
    """How one site's scanner departs from the reference protocols."""

    field_strength: float  # tesla
    tr_scale: float
    te_scale: float
    ti_scale: float  # MPRAGE TI; FLAIR TI always nulls CSF at this field and TR
    flip: float  # MPRAGE flip angle, degrees
    noise_sigma: float  # Rician σ as a fraction of the brightest tissue's signal
    bias_amplitude: float  # peak deviation of the multiplicative bias field from 1

    def sequences(self) -> dict[str, PulseSequence]:
        """This scanner's protocol for every phantom modality."""
        t1_csf = RELAXATION[self.field_strength]["csf"].t1
        out = {}
        for modality, ref in REFERENCE_SEQUENCES.items():
            tr, te = ref.tr * self.tr_scale, ref.te * self.te_scale
            if ref.kind == "MPRAGE":
                out[modality] = PulseSequence(ref.kind, tr, te, ref.ti * self.ti_scale, self.flip)
            elif ref.kind == "FLAIR":
                out[modality] = PulseSequence(ref.kind, tr, te, csf_null_ti(t1_csf, tr))
            else:
                out[modality] = PulseSequence(ref.kind, tr, te)
        return out


DEFAULT_SCANNERS = (
    Scanner(1.5, 1.00, 1.00, 1.00, 8.0, noise_sigma=0.02, bias_amplitude=0.10),  # reference
    Scanner(3.0, 0.96, 0.90, 0.90, 9.0, noise_sigma=0.015, bias_amplitude=0.25),  # ADNI-like
    Scanner(3.0, 1.08, 1.10, 1.10, 7.0, noise_sigma=0.04, bias_amplitude=0.20),  # noisy 3 T
)


# Outside `random_scanner`'s ranges: heavily T2-weighted T2/PD (TE × 2.0-2.2, i.e. T2w TE
# 200-220 ms), which darkens grey and white matter against CSF. What a warm start pretrained
# on a randomised public cohort has not seen (fine-tuning's job).
LONG_TE_SCANNERS = (
    Scanner(1.5, 1.00, 2.00, 1.00, 8.0, noise_sigma=0.02, bias_amplitude=0.10),
    Scanner(3.0, 0.95, 2.20, 0.90, 9.0, noise_sigma=0.015, bias_amplitude=0.25),
    Scanner(3.0, 1.05, 2.10, 1.10, 7.0, noise_sigma=0.03, bias_amplitude=0.20),
)
SCANNER_SETS = {"default": DEFAULT_SCANNERS, "long-te": LONG_TE_SCANNERS}


RANDOM_RANGES = {
    "field_strength_T": (1.5, 3.0),
    "tr_scale": (0.9, 1.1),
    "te_scale": (0.85, 1.15),
    "ti_scale": (0.9, 1.1),
    "flip_deg": (7.0, 10.0),
    "noise_sigma": (0.01, 0.05),
    "bias_amplitude": (0.05, 0.3),
}
"""What `random_scanner` draws from: field strength one of the two, the rest uniform; timing
scales multiply the docs/architecture.md §2 reference protocols. Recorded in dataset.json and model
cards."""


def random_scanner(rng: np.random.Generator) -> Scanner:
    """A plausible scanner over `RANDOM_RANGES`: sites beyond the configured set, and every
    subject of a domain-randomised cohort."""
    r = RANDOM_RANGES
    return Scanner(
        field_strength=float(rng.choice(list(r["field_strength_T"]))),
        tr_scale=rng.uniform(*r["tr_scale"]),
        te_scale=rng.uniform(*r["te_scale"]),
        ti_scale=rng.uniform(*r["ti_scale"]),
        flip=rng.uniform(*r["flip_deg"]),
        noise_sigma=rng.uniform(*r["noise_sigma"]),
        bias_amplitude=rng.uniform(*r["bias_amplitude"]),
    )


def site_name(index: int) -> str:
    """hospA, hospB, …, hospZ, hospAA, … — letters only, as IXI-style file names require."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return "hosp" + letters


@dataclass(frozen=True)
class Site:
    """One simulated hospital."""

    index: int
    name: str
    scanner: Scanner
    subjects: int

    @property
    def sequences(self) -> dict[str, PulseSequence]:
        return self.scanner.sequences()

    def subject_number(self, k: int) -> int:
        """Globally unique subject number (IXI/BraTS ids must not collide across sites)."""
        return self.index * 1000 + k + 1

    def describe(self, modalities: tuple[str, ...]) -> dict:
        """This site's entry in dataset.json."""
        seqs = self.sequences
        return {
            "name": self.name,
            "field_strength_T": self.scanner.field_strength,
            "protocols": {m: seqs[m].as_dict() for m in modalities},
            "noise_sigma": round(self.scanner.noise_sigma, 4),
            "bias_amplitude": round(self.scanner.bias_amplitude, 4),
            "subjects": self.subjects,
        }


def make_sites(cfg: PhantomConfig) -> list[Site]:
    """The configured sites: the named scanner set first, then scanners drawn from the seed."""
    named = SCANNER_SETS[cfg.scanners]
    return [
        Site(
            index=i,
            name=site_name(i),
            scanner=named[i] if i < len(named) else random_scanner(_rng(cfg.seed, i, _PROTOCOL)),
            subjects=count,
        )
        for i, count in enumerate(cfg.subject_counts)
    ]


# --- anatomy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """MNI152 tissue fractions (CSF, GM, WM; sum 1 inside the brain) and the real T1 template."""

    fractions: np.ndarray  # (3, X, Y, Z) float32
    template: np.ndarray  # (X, Y, Z) float32
    affine: np.ndarray
    voxel_mm: float

    @property
    def mask(self) -> np.ndarray:
        return self.fractions.sum(axis=0) > 0.5


@functools.lru_cache(maxsize=2)
def load_anatomy(resolution: int) -> Anatomy:
    """Load the MNI152 2009a maps bundled with nilearn (cached: loading costs seconds)."""
    from nilearn import datasets  # slow import; only the phantom needs it

    def arr(img: nib.Nifti1Image) -> np.ndarray:
        return np.asarray(img.get_fdata(dtype=np.float32))

    template = datasets.load_mni152_template(resolution=resolution)
    mask = arr(datasets.load_mni152_brain_mask(resolution=resolution)) > 0.5
    gm = np.clip(arr(datasets.load_mni152_gm_template(resolution=resolution)), 0, 1) * mask
    wm = np.clip(arr(datasets.load_mni152_wm_template(resolution=resolution)), 0, 1) * mask
    excess = np.maximum(gm + wm, 1.0)  # probabilities may overlap by a rounding error
    gm, wm = gm / excess, wm / excess
    csf = np.clip(mask - gm - wm, 0, 1)
    fractions = np.stack([csf, gm, wm]).astype(np.float32)
    for a in (fractions, template_arr := arr(template)):
        a.flags.writeable = False  # shared by every subject through the cache
    return Anatomy(fractions, template_arr, template.affine.copy(), float(resolution))


@functools.lru_cache(maxsize=2)
def head_fractions(resolution: int) -> np.ndarray:
    """(4, X, Y, Z) fractions of extra-cerebral CSF, skull, muscle and fat around the MNI brain.

    Shells of the distance (mm) outside the brain mask, with soft edges; the head fills what the
    brain's partial-volume voxels leave. The same for every subject before the subject's warp.
    """
    anatomy = load_anatomy(resolution)
    mm = anatomy.voxel_mm
    outside = distance_transform_edt(~anatomy.mask).astype(np.float32) * np.float32(mm)
    shape = outside.shape
    fixed = np.random.default_rng(0)  # one head anatomy; subjects differ by their warp
    skull = SKULL_MM + SKULL_SD_MM * smooth_field(shape, 30.0 / mm, fixed)
    x = np.abs(np.linspace(-1.0, 1.0, shape[0], dtype=np.float32))[:, None, None]
    muscle = np.broadcast_to(MUSCLE_MM + TEMPORALIS_MM * x**2, shape)
    bounds = np.cumsum([np.full(shape, ECSF_MM), skull, muscle, np.full(shape, FAT_MM)], axis=0)
    inside = expit((bounds - outside) / SHELL_EDGE_MM)  # 1 inside each outer boundary
    shells = np.diff(inside, axis=0, prepend=0.0)
    free = 1.0 - anatomy.fractions.sum(axis=0)
    out = (np.clip(shells, 0, 1) * free).astype(np.float32)
    out.flags.writeable = False
    return out


def warp_fractions(
    anatomy: Anatomy, rng: np.random.Generator, fractions: np.ndarray | None = None
) -> np.ndarray:
    """A new subject: global scale/rotation plus a smooth elastic displacement of a few mm,
    of the anatomy's tissue fractions (or of `fractions` on its grid, e.g. with a head)."""
    fractions = anatomy.fractions if fractions is None else fractions
    shape = fractions.shape[1:]
    centre = (np.array(shape, dtype=np.float32)[:, None] - 1) / 2
    angles = rng.normal(0.0, ROTATION_SD_DEG, 3)
    scale = 1.0 + np.clip(rng.normal(0.0, SCALE_SD), -2 * SCALE_SD, 2 * SCALE_SD)
    linear = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() * scale
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre
    coords = linear.astype(np.float32) @ grid + centre
    sd_vox = WARP_SD_MM / anatomy.voxel_mm
    spacing = WARP_SPACING_MM / anatomy.voxel_mm
    for axis in range(3):
        coords[axis] += sd_vox * smooth_field(shape, spacing, rng).ravel()
    warped = [map_coordinates(f, coords, order=1, mode="constant", cval=0.0) for f in fractions]
    return np.stack(warped).reshape(fractions.shape)


def _soft_ball(dist_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    return expit(radius_mm - dist_mm)  # 1 inside, 0 outside, ~1 mm partial-volume edge


def add_lesion(fractions: np.ndarray, voxel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Grow an irregular tumour core with an oedema rim in white matter.

    Returns 5 channels (CSF, GM, WM, oedema, tumour): lesion tissue displaces normal tissue,
    so fractions still sum to the brain fraction.
    """
    shape = fractions.shape[1:]
    centre = np.unravel_index(rng.choice(np.flatnonzero(fractions[2] > 0.9)), shape)
    core_mm = rng.uniform(5.0, 10.0)
    oedema_mm = core_mm + rng.uniform(6.0, 14.0)
    offsets = (
        np.indices(shape, dtype=np.float32) - np.array(centre, np.float32)[:, None, None, None]
    )
    dist = np.sqrt((offsets**2).sum(axis=0)) * voxel_mm
    dist *= 1 + 0.2 * smooth_field(shape, LESION_SPACING_MM / voxel_mm, rng)
    core = _soft_ball(dist, core_mm)
    oedema = _soft_ball(dist, oedema_mm) - core
    brain = fractions.sum(axis=0)
    return np.concatenate([fractions * (1 - core - oedema), [oedema * brain, core * brain]])


def render(fractions: np.ndarray, seq: PulseSequence, field_strength: float) -> np.ndarray:
    """Noise-free magnitude image |Σ fraction·signal| for one sequence."""
    table = RELAXATION[field_strength]
    signals = np.array([tissue_signal(table[t], seq) for t in TISSUES[: len(fractions)]])
    return np.abs(np.tensordot(signals.astype(np.float32), fractions, axes=1))


def bias_field(
    shape: tuple[int, ...], amplitude: float, voxel_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth multiplicative field in [1 − amplitude, 1 + amplitude] (receive-coil shading)."""
    field = smooth_field(shape, BIAS_SPACING_MM / voxel_mm, rng)
    return 1 + amplitude * field / np.abs(field).max()


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of complex Gaussian noise: sqrt((S + n1)² + n2²), over the whole FOV."""
    n1, n2 = rng.standard_normal((2, *image.shape), dtype=np.float32) * np.float32(sigma)
    return np.sqrt((image + n1) ** 2 + n2**2)


def acquire(
    fractions: np.ndarray,
    bias: np.ndarray,
    scanner: Scanner,
    modality: str,
    rng: np.random.Generator,
    motion: Motion | None = None,
) -> np.ndarray:
    """One scan in scanner-like units: the brightest normal tissue is FULL_SCALE before bias
    and noise; magnitudes are rounded to integers as scanners store them (step << noise σ,
    and integer-valued float32 compresses twice as fast). With `motion` the patient has
    moved: the rendered anatomy moves, the coil's bias field and the noise do not."""
    seq = scanner.sequences()[modality]
    field = scanner.field_strength
    brightest = max(abs(tissue_signal(RELAXATION[field][t], seq)) for t in NORMAL_TISSUES)
    rendered = render(fractions, seq, field)
    if motion is not None:
        rendered = motion.apply(rendered)
    clean = rendered * (bias * np.float32(FULL_SCALE / brightest))
    return np.round(rician(clean, scanner.noise_sigma * FULL_SCALE, rng))


# --- subjects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedSubject:
    """One subject's volumes on the MNI grid: float32 contrasts, uint8 brain mask and labels."""

    number: int
    images: dict[str, np.ndarray]
    mask: np.ndarray
    labels: np.ndarray


Preview = tuple[int, dict[str, np.ndarray]]  # subject number, axial slice per modality


def subject_scanner(cfg: PhantomConfig, site: Site, k: int) -> Scanner:
    """The scanner subject `k` of `site` is acquired on: the site's, or (randomised) its own,
    from a stream of its own so the default acquisition draws nothing new."""
    if cfg.acquisition == "site":
        return site.scanner
    return random_scanner(_rng(cfg.seed, site.index, _SUBJECT, k, _ACQUISITION))


def subject_roles(cfg: PhantomConfig, site: Site) -> list[str]:
    """What each subject of `site` holds (`HELD_OUT`, `PAIRED` or one modality), drawn from
    the site's own stream: the held-out subjects are the same whatever the paired fraction
    and misalignment, and a smaller paired fraction pairs a subset of a larger one's. Without
    `cfg.splits_subjects` every subject is `PAIRED` (every contrast; no motion to draw)."""
    n = site.subjects
    if not cfg.splits_subjects:
        return [PAIRED] * n
    rng = _rng(cfg.seed, site.index, _ROLES)
    order = rng.permutation(n).tolist()
    held = held_out_count(n, cfg.held_out_share)
    train = order[held:]
    paired = round(cfg.paired_fractions[site.index] * len(train))
    first = int(rng.integers(len(cfg.modalities)))
    roles = dict.fromkeys(order[:held], HELD_OUT) | dict.fromkeys(train[:paired], PAIRED)
    for j, k in enumerate(train[paired:]):  # one contrast each, balanced
        roles[k] = cfg.modalities[(first + j) % len(cfg.modalities)]
    return [roles[k] for k in range(n)]


def contrast_motion(
    cfg: PhantomConfig, site: Site, k: int, modality: str, shape: tuple[int, ...]
) -> Motion | None:
    """The motion of `modality` of paired subject `k` (None for the reference contrast, or
    without misalignment), from a stream of its own."""
    if not cfg.misalignment.moves or modality == cfg.modalities[0]:
        return None
    key = (_SUBJECT, k, _MOTION, PHANTOM_MODALITIES.index(modality))
    rng = _rng(cfg.seed, site.index, *key)
    return random_motion(shape, float(cfg.resolution), cfg.misalignment, rng)


def simulate_subject(
    cfg: PhantomConfig, site: Site, k: int, role: str = PAIRED
) -> SimulatedSubject:
    """Subject `k` of `site`: warped anatomy, optional lesion, bias, contrasts, Rician noise;
    the contrasts its `role` holds, those of a `PAIRED` subject misaligned (`cfg.misalign`)."""
    anatomy = load_anatomy(cfg.resolution)
    scanner = subject_scanner(cfg, site, k)
    rng = _rng(cfg.seed, site.index, _SUBJECT, k, _WARP)
    n_brain = len(anatomy.fractions)
    if cfg.heads:
        both = np.concatenate([anatomy.fractions, head_fractions(cfg.resolution)])
        warped = warp_fractions(anatomy, rng, both)
        fractions, head = warped[:n_brain], warped[n_brain:]
    else:
        fractions = warp_fractions(anatomy, rng)
    bias = bias_field(fractions.shape[1:], scanner.bias_amplitude, anatomy.voxel_mm, rng)
    if has_lesion(cfg, site, k):
        lesion_rng = _rng(cfg.seed, site.index, _SUBJECT, k, _LESION)
        fractions = add_lesion(fractions, anatomy.voxel_mm, lesion_rng)
    brain = fractions.sum(axis=0) > 0.5
    labels = np.where(brain, fractions.argmax(axis=0) + 1, 0).astype(np.uint8)
    if cfg.heads:
        lesion_slots = np.zeros((len(TISSUES) - len(head) - len(fractions), *brain.shape))
        in_head = ~brain & (head.sum(axis=0) > 0.5)
        labels[in_head] = (head.argmax(axis=0) + len(TISSUES) - len(head) + 1)[in_head]
        fractions = np.concatenate([fractions, lesion_slots.astype(np.float32), head])
    images = {}
    held = cfg.modalities if role in (HELD_OUT, PAIRED) else (role,)
    for m in held:  # one noise stream per modality: adding one leaves the others
        noise_rng = _rng(cfg.seed, site.index, _SUBJECT, k, _NOISE + PHANTOM_MODALITIES.index(m))
        motion = contrast_motion(cfg, site, k, m, brain.shape) if role == PAIRED else None
        images[m] = acquire(fractions, bias, scanner, m, noise_rng, motion)
    return SimulatedSubject(site.subject_number(k), images, brain.astype(np.uint8), labels)


def has_lesion(cfg: PhantomConfig, site: Site, k: int) -> bool:
    """Whether subject `k` of `site` gets a lesion (a draw of its own when lesion_fraction < 1)."""
    if not cfg.lesions or cfg.lesion_fraction <= 0.0:
        return False
    if cfg.lesion_fraction >= 1.0:
        return True
    draw = _rng(cfg.seed, site.index, _SUBJECT, k, _HAS_LESION).random()
    return bool(draw < cfg.lesion_fraction)


def t1_template_correlation(resolution: int) -> float:
    """Pearson r, inside the brain, between the reference T1w of the unwarped anatomy and
    the real MNI T1 template: checks that the tissue model reproduces real T1 contrast."""
    anatomy = load_anatomy(resolution)
    simulated = render(
        anatomy.fractions, REFERENCE_SEQUENCES["T1"], DEFAULT_SCANNERS[0].field_strength
    )
    mask = anatomy.mask
    return float(np.corrcoef(simulated[mask], anatomy.template[mask])[0, 1])


# --- output ----------------------------------------------------------------------------------


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    return img


def write_simulated(
    subject: SimulatedSubject, root: Path, site: Site, layout: str, affine: np.ndarray
) -> list[Path]:
    """Write one subject under `root` with the layout writers the loaders read back."""
    return write_subject(
        root=root,
        layout=layout,
        site=site.name,
        subject=subject.number,
        images={m: _nifti(img, affine) for m, img in subject.images.items()},
        mask=_nifti(subject.mask, affine),
        labels=_nifti(subject.labels, affine),
    )


def _preview(subject: SimulatedSubject) -> Preview:
    """Mid-axial slices, or the axial slice through the tumour core when there is one."""
    tumour_per_slice = (subject.labels == TUMOUR_LABEL).sum(axis=(0, 1))
    z = int(tumour_per_slice.argmax()) if tumour_per_slice.any() else subject.labels.shape[2] // 2
    # Copies, so the full volumes can be freed; transposed so anterior is up in imshow.
    return subject.number, {m: img[:, :, z].T.copy() for m, img in subject.images.items()}


def save_montage(
    site: Site, rows: list[Preview], path: Path, modalities: tuple[str, ...]
) -> None:
    """One axial slice per subject (rows) and modality (columns), titled with the protocol;
    a contrast a subject does not have is left blank."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(2.2 * len(modalities), 2.4 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(modalities), squeeze=False)
    s = site.scanner
    fig.suptitle(
        f"{site.name}: {s.field_strength:g} T, noise σ {s.noise_sigma:.3f}, "
        f"bias ±{s.bias_amplitude:.2f}, {site.subjects} subjects"
    )
    for r, (number, slices) in enumerate(rows):
        for c, modality in enumerate(modalities):
            ax = axes[r, c]
            img = slices.get(modality)
            if img is not None:
                vmax = np.percentile(img, 99.5)
                ax.imshow(img, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                seq = site.sequences[modality]
                timing = f"TR {seq.tr:.0f} TE {seq.te:.0f}"
                timing += f" TI {seq.ti:.0f}" if seq.ti is not None else ""
                ax.set_title(f"{modality} ({seq.kind})\n{timing}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"subject {number}", fontsize=8)
    fig.savefig(path, dpi=80)


def _publish(staging: Path, out: Path, sites: list[Site], meta: dict) -> None:
    """Move finished site folders and montages into `out`, then write dataset.json last, so a
    crash never leaves a dataset.json describing files that are not there."""
    (out / SITES_FILE).unlink(missing_ok=True)
    for site in sites:
        for name in (site.name, f"montage_{site.name}.png"):
            dest = out / name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(staging / name, dest)
    tmp = out / f".{SITES_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / SITES_FILE)
    staging.rmdir()


def _simulate_and_write(
    cfg: PhantomConfig, sites: list[Site], root: Path, affine: np.ndarray, progress: bool
) -> dict[str, list[Preview]]:
    """Simulate and write every subject in order; return the montage slices per site.

    Files are written by one background thread while the next subject is simulated (gzip
    releases the GIL, so the two overlap on 2 cores); one writer keeps the order of appended
    index files (participants.tsv, manifest.csv) deterministic.
    """
    from rich.progress import track

    roles = {site.name: subject_roles(cfg, site) for site in sites}
    jobs = [(site, k) for site in sites for k in range(site.subjects)]
    previews: dict[str, list[Preview]] = {site.name: [] for site in sites}
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: deque[Future] = deque()
        for site, k in track(jobs, description="Simulating subjects", disable=not progress):
            subject = simulate_subject(cfg, site, k, roles[site.name][k])
            pending.append(
                writer.submit(write_simulated, subject, root / site.name, site, cfg.layout, affine)
            )
            if len(pending) > 1:  # at most one subject waiting: bounded memory, early errors
                pending.popleft().result()
            if k < MONTAGE_ROWS:
                previews[site.name].append(_preview(subject))
        for job in pending:
            job.result()
    return previews


def generate_phantom(cfg: PhantomConfig, out: Path, progress: bool = True) -> dict:
    """Simulate every site's subjects, write them under `out/<site>/` in `cfg.layout` with a
    montage per site, and return the dataset.json content (also written to `out`).

    Site folders and montages of the same name in `out` are replaced; nothing else is touched.
    """
    out = Path(out)
    sites = make_sites(cfg)
    anatomy = load_anatomy(cfg.resolution)
    staging = out / ".phantom-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    previews = _simulate_and_write(cfg, sites, staging, anatomy.affine, progress)
    for site in sites:
        save_montage(
            site, previews[site.name], staging / f"montage_{site.name}.png", cfg.modalities
        )
    meta = {
        "name": out.resolve().name,
        "generator": GENERATOR,
        "seed": cfg.seed,
        "resolution_mm": cfg.resolution,
        "layout": cfg.layout,
        "modalities": list(cfg.modalities),
        "lesions": cfg.lesions,
        "acquisition": cfg.acquisition,
        "scanners": cfg.scanners,
        "lesion_fraction": cfg.lesion_fraction,
        "heads": cfg.heads,
        "labels": {str(k): v for k, v in (LABELS | (HEAD_LABELS if cfg.heads else {})).items()},
        "sites": [site.describe(cfg.modalities) | _site_roles(cfg, site) for site in sites],
        **({"randomised_ranges": RANDOM_RANGES} if cfg.acquisition == "randomised" else {}),
        **_pairing_meta(cfg),
        "t1_template_correlation": round(t1_template_correlation(cfg.resolution), 4),
    }
    _publish(staging, out, sites, meta)
    return meta


def _pairing_meta(cfg: PhantomConfig) -> dict:
    """dataset.json's record of the paired fraction and misalignment (only when set, so a
    phantom without them describes itself exactly as before they existed)."""
    if not cfg.splits_subjects:
        return {}
    return {
        "paired_fraction": list(cfg.paired_fractions),
        "misalign_mm_deg": list(cfg.misalign),
        "held_out_fraction": cfg.held_out_share,
        "reference_modality": cfg.modalities[0],
    }


def _site_roles(cfg: PhantomConfig, site: Site) -> dict:
    """A site's subjects by role, by the ids its layout gives them: `held_out` (what the data
    layer tests and validates on), `paired`, and `single` (id -> its one contrast)."""
    if not cfg.splits_subjects:
        return {}
    spell = get_layout(cfg.layout).subject_id
    ids = [spell(site.name, site.subject_number(k)) for k in range(site.subjects)]
    roles = subject_roles(cfg, site)
    return {
        HELD_OUT_KEY: [i for i, r in zip(ids, roles, strict=True) if r == HELD_OUT],
        "paired": [i for i, r in zip(ids, roles, strict=True) if r == PAIRED],
        "single": {i: r for i, r in zip(ids, roles, strict=True) if r not in (HELD_OUT, PAIRED)},
    }
