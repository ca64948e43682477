"""The on-disk slice cache: volumes are preprocessed once, epochs read memory-mapped arrays.

A cache directory is named by a hash of its inputs (every file's path, size and mtime) and
of the preprocessing parameters, so changing either builds a new one and an unchanged
dataset reuses the old one across epochs, runs and processes. It is built in a temporary
directory and renamed into place only when complete: a failed build leaves nothing behind.

Files: `images.f32` (N, H, W) float32, `masks.u8` (N, H, W), `labels.u8` (N, H, W; 0 for
subjects without a label file), `index.npz` (site, subject, uid = site/subject, modality,
position, labelled, voxel_ml per row) and `meta.json` (parameters, inputs, counts, the uids
the dataset holds out from training, and in lenient mode the skipped files and subjects with
their reasons).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress

from fedsynth.data.config import PreprocessConfig
from fedsynth.data.layouts import Dataset, DatasetError
from fedsynth.data.preprocess import preprocess_subject
from fedsynth.data.slices import SliceSet
from fedsynth.data.validation import BadInputPolicy

# 2: foreground threshold measured from each volume's minimum (signed data); no-slice subjects
# are errors. 3: label maps and pixel volumes.
CACHE_VERSION = 3


def default_cache_dir() -> Path:
    """`$FEDSYNTH_CACHE`, else `~/.cache/fedsynth/slices`."""
    env = os.environ.get("FEDSYNTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedsynth" / "slices"


def cache_key(dataset: Dataset, cfg: PreprocessConfig, lenient: bool) -> str:
    """Hash of the inputs (paths, sizes, mtimes; files the layout skipped; held-out subjects,
    when the dataset names any) and of every preprocessing parameter."""
    files = []
    for rec in dataset.subjects:
        for path in rec.files():
            st = path.stat()
            files.append([rec.site, rec.subject, str(path.resolve()), st.st_size, st.st_mtime_ns])
    doc = {
        "version": CACHE_VERSION,
        "params": dataclasses.asdict(cfg),
        "lenient": lenient,
        "files": sorted(files),
        "skipped": sorted(s.get("file", "") for s in dataset.skipped),
    }
    if dataset.held_out:  # only then: the keys of datasets without any stay as they were
        doc["held_out"] = sorted(dataset.held_out)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


class SliceCache:
    """A finished cache directory, memory-mapped read-only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        n, size = self.meta["num_slices"], self.meta["params"]["image_size"]
        shape = (n, size, size)
        self.images = np.memmap(self.path / "images.f32", np.float32, "r", shape=shape)
        self.masks = np.memmap(self.path / "masks.u8", np.uint8, "r", shape=shape)
        self.labels = np.memmap(self.path / "labels.u8", np.uint8, "r", shape=shape)
        with np.load(self.path / "index.npz") as idx:
            self.index = {k: idx[k] for k in idx.files}

    def __len__(self) -> int:
        return int(self.meta["num_slices"])

    @property
    def sites(self) -> list[str]:
        return sorted(set(self.index["site"].tolist()))

    @property
    def held_out(self) -> frozenset[str]:
        """uids the dataset holds out from training (`Dataset.held_out`)."""
        return frozenset(self.meta.get("held_out", ()))

    def subjects(self, site: str | None = None) -> dict[str, set[str]]:
        """uid -> modalities present, optionally for one site."""
        out: dict[str, set[str]] = {}
        rows = np.ones(len(self), bool) if site is None else self.index["site"] == site
        for uid, mod in zip(self.index["uid"][rows], self.index["modality"][rows], strict=True):
            out.setdefault(str(uid), set()).add(str(mod))
        return out

    def rows(self, modality: str, uids: Sequence[str]) -> np.ndarray:
        """Rows of `modality` for `uids`, ordered by (uid, position)."""
        sel = (self.index["modality"] == modality) & np.isin(self.index["uid"], list(uids))
        rows = np.flatnonzero(sel)
        order = np.lexsort((self.index["position"][rows], self.index["uid"][rows]))
        return rows[order]

    def slice_set(self, modality: str, uids: Sequence[str]) -> SliceSet:
        """The slices of `modality` for `uids`, read into memory."""
        return self._take(modality, self.rows(modality, uids))

    def paired(self, modalities: Sequence[str], uids: Sequence[str]) -> dict[str, SliceSet]:
        """Row-aligned slices: row i of every modality is the same (subject, position)."""
        keyed = []
        for m in modalities:
            rows = self.rows(m, uids)
            keys = [
                (u, int(p))
                for u, p in zip(self.index["uid"][rows], self.index["position"][rows], strict=True)
            ]
            keyed.append(dict(zip(keys, rows, strict=True)))
        common = sorted(set.intersection(*(set(k) for k in keyed)))
        return {
            m: self._take(m, np.array([k[key] for key in common], np.int64))
            for m, k in zip(modalities, keyed, strict=True)
        }

    def _take(self, modality: str, rows: np.ndarray) -> SliceSet:
        labelled = bool(len(rows)) and bool(self.index["labelled"][rows].all())
        return SliceSet(
            modality,
            np.asarray(self.images[rows]),
            np.asarray(self.masks[rows]).astype(bool),
            self.index["uid"][rows].astype(str),
            self.index["position"][rows].astype(np.int64),
            np.asarray(self.labels[rows]) if labelled else None,
            self.index["voxel_ml"][rows].astype(np.float64),
        )


