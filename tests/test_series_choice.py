"""Where the input is ambiguous, the choice is shown and the user can make another."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.layouts.autopet import SIDECAR
from petcorpus.phantom import make_study, write_study

runner = CliRunner()


def _copy_series(series_dir: Path, dst: Path, description: str) -> str:
    """A second series of the same images (new UIDs): a re-reconstruction, say."""
    uid = generate_uid()
    dst.mkdir(parents=True)
    for path in sorted(series_dir.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesDescription = description
        ds.save_as(dst / path.name, enforce_file_format=True)
    return uid


@pytest.fixture
def two_pets(tmp_path: Path) -> tuple[Path, str, str]:
    """A study with two attenuation-corrected PET series; returns (root, first, second)."""
    study = make_study(seed=5, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    study_dir = write_study(study, tmp_path / "dicom")
    pet_dir = next(p for p in study_dir.iterdir() if "PET" in p.name)
    second = _copy_series(pet_dir, study_dir / "5.000000-PET corr. again", "PET AC again")
    return tmp_path / "dicom", str(study.pet[0].SeriesInstanceUID), second


def _sidecar(out: Path) -> dict:
    (path,) = out.rglob(SIDECAR)
    return json.loads(path.read_text())


def test_two_ac_pet_series_the_choice_is_shown(two_pets, tmp_path):
    root, first, second = two_pets
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", str(root), str(out), "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "--pet-series" in result.output  # the note says how to choose another
    sidecar = _sidecar(out)
    chosen = sidecar["pet_series_instance_uid"]
    assert chosen in (first, second)
    (warning,) = sidecar["warnings"]
    assert "2 attenuation-corrected PT series" in warning
    assert first in warning and second in warning


@pytest.mark.slow
def test_pet_series_picks_the_other(two_pets, tmp_path):
    root, first, second = two_pets
    out = tmp_path / "default"
    assert runner.invoke(app, ["build", str(root), str(out), "-j", "1"]).exit_code == 0
    other = second if _sidecar(out)["pet_series_instance_uid"] == first else first
    out2 = tmp_path / "chosen"
    args = ["build", str(root), str(out2), "-j", "1", "--pet-series", other]
    result = runner.invoke(app, args)
    if other == second:  # the SEG references the first PET: refused, the reason named
        assert result.exit_code == 1 and "SEG_REFERENCE" in result.output
        result = runner.invoke(app, [*args, "--no-seg"])
    assert result.exit_code == 0, result.output
    sidecar = _sidecar(out2)
    assert sidecar["pet_series_instance_uid"] == other
    assert "chosen by --pet-series" in sidecar["selection_reasons"][0]
    # The choice was the user's: no note about an ambiguous choice.
    assert not [w for w in sidecar.get("warnings", []) if "PT series" in w]


def test_unknown_series_uid_is_refused_before_writing(two_pets, tmp_path):
    root, _, _ = two_pets
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", str(root), str(out), "--pet-series", "1.2.3"])
    assert result.exit_code == 1
    assert "NO_SERIES" in result.output and "1.2.3" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_no_seg_converts_the_images_of_a_study_with_a_broken_seg(tmp_path):
    study = make_study(seed=6, size="small", vendor="ge", diagnosis="LYMPHOMA")
    study_dir = write_study(study, tmp_path / "dicom")
    (seg_file,) = next(p for p in study_dir.iterdir() if "Segmentation" in p.name).iterdir()
    ds = pydicom.dcmread(seg_file)
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"  # references nothing here
    for group in (*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence):
        if "DerivationImageSequence" in group:
            del group.DerivationImageSequence
    ds.save_as(seg_file, enforce_file_format=True)

    broken = runner.invoke(app, ["build", str(tmp_path / "dicom"), str(tmp_path / "a")])
    assert broken.exit_code == 1
    result = runner.invoke(
        app, ["build", str(tmp_path / "dicom"), str(tmp_path / "b"), "--no-seg"]
    )
    assert result.exit_code == 0, result.output
    assert "--no-seg" in result.output
    sidecar = _sidecar(tmp_path / "b")
    assert sidecar["seg_series_instance_uid"] is None
    assert any("not converted (--no-seg)" in w for w in sidecar["warnings"])
    assert not list((tmp_path / "b").rglob("SEG.nii.gz"))
