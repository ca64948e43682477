"""Synthetic volumes as a BIDS derivative dataset, so that no one mistakes them for acquired
ones (BIDS Derivatives: `dataset_description.json` with `DatasetType: "derivative"`,
`GeneratedBy`, `SourceDatasets`; a `desc-` entity; provenance in the sidecar).

    OUT/dataset_description.json    GeneratedBy: fedsynth's version and the model's digest
    OUT/README                      what the files are, "not for diagnosis"
    OUT/sub-01/anat/sub-01_desc-fromT1w_T2w.nii.gz   synthetic T2w made from the T1w
    OUT/sub-01/anat/sub-01_desc-fromT1w_T2w.json     model and card digests, source file,
                                                     ε per site, δ, unit, "not for diagnosis"

Every file of one call is written into a staging folder next to OUT first and moved in only
when all of them succeeded: a bad input leaves OUT as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsynth import __version__
from fedsynth.atomic import atomic_write_bytes
from fedsynth.data.layouts import DatasetError, load_dataset, normalise_modality
from fedsynth.evaluation.translate import check_direction, translate_volume
from fedsynth.export.provenance import NOT_FOR_DIAGNOSIS, Provenance, provenance
from fedsynth.models.checkpoint import CheckpointError, load_checkpoint

BIDS_VERSION = "1.10.0"
SUFFIX = {"T1": "T1w", "T2": "T2w", "PD": "PDw", "FLAIR": "FLAIR", "T1CE": "T1w"}
"""BIDS suffix of each modality (T1CE is a T1w with a `ce-` entity)."""
KEPT_ENTITIES = ("sub", "ses", "acq", "run")
"""Entities of the source name the derivative keeps: they identify the session and volume;
the others describe the source's acquisition, not the synthetic image's."""
_ENTITY = re.compile(r"^([a-z]+)-([A-Za-z0-9]+)$")
RAW = "raw"
"""Name of the source dataset in `DatasetLinks` (`bids:raw:...` URIs in the sidecars)."""


@dataclass(frozen=True)
class Job:
    """One volume to synthesise: the file, its modality, its brain mask, its subject label
    and (when it sits in a BIDS dataset) its path relative to that dataset's root."""

    path: Path
    source: str
    mask: Path | None = None
    subject: str | None = None
    relative: str | None = None


def entities(path: Path, subject: str | None = None) -> dict[str, str]:
    """The kept entities of a BIDS file name (`sub-01_ses-2_T1w.nii.gz` -> sub, ses);
    `subject` names a file that has no `sub-` entity."""
    stem = path.name.split(".")[0]
    found = {}
    for part in stem.split("_")[:-1]:
        m = _ENTITY.match(part)
        if m and m.group(1) in KEPT_ENTITIES:
            found[m.group(1)] = m.group(2)
    if subject is not None:
        if not re.fullmatch(r"[A-Za-z0-9]+", subject):
            raise ValueError(f"subject label {subject!r}: BIDS labels are letters and digits")
        found["sub"] = subject
    if "sub" not in found:
        raise DatasetError(
            f"{path}: no sub-<label> entity in the file name, so it has no place in a BIDS "
            "derivative; rename it (sub-01_T1w.nii.gz) or pass --bids-subject"
        )
    return {k: found[k] for k in KEPT_ENTITIES if k in found}


def derivative_stem(job: Job, target: str) -> Path:
    """sub-X[/ses-Y]/anat/sub-X[_ses-Y]..._[ce-gd_]desc-from<SourceSuffix>_<TargetSuffix>."""
    ents = entities(job.path, job.subject)
    if target == "T1CE":
        ents["ce"] = "gd"
    ents["desc"] = "from" + SUFFIX[job.source] + ("ce" if job.source == "T1CE" else "")
    order = [k for k in (*KEPT_ENTITIES[:3], "ce", "run", "desc") if k in ents]
    name = "_".join(f"{k}-{ents[k]}" for k in order) + f"_{SUFFIX[target]}"
    folder = Path(f"sub-{ents['sub']}") / (f"ses-{ents['ses']}" if "ses" in ents else "")
    return folder / "anat" / name


