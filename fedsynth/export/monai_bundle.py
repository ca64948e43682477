"""`fedsynth export --format monai-bundle`: a checkpoint as a MONAI bundle, so a hospital
runs the generator where its imaging AI already runs (MONAI Bundle specification):

    configs/metadata.json    network_data_format (MR, one channel, the contrast it means,
                             spatial shape, value range), the model card's data, steps,
                             ε per site, δ and privacy unit, digests
    configs/inference.json   MONAI's LoadImaged/Orientationd -> fedsynth's preprocessing
                             (`bundle_runtime`) -> SliceInferer over axial slices ->
                             back to the volume -> Invertd -> SaveImaged (NIfTI)
    models/model.pt          the generator's state dict
    models/model.ts          TorchScript, where the network traces (verified against eager)
    docs/README.md, docs/model_card.json, LICENSE

Run: `python -m monai.bundle run --config_file configs/inference.json --meta_file
configs/metadata.json --bundle_root OUT --dataset_dir IN --output_dir OUT_DIR`. The bundle
needs fedsynth installed (its network and preprocessing are fedsynth's). Written into a
staging folder and renamed into place: a failed export leaves nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsynth import __version__
from fedsynth.atomic import atomic_write_bytes
from fedsynth.evaluation.translate import check_direction
from fedsynth.export.bundle_runtime import BundleGenerator
from fedsynth.export.provenance import NOT_FOR_DIAGNOSIS, provenance
from fedsynth.flat import flatten
from fedsynth.models.checkpoint import MODEL, PREPROCESS, load_checkpoint

log = logging.getLogger(__name__)

RUNTIME = "fedsynth.export.bundle_runtime"
META_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
    "0.8.1/meta_schema_20240725.json"
)
SW_BATCH = 8


def _json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def inference_config(
    model: dict[str, Any], pre: dict[str, Any], source: str, target: str, size: int
) -> dict[str, Any]:
    """inference.json: MONAI's loader, orientation, inferer, inverse and saver around
    fedsynth's preprocessing; every path and the direction are overridable at `run`."""
    return {
        "imports": ["$import glob", "$import os", f"$import {RUNTIME}"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/output'",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "source": source,
        "target": target,
        "model_config": model,
        "preprocess_config": pre,
        "network_def": {
            "_target_": f"{RUNTIME}.BundleGenerator",
            "model": "@model_config",
            "source": "@source",
            "target": "@target",
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {
                    "_target_": "Orientationd",
                    "keys": "image",
                    "axcodes": "RAS",
                    "labels": [["L", "R"], ["P", "A"], ["I", "S"]],  # nibabel's, as fedsynth
                },
                {
                    "_target_": f"{RUNTIME}.FedsynthSlicesd",
                    "keys": "image",
                    "source": "@source",
                    "preprocess": "@preprocess_config",
                },
            ],
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SliceInferer",
            "spatial_dim": 2,
            "roi_size": [size, size],
            "sw_batch_size": SW_BATCH,
            "progress": False,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": f"{RUNTIME}.FedsynthVolumed",
                    "keys": "pred",
                    "ref_key": "image",
                    "preprocess": "@preprocess_config",
                },
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "$'synthetic' + @target",
                    "separate_folder": False,
                    "resample": False,
                    "output_dtype": "$np.float32",
                    "print_log": False,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
                "strict": True,
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', False)"],
        "run": ["$@evaluator.run()"],
    }


def _channel(modality: str, size: int) -> dict[str, Any]:
    return {
        "type": "image",
        "format": "magnitude",
        "modality": "MR",
        "num_channels": 1,
        "spatial_shape": [size, size],
        "dtype": "float32",
        "value_range": [-1, 1],
        "is_patch_data": False,
        "channel_def": {"0": modality},
    }


def metadata(
    prov_doc: dict[str, Any],
    card: dict[str, Any],
    source: str,
    target: str,
    size: int,
    pre: dict[str, Any],
    torchscript: dict[str, Any],
) -> dict[str, Any]:
    """metadata.json: the MONAI fields, the model card's data/steps/privacy, fedsynth's."""
    data, training = card.get("data", {}), card.get("training", {})
    return {
        "schema": META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by fedsynth {__version__} from {prov_doc['model']}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "fedsynth": __version__,
            "nibabel": _version("nibabel"),
            "fire": _version("fire"),
        },
        "supported_apps": {},
        "name": f"fedsynth {source} to {target} MR synthesis",
        "task": f"Cross-modality MR synthesis, {source} to {target}, slice by slice (axial)",
        "description": (
            f"Synthesises a {target} volume from a {source} volume with a fedsynth generator "
            f"({prov_doc['model']}). {NOT_FOR_DIAGNOSIS}."
        ),
        "authors": "fedsynth",
        "copyright": "fedsynth contributors, Apache-2.0",
        "data_source": json.dumps(data, sort_keys=True) if data else "unknown",
        "data_type": "nifti",
        "image_classes": (
            f"one channel: the {source} contrast, per volume scaled by fedsynth's "
            "preprocessing to [-1, 1] (background -1)"
        ),
        "pred_classes": f"one channel: synthetic {target} in [-1, 1]; saved in [0, 1]",
        "eval_metrics": card.get("public_validation", {}).get("mean", {}),
        "intended_use": f"Research only. {NOT_FOR_DIAGNOSIS}.",
        "references": [
            "Zhu et al., Unpaired image-to-image translation using cycle-consistent "
            "adversarial networks, ICCV 2017",
            "Dai et al., Multimodal MRI synthesis using unified generative adversarial "
            "networks, Medical Physics 2020",
            "Cohen et al., Distribution matching losses can hallucinate features in medical "
            "image translation, MICCAI 2018",
        ],
        "network_data_format": {
            "inputs": {"image": _channel(source, size)},
            "outputs": {"pred": _channel(target, size)},
        },
        "model_card": {
            "data": data,
            "steps": training.get("steps", training.get("steps_per_site")),
            "training": training,
            "privacy": {
                "epsilon_per_site": prov_doc["epsilon_per_site"],
                "delta": prov_doc["delta"],
                "unit": prov_doc["unit"],
                "private_data_used": prov_doc["private_data_used"],
            },
        },
        "fedsynth": {**prov_doc, "preprocessing": pre, "torchscript": torchscript},
    }


