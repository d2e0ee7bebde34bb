"""``petcorpus evaluate`` and ``petcorpus lesions`` in-process, on NIfTI written from the
phantom's truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.metrics import autopet_metrics, lesion_statistics
from tests.conftest import phantom

runner = CliRunner()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    for i, diag in enumerate(["LYMPHOMA", "NEGATIVE"]):
        t = phantom(seed=i, size="small", diagnosis=diag).truth
        rel = Path(f"PETCT_{i:010x}/01-01-2020-NA-PET-CT-{i}")
        (root / "gt" / rel).mkdir(parents=True)
        (root / "pred" / rel).mkdir(parents=True)
        nib.save(t.suv.to_nifti(np.float32), root / "gt" / rel / "SUV.nii.gz")
        nib.save(t.lesion_mask.to_nifti(np.uint8), root / "gt" / rel / "SEG.nii.gz")
        pred = ndimage.binary_dilation(t.lesion_mask.array > 0).astype(np.uint8)
        pred[:3, :3, :3] = 1
        nib.save(
            t.lesion_mask.with_array(pred).to_nifti(np.uint8), root / "pred" / rel / "PRED.nii.gz"
        )
        (root / "flat").mkdir(exist_ok=True)
        nib.save(t.lesion_mask.with_array(pred).to_nifti(np.uint8), root / "flat" / f"c{i}.nii.gz")
    return root


def test_evaluate_autopet(folders: Path) -> None:
    out = folders / "out" / "m.csv"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--gt",
            str(folders / "gt"),
            "--pred",
            str(folders / "pred"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 2
    # same numbers as the library on the arrays (voxel volume from the GT header, edition III)
    t = phantom(seed=0, size="small", diagnosis="LYMPHOMA").truth
    pred = nib.load(next((folders / "pred").glob("*0/*/PRED.nii.gz"))).get_fdata()
    hdr = t.lesion_mask.to_nifti(np.uint8).header["pixdim"]
    ref = autopet_metrics(t.lesion_mask.array, pred, float(hdr[1] * hdr[2] * hdr[3] / 1000))
    row = df[df["case"].str.startswith("PETCT_0000000000")].iloc[0]
    assert row["dice"] == pytest.approx(ref.dice) and row["fp_volume_ml"] == pytest.approx(
        ref.fp_volume_ml
    )
    assert math.isnan(df.iloc[1]["dice"])  # negative study, edition III
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["autopet"]["dice"] == pytest.approx(ref.dice)  # nan-mean skips the negative
    assert summary["autopet"]["fn_volume_ml"] == pytest.approx(ref.fn_volume_ml)


def test_evaluate_all_edition_i(folders: Path) -> None:
    out = folders / "out2" / "m.csv"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--gt",
            str(folders / "gt"),
            "--pred",
            str(folders / "pred"),
            "--metrics",
            "all",
            "--edition",
            "I",
            "--workers",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert df.iloc[1]["dice"] == 0.0  # edition I: empty GT, non-empty prediction
    organs = pd.read_csv(out.with_name("m_organs.csv"))
    assert set(organs.columns) >= {"case", "label", "dice", "assd", "hd95", "nsd"}


def test_missing_prediction_and_grid_mismatch(folders: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["evaluate", "--gt", str(folders / "gt"), "--pred", str(folders / "flat")]
    )
    assert res.exit_code == 1 and "no prediction" in res.output
    # flat layout, one case on another grid
    gt_dir, pred_dir = tmp_path / "g", tmp_path / "p"
    gt_dir.mkdir(), pred_dir.mkdir()
    a = np.zeros((8, 8, 8), np.uint8)
    a[2:5, 2:5, 2:5] = 1
    nib.save(nib.Nifti1Image(a, np.eye(4)), gt_dir / "x.nii.gz")
    nib.save(
        nib.Nifti1Image(a[::2, ::2, ::2].copy(), np.diag([2.0, 2, 2, 1])), pred_dir / "x.nii.gz"
    )
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--gt",
            str(gt_dir),
            "--pred",
            str(pred_dir),
            "--out",
            str(tmp_path / "m.csv"),
        ],
    )
    assert res.exit_code == 1
    assert (
        "GEOMETRY_MISMATCH" in res.output
        and "x.nii.gz" in res.output
        and "--resample" in res.output
    )
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--gt",
            str(gt_dir),
            "--pred",
            str(pred_dir),
            "--out",
            str(tmp_path / "m.csv"),
            "--resample",
        ],
    )
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "m.csv").iloc[0]["dice"] > 0


def test_lesions(folders: Path) -> None:
    out = folders / "les" / "lesions.csv"
    res = runner.invoke(app, ["lesions", str(folders / "gt"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    t = phantom(seed=0, size="small", diagnosis="LYMPHOMA").truth
    ref = lesion_statistics(t.suv, t.lesion_mask)
    assert len(df) == len(ref)
    assert np.allclose(df["suv_peak"], [r.suv_peak for r in ref])
    studies = pd.read_csv(out.with_name("lesions_studies.csv"))
    assert list(studies["lesion_count"]) == [len(ref), 0]
