"""`fedsynth translate --bids-derivatives`: a derivative dataset the BIDS validator accepts
without errors, whose files pybids finds by their entities, carrying its provenance (digests
recomputed here with hashlib), its privacy and "not for diagnosis"; bad input leaves nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINE, head

from fedsynth import __version__
from fedsynth.cli import main
from fedsynth.config import FedsynthConfig
from fedsynth.data.layouts import DatasetError
from fedsynth.evaluation.translate import translate_volume
from fedsynth.export.bids import write_derivatives
from fedsynth.export.provenance import provenance
from fedsynth.pretrained import FOUNDATION
from fedsynth.server.run_dir import RunDirectory

BIN = str(Path(sys.executable).parent)  # the venv's scripts, also when it is not on PATH
VALIDATOR = next(
    (
        found
        for name in ("bids-validator-deno", "bids-validator")
        if (found := shutil.which(name, path=BIN + os.pathsep + os.environ.get("PATH", "")))
    ),
    None,
)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A raw BIDS dataset: two subjects with T1w and T2w, one of them with a brain mask."""
    root = tmp_path / "raw"
    rng = np.random.default_rng(1)
    for sub in ("01", "02"):
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        for suffix, contrast in (("T1w", 1.0), ("T2w", -1.5)):
            img = nib.Nifti1Image(head(rng, contrast), AFFINE)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, anat / f"sub-{sub}_{suffix}.nii.gz")
    t1 = nib.load(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz").get_fdata()
    mask = nib.Nifti1Image((t1 > 50).astype(np.uint8), AFFINE)
    nib.save(mask, root / "sub-02" / "anat" / "sub-02_desc-brain_mask.nii.gz")
    description = {"Name": "toy", "BIDSVersion": "1.10.0", "DatasetType": "raw"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    return root


def validate(root: Path) -> list[dict]:
    """The BIDS validator's issues (JSON output)."""
    fmt = ["--format", "json"] if "deno" in VALIDATOR else ["--json"]
    done = subprocess.run(
        [VALIDATOR, *fmt, str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    report = json.loads(done.stdout)
    return report["issues"]["issues"]


def test_batch_derivative_validates_and_carries_provenance(raw, ckpt, tmp_path) -> None:
    out = tmp_path / "derivatives" / "fedsynth"
    argv = ["translate", "--checkpoint", str(ckpt), "--input", str(raw), "--target", "T2"]
    assert main([*argv, "--source", "T1", "--bids-derivatives", str(out)]) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert names == [
        "sub-01/anat/sub-01_desc-fromT1w_T2w.nii.gz",
        "sub-02/anat/sub-02_desc-fromT1w_T2w.nii.gz",
    ]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    (generated,) = desc["GeneratedBy"]
    assert generated["Name"] == "fedsynth" and generated["Version"] == __version__
    assert sha256(ckpt) in generated["Description"]
    assert desc["SourceDatasets"] == [{"URL": raw.resolve().as_uri()}]
    for sub, mask in (("01", None), ("02", "sub-02_desc-brain_mask.nii.gz")):
        nifti = out / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-fromT1w_T2w.nii.gz"
        side = json.loads(nifti.with_name(nifti.name.replace(".nii.gz", ".json")).read_text())
        source = raw / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        assert side["ModelDigest"] == sha256(ckpt)
        assert side["SourceFile"] == str(source.resolve())
        assert side["Sources"] == [f"bids:raw:sub-{sub}/anat/sub-{sub}_T1w.nii.gz"]
        assert "not for diagnosis" in side["ClinicalUse"] and side["Synthetic"] is True
        assert {"PrivacyEpsilon", "PrivacyDelta", "PrivacyUnit", "ModelCardDigest"} <= set(side)
        assert side["SkullStripped"] is (mask is not None)
        header = nib.load(nifti).header
        assert b"synthetic" in header["descrip"].tobytes()
        # The voxels are `translate`'s for the same input (and mask).
        plain = translate_volume(
            ckpt,
            source,
            "T2",
            tmp_path / f"plain-{sub}.nii.gz",
            progress=False,
            mask_path=raw / f"sub-{sub}" / "anat" / mask if mask else None,
        )
        np.testing.assert_array_equal(nib.load(nifti).get_fdata(), nib.load(plain).get_fdata())
        np.testing.assert_allclose(nib.load(nifti).affine, nib.load(source).affine, atol=1e-6)
    if VALIDATOR is None:
        pytest.skip("no BIDS validator installed")
    issues = validate(out)
    errors = [i for i in issues if i["severity"] == "error"]
    assert not errors, json.dumps(errors, indent=1)[:3000]
    print("\nBIDS validator issues:", sorted({(i["code"], i["severity"]) for i in issues}))


def test_pybids_finds_each_volume_by_its_entities(raw, ckpt, tmp_path) -> None:
    bids = pytest.importorskip("bids")
    out = tmp_path / "deriv"
    write_derivatives(ckpt, raw, "T2", out, source="T1", progress=False)
    layout = bids.BIDSLayout(str(out), validate=False, is_derivative=True)
    for sub in ("01", "02"):
        (found,) = layout.get(
            subject=sub, desc="fromT1w", suffix="T2w", extension=".nii.gz", return_type="file"
        )
        assert Path(found) == out / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-fromT1w_T2w.nii.gz"
        assert layout.get_metadata(found)["ModelDigest"] == sha256(ckpt)
    # The other direction into the same dataset: the first volumes are kept, and the same
    # model is listed once in GeneratedBy.
    write_derivatives(ckpt, raw, "T1", out, source="T2", progress=False)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert len(desc["GeneratedBy"]) == 1
    layout = bids.BIDSLayout(str(out), validate=False, is_derivative=True)
    assert len(layout.get(desc="fromT2w", suffix="T1w", extension=".nii.gz")) == 2
    assert len(layout.get(desc="fromT1w", suffix="T2w", extension=".nii.gz")) == 2


def test_single_file_and_its_privacy_from_a_run(raw, ckpt, tmp_path) -> None:
    """A round checkpoint of a run directory: ε per site comes from that round's metrics."""
    run = RunDirectory(tmp_path / "run")
    cfg = FedsynthConfig.from_flat({"privacy.delta": 1e-5, "privacy.unit": "subject"})
    run.create(cfg)
    from fedsynth.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    path = run.save_round(1, loaded.model, loaded.preprocess, cfg.digest(), {}, {"server": {}})
    sites = {"hospA": {"train/epsilon": 3.5}, "hospB": {"train/epsilon": 4.25}}
    run.append_metrics({"round": 1, "seconds": 1.0, "server": {}, "sites": sites})
    source = raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    out = tmp_path / "deriv"
    (written,) = write_derivatives(path, source, "T2", out, progress=False)
    side = json.loads(written.with_name(written.name.replace(".nii.gz", ".json")).read_text())
    assert side["PrivacyEpsilon"] == {"hospA": 3.5, "hospB": 4.25}
    assert side["PrivacyDelta"] == 1e-5 and side["PrivacyUnit"] == "subject"
    assert side["PrivateDataUsed"] is True


def test_packaged_model_provenance_is_its_card() -> None:
    prov = provenance(FOUNDATION)
    card = json.loads(FOUNDATION.with_name("model.card.json").read_text())
    canonical = json.dumps(card, sort_keys=True, separators=(",", ":"))
    assert prov.card_digest == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert prov.digest == sha256(FOUNDATION)
    assert prov.private is False and prov.epsilon == {} and prov.delta == 0.0


def test_bad_input_leaves_no_files(raw, ckpt, tmp_path) -> None:
    out = tmp_path / "deriv"
    nameless = tmp_path / "volume_T1w.nii.gz"
    shutil.copy(raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz", nameless)
    with pytest.raises(DatasetError, match="volume_T1w.nii.gz: no sub-<label> entity"):
        write_derivatives(ckpt, nameless, "T2", out, progress=False)
    assert not out.exists()
    # A 4-D second subject fails after the first was translated: nothing lands in OUT.
    bad = raw / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    data = nib.load(bad).get_fdata()
    nib.save(nib.Nifti1Image(np.stack([data, data], -1).astype(np.float32), AFFINE), bad)
    with pytest.raises(DatasetError, match="is 4D"):
        write_derivatives(ckpt, raw, "T2", out, source="T1", progress=False)
    assert not out.exists() and not list(tmp_path.glob(".deriv*"))
    # A raw dataset is never written into.
    assert main(["translate", "--checkpoint", str(ckpt), "--input", str(nameless), "--target",
                 "T2", "--bids-subject", "x1", "--bids-derivatives", str(raw)]) == 2  # fmt: skip
    assert not list(raw.rglob("*desc-from*"))
    # --bids-subject names the subject of a file without one.
    (written,) = write_derivatives(ckpt, nameless, "T2", out, subject="x1", progress=False)
    assert written == out / "sub-x1" / "anat" / "sub-x1_desc-fromT1w_T2w.nii.gz"
