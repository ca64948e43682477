"""`fedsynth export --format monai-bundle`: the bundle runs through MONAI's own bundle runner
(`python -m monai.bundle run`, a separate process) on a phantom volume stored in a non-RAS
voxel order, and its NIfTI equals `fedsynth translate`'s (shape, affine, voxels inside the
brain to 1e-5); MONAI's `verify_net_in_out` checks the network against the metadata; the
TorchScript file agrees with the eager network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from fedsynth.cli import main
from fedsynth.data.config import PreprocessConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.evaluation.translate import translate_volume
from fedsynth.export.bundle_runtime import BundleGenerator
from fedsynth.export.monai_bundle import export_monai_bundle
from fedsynth.models import ModelConfig, build_model
from fedsynth.models.checkpoint import CheckpointError, save_checkpoint

# Axes permuted and flipped (voxel i runs posterior, j left, k superior), off-origin: the
# bundle must undo MONAI's reorientation exactly to land on this grid.
PLS = np.array([[0, -2.0, 0, 25], [-2.0, 0, 0, 30], [0, 0, 2.0, -20], [0, 0, 0, 1]])
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """One phantom subject's T1w, re-stored in PLS voxel order; and its brain mask (as stored)."""
    root = tmp_path_factory.mktemp("phantom")
    config = PhantomConfig(sites=1, subjects_per_site=1, modalities=("T1", "T2"), seed=4)
    generate_phantom(config, root, progress=False)
    anat = next(root.glob("*/sub-*/anat"))
    (t1,) = anat.glob("*_T1w.nii.gz")
    (mask,) = anat.glob("*_desc-brain_mask.nii.gz")
    ras = nib.as_closest_canonical(nib.load(t1))
    data = np.asarray(ras.dataobj, np.float32)
    stored = np.transpose(data, (1, 0, 2))[::-1, ::-1]  # RAS (x, y, z) -> PLS (i, j, k)
    brain = np.asarray(nib.as_closest_canonical(nib.load(mask)).dataobj) > 0
    out = tmp_path_factory.mktemp("input") / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), PLS), out)
    return out, np.transpose(brain, (1, 0, 2))[::-1, ::-1]


def tiny_checkpoint(path: Path, **model: object) -> Path:
    net = build_model(ModelConfig(**(TINY_MODEL | model)), seed=2)
    return save_checkpoint(path, net, PreprocessConfig(image_size=32), {"round": 1})


def run_bundle(bundle: Path, inputs: Path, out: Path, *extra: str) -> None:
    """MONAI's own bundle runner, in a fresh process, as a hospital would call it."""
    cmd = [sys.executable, "-m", "monai.bundle", "run"]
    cmd += ["--config_file", str(bundle / "configs" / "inference.json")]
    cmd += ["--meta_file", str(bundle / "configs" / "metadata.json")]
    cmd += ["--bundle_root", str(bundle), "--dataset_dir", str(inputs), "--output_dir", str(out)]
    done = subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, timeout=300, env=ENV, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_bundle_output_matches_translate(tmp_path: Path, phantom) -> None:
    source, brain = phantom
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    bundle = tmp_path / "bundle"
    assert main(["export", "--format", "monai-bundle", str(ckpt), str(bundle)]) == 0
    for part in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        assert (bundle / part).is_file(), part
    expected = translate_volume(ckpt, source, "T2", tmp_path / "translate.nii.gz", progress=False)
    run_bundle(bundle, source.parent, tmp_path / "out")
    (written,) = (tmp_path / "out").glob("*.nii.gz")
    got, want = nib.load(written), nib.load(expected)
    assert got.shape == want.shape == nib.load(source).shape
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-6)
    np.testing.assert_allclose(got.affine, PLS, atol=1e-6)
    a, b = got.get_fdata(), want.get_fdata()
    assert brain.any() and b[brain].std() > 0  # a real, non-constant synthetic brain
    np.testing.assert_allclose(a[brain], b[brain], atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # and outside it (zeros), too


def test_metadata_describes_the_network_and_monai_verifies_it(tmp_path: Path) -> None:
    from monai.bundle import verify_net_in_out

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    bundle = export_monai_bundle(ckpt, tmp_path / "bundle", source="T2", target="T1")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["modality"] == "MR"
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "T2"}
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "T1"}
    assert fmt["inputs"]["image"]["spatial_shape"] == [32, 32]
    assert fmt["inputs"]["image"]["value_range"] == [-1, 1]
    privacy = meta["model_card"]["privacy"]
    assert {"epsilon_per_site", "delta", "unit"} <= set(privacy)
    assert "not for diagnosis" in meta["intended_use"]
    assert "not for diagnosis" in (bundle / "docs" / "README.md").read_text()
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        device="cpu",
    )


@pytest.mark.parametrize("kind", ["cyclegan", "unified"])
def test_torchscript_agrees_with_the_network(tmp_path: Path, kind: str) -> None:
    model = {"kind": kind} | ({"modalities": ("T1", "T2", "PD")} if kind == "unified" else {})
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", **model)
    bundle = export_monai_bundle(ckpt, tmp_path / "bundle", source="T1", target="T2")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["fedsynth"]["torchscript"]["file"] == "models/model.ts", meta["fedsynth"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    net = BundleGenerator(inference["model_config"], "T1", "T2")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    # The unified generator builds its label code from the batch size, which a trace fixes:
    # its TorchScript takes one slice at a time, and the metadata says so.
    batches = meta["fedsynth"]["torchscript"]["batch_sizes"]
    assert batches == ("any" if kind == "cyclegan" else "1 (set the inferer's sw_batch_size 1)")
    n = 3 if batches == "any" else 1
    x = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=0)


def test_bad_exports_leave_nothing(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="cannot synthesise FLAIR"):
        export_monai_bundle(ckpt, tmp_path / "b1", target="FLAIR")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy: exists and is not empty"):
        export_monai_bundle(ckpt, busy)
    assert main(["export", "--format", "monai-bundle", str(tmp_path / "no.safetensors"),
                 str(tmp_path / "b2")]) == 2  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "m.safetensors"]
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