def dataset_root(path: Path) -> Path | None:
    """The BIDS dataset `path` lies in (the nearest folder up with a
    dataset_description.json), if any."""
    for parent in Path(path).resolve().parents:
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def description(prov: Provenance, sources: Sequence[Path]) -> dict[str, Any]:
    """dataset_description.json of the derivative dataset."""
    doc: dict[str, Any] = {
        "Name": "fedsynth synthetic MR contrasts (" + NOT_FOR_DIAGNOSIS + ")",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by(prov)],
        "SourceDatasets": [{"URL": Path(s).resolve().as_uri()} for s in sources],
    }
    bids_sources = [s for s in sources if (Path(s) / "dataset_description.json").is_file()]
    if len(bids_sources) == 1:
        doc["DatasetLinks"] = {RAW: Path(bids_sources[0]).resolve().as_uri()}
    return doc


def generated_by(prov: Provenance) -> dict[str, str]:
    return {
        "Name": "fedsynth",
        "Version": __version__,
        "Description": (
            f"cross-modality synthesis with model {prov.digest} ({prov.name}; model card "
            f"{prov.card_digest}); {NOT_FOR_DIAGNOSIS}"
        ),
    }


def merged_description(existing: Path, new: dict[str, Any]) -> dict[str, Any]:
    """`new` merged into an existing derivative's description (one more model, one more source
    dataset); a raw dataset or a derivative of other tools is refused."""
    try:
        old = json.loads(existing.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{existing}: cannot read ({err})") from err
    if old.get("DatasetType") != "derivative":
        raise DatasetError(
            f"{existing}: DatasetType is {old.get('DatasetType', 'raw')!r}, not 'derivative': "
            "write synthetic images into their own derivative folder, not a raw dataset"
        )
    names = {g.get("Name") for g in old.get("GeneratedBy", [])}
    if names != {"fedsynth"}:
        raise DatasetError(f"{existing}: a derivative of {sorted(map(str, names))}, not fedsynth's")
    merged = dict(old)
    for key in ("GeneratedBy", "SourceDatasets"):
        merged[key] = list(old.get(key, [])) + [v for v in new[key] if v not in old.get(key, [])]
    links = dict(old.get("DatasetLinks", {}))
    raw = new.get("DatasetLinks", {}).get(RAW)
    if raw is not None and links.get(RAW, raw) == raw:
        links[RAW] = raw
    if links:
        merged["DatasetLinks"] = links
    return merged


def sidecar(prov: Provenance, job: Job, target: str, raw_link: bool) -> dict[str, Any]:
    """The synthetic volume's JSON sidecar: what it is, what it was made from, by which
    weights, under what privacy."""
    doc: dict[str, Any] = {
        "Description": (
            f"Synthetic {SUFFIX[target]} computed by fedsynth from {job.path.name} "
            f"({SUFFIX[job.source]}); {NOT_FOR_DIAGNOSIS}"
        ),
        "Synthetic": True,
        "ClinicalUse": NOT_FOR_DIAGNOSIS,
        "SourceFile": str(job.path.resolve()),
        "SourceModality": job.source,
        "SynthesisedModality": target,
        "BrainMask": str(job.mask.resolve()) if job.mask else None,
        "SkullStripped": job.mask is not None,
        "IntensityScale": "[0, 1]: the model's [-1, 1] mapped linearly; 0 outside the foreground",
        "ModelName": prov.name,
        "ModelDigest": prov.digest,
        "ModelCardDigest": prov.card_digest,
        "PrivacyEpsilon": prov.epsilon,
        "PrivacyDelta": prov.delta,
        "PrivacyUnit": prov.unit,
        "PrivateDataUsed": prov.private,
        "GeneratedBy": f"fedsynth {__version__}",
    }
    if raw_link and job.relative:
        doc["Sources"] = [f"bids:{RAW}:{job.relative}"]
    return doc


def header_description(job: Job, target: str) -> str:
    """The NIfTI header's description (80 bytes at most)."""
    return f"synthetic {SUFFIX[target]} from {SUFFIX[job.source]} (fedsynth); not for diagnosis"


def bids_jobs(root: Path, source: str | None, target: str, modalities: Sequence[str]) -> list[Job]:
    """Every volume of the BIDS dataset at `root` to synthesise `target` from: those of
    `source`, or (no source) of every modality the model knows other than the target."""
    dataset = load_dataset(root, layout="bids")
    wanted = [source] if source else [m for m in modalities if m != target]
    jobs = []
    for record in dataset.subjects:
        for modality, path in sorted(record.images.items()):
            if modality in wanted:
                rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
                jobs.append(Job(Path(path), modality, record.mask, None, rel))
    if not jobs:
        raise DatasetError(
            f"{root}: no {'/'.join(wanted)} volume in this BIDS dataset to synthesise {target} from"
        )
    return jobs


def write_derivatives(
    checkpoint: Path,
    inputs: Path,
    target: str,
    out: Path,
    source: str | None = None,
    mask: Path | None = None,
    subject: str | None = None,
    image_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Synthesise `target` from `inputs` (one NIfTI, or a BIDS dataset folder: every source
    volume in it) into the derivative dataset `out`; returns the NIfTI files written."""
    inputs, out = Path(inputs), Path(out)
    model = load_checkpoint(checkpoint).model
    if inputs.is_dir():
        if mask is not None or subject is not None:
            raise ValueError(f"{inputs}: --mask and --bids-subject name one file, not a dataset")
        target = normalise_modality(target)
        if target not in model.config.modalities:
            known = "/".join(model.config.modalities)
            raise CheckpointError(f"{checkpoint}: cannot synthesise {target}; it knows {known}")
        source = normalise_modality(source, inputs) if source else None
        jobs = bids_jobs(inputs, source, target, model.config.modalities)
        source_root: Path = inputs
    else:
        src, target = check_direction(checkpoint, model, inputs, target, source)
        root = dataset_root(inputs)
        rel = Path(inputs).resolve().relative_to(root).as_posix() if root else None
        jobs = [Job(inputs, src, mask, subject, rel)]
        source_root = root or inputs.resolve().parent
    for job in jobs:
        check_direction(checkpoint, model, job.path, target, job.source)
    prov = provenance(checkpoint)
    doc = description(prov, [source_root])
    existing = out / "dataset_description.json"
    if existing.is_file():
        doc = merged_description(existing, doc)
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not a BIDS derivative dataset")
    raw_link = doc.get("DatasetLinks", {}).get(RAW) == source_root.resolve().as_uri()
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written = []
        for job in jobs:
            stem = derivative_stem(job, target)
            nifti = staging / stem.with_name(stem.name + ".nii.gz")
            translate_volume(
                checkpoint,
                job.path,
                target,
                nifti,
                source=job.source,
                image_size=image_size,
                progress=progress,
                mask_path=job.mask,
                description=header_description(job, target),
            )
            side = json.dumps(sidecar(prov, job, target, raw_link), indent=2) + "\n"
            atomic_write_bytes(nifti.with_name(stem.name + ".json"), side.encode())
            written.append(stem.with_name(stem.name + ".nii.gz"))
        atomic_write_bytes(
            staging / "dataset_description.json", (json.dumps(doc, indent=2) + "\n").encode()
        )
        if not (out / "README").is_file():
            atomic_write_bytes(staging / "README", _readme(prov).encode())
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / w for w in written]


def _move_into(staging: Path, out: Path) -> None:
    """Every staged file to its place under `out` (each an atomic rename)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = out / path.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)


def _readme(prov: Provenance) -> str:
    return (
        "# Synthetic MR contrasts — not for diagnosis\n\n"
        "Every image in this derivative dataset was computed by fedsynth "
        f"({__version__}) from another contrast of the same session; none was acquired. "
        "Distribution-matching translators can add or remove pathology (Cohen et al., MICCAI "
        "2018): do not use these images for diagnosis.\n\n"
        f"Model: {prov.name} ({prov.digest}); each sidecar names its source file, the model "
        "card's digest and the privacy budget (ε per site, δ, privacy unit).\n"
    )