def _trace(net: BundleGenerator, size: int, path: Path) -> dict[str, Any]:
    """TorchScript of `net` where it traces: traced at batch 1, checked against the eager
    network on fresh inputs at batch 1 and SW_BATCH (`batch_sizes` says which hold)."""
    from monai.data import save_net_with_metadata

    gen = torch.Generator().manual_seed(0)

    def sample(n: int) -> torch.Tensor:
        return torch.rand(n, 1, size, size, generator=gen) * 2 - 1

    try:
        with torch.no_grad():
            traced = torch.jit.trace(net, sample(1), check_trace=False)
            batches = []
            for n in (1, SW_BATCH):
                x = sample(n)
                try:
                    ok = torch.allclose(traced(x), net(x), atol=1e-5)
                except RuntimeError:
                    ok = False
                if ok:
                    batches.append(n)
    except Exception as err:  # noqa: BLE001 — any trace failure means: no TorchScript
        return {"file": None, "reason": f"does not trace: {type(err).__name__}: {err}"}
    if 1 not in batches:
        return {"file": None, "reason": "the traced network differs from the eager one"}
    save_net_with_metadata(traced, str(path.with_suffix("")), meta_values={"fedsynth": __version__})
    return {
        "file": "models/model.ts",
        "batch_sizes": "any" if SW_BATCH in batches else "1 (set the inferer's sw_batch_size 1)",
    }


def export_monai_bundle(
    checkpoint: Path, out: Path, source: str | None = None, target: str | None = None
) -> Path:
    """Write the bundle of `checkpoint` (direction `source` -> `target`, default the model's
    configured one) to `out`, which must not exist yet (or be empty)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new bundle folder")
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model
    source, target = check_direction(
        checkpoint, model, None, target or model.config.target, source or model.config.source
    )
    size = ckpt.preprocess.image_size
    model_flat = flatten(model.config, MODEL)
    pre_flat = flatten(ckpt.preprocess, PREPROCESS)
    net = BundleGenerator(model_flat, source, target)
    net.model.load_state_dict(model.state_dict(), strict=True)
    net.eval()
    prov = provenance(checkpoint)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for folder in ("configs", "models", "docs"):
            (staging / folder).mkdir(parents=True)
        torch.save(net.state_dict(), staging / "models" / "model.pt")
        torchscript = _trace(net, size, staging / "models" / "model.ts")
        if torchscript["file"] is None:
            log.warning("%s: no TorchScript (%s)", checkpoint, torchscript["reason"])
        _json(
            staging / "configs" / "inference.json",
            inference_config(model_flat, pre_flat, source, target, size),
        )
        meta = metadata(prov.summary(), prov.card, source, target, size, pre_flat, torchscript)
        _json(staging / "configs" / "metadata.json", meta)
        _json(staging / "docs" / "model_card.json", prov.card)
        atomic_write_bytes(staging / "docs" / "README.md", _readme(meta, source, target).encode())
        atomic_write_bytes(
            staging / "LICENSE",
            b"Apache License 2.0 (the fedsynth code). The weights: see docs/model_card.json.\n",
        )
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _readme(meta: dict[str, Any], source: str, target: str) -> str:
    privacy = meta["model_card"]["privacy"]
    return f"""# {meta["name"]}

**{NOT_FOR_DIAGNOSIS}.** Distribution-matching translators can add or remove pathology
(Cohen et al., MICCAI 2018); use the output for research, never for a diagnosis.

{meta["description"]}

## Run

```bash
pip install fedsynth=={__version__} fire
python -m monai.bundle run --config_file configs/inference.json \\
    --meta_file configs/metadata.json --bundle_root . \\
    --dataset_dir /path/to/{source}_volumes --output_dir /path/to/output
```

Every `*.nii*` file in `dataset_dir` is read as a {source} volume and written to
`output_dir` as `<name>_synthetic{target}.nii.gz`: same shape and affine, float32 in [0, 1],
0 outside the foreground. The steps: MONAI `LoadImaged`, `EnsureChannelFirstd`,
`Orientationd(RAS)`; fedsynth's preprocessing (validation, foreground, per-volume intensity
scaling, crop, pad and resize to {meta["network_data_format"]["inputs"]["image"]["spatial_shape"]});
MONAI `SliceInferer` over axial slices; back to the volume; `Invertd`; `SaveImaged`.
`--target` / `--source` pick another direction the model serves.

## Model card

- model: {meta["fedsynth"]["model"]} (`{meta["fedsynth"]["model_digest"]}`, card
  `{meta["fedsynth"]["model_card_digest"]}`; full card in `docs/model_card.json`)
- steps: {meta["model_card"]["steps"]}
- privacy: ε per site {json.dumps(privacy["epsilon_per_site"])}, δ {privacy["delta"]},
  unit {privacy["unit"]}
- TorchScript: {json.dumps(meta["fedsynth"]["torchscript"])}
"""