def build_cache(
    dataset: Dataset,
    cfg: PreprocessConfig,
    cache_dir: Path | None = None,
    lenient: bool = False,
    progress: bool = True,
) -> SliceCache:
    """Open the cache for (dataset, cfg), building it first if it does not exist yet.

    Strict mode stops at the first bad subject with its `DatasetError`; lenient mode logs a
    warning per bad subject, skips it and records it in `meta.json["skipped"]` (after the
    files `load_dataset` skipped), with the total in `meta.json["num_skipped"]`.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = root / cache_key(dataset, cfg, lenient)
    if (final / "meta.json").exists():
        return SliceCache(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        _write(tmp, dataset, cfg, lenient, progress)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same cache first
            if not (final / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SliceCache(final)


def _write(
    tmp: Path, dataset: Dataset, cfg: PreprocessConfig, lenient: bool, progress: bool
) -> None:
    columns = ("site", "subject", "uid", "modality", "position", "labelled", "voxel_ml")
    index: dict[str, list] = {k: [] for k in columns}
    policy = BadInputPolicy(lenient, list(dataset.skipped))
    with (
        open(tmp / "images.f32", "wb") as images,
        open(tmp / "masks.u8", "wb") as masks,
        open(tmp / "labels.u8", "wb") as labels,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("Preprocessing volumes", total=len(dataset.subjects))
        for rec in dataset.subjects:
            try:
                subj = preprocess_subject(rec, cfg)
            except DatasetError as err:
                policy.reject(err, site=rec.site, subject=rec.subject)
                bar.advance(task)
                continue
            for modality, slices in subj.images.items():
                images.write(np.ascontiguousarray(slices, np.float32).tobytes())
                masks.write(np.ascontiguousarray(subj.mask, np.uint8).tobytes())
                lab = np.zeros(slices.shape, np.uint8) if subj.labels is None else subj.labels
                labels.write(np.ascontiguousarray(lab, np.uint8).tobytes())
                n = len(slices)
                index["site"] += [rec.site] * n
                index["subject"] += [rec.subject] * n
                index["uid"] += [f"{rec.site}/{rec.subject}"] * n
                index["modality"] += [modality] * n
                index["position"] += subj.positions.tolist()
                index["labelled"] += [subj.labels is not None] * n
                index["voxel_ml"] += [subj.voxel_ml] * n
            bar.advance(task)
    n = len(index["uid"])
    if n == 0:
        raise DatasetError(f"{dataset.root}: no usable slices in any subject")
    for site in dataset.sites:
        if site not in index["site"]:
            raise DatasetError(f"{dataset.root}: site {site!r} has no usable slices")
    np.savez(tmp / "index.npz", **{k: np.asarray(v) for k, v in index.items()})
    meta = {
        "version": CACHE_VERSION,
        "params": dataclasses.asdict(cfg),
        "root": str(dataset.root),
        "layout": dataset.layout,
        "num_slices": n,
        "num_subjects": len({u for u in index["uid"]}),
        "num_skipped": len(policy.skipped),
        "skipped": policy.skipped,
        "held_out": sorted(dataset.held_out),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
