"""One study → the five autoPET files: values, geometry, masks, sidecar, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.convert import ConversionOptions, convert_study, convert_to_layout, find_studies
from petcorpus.errors import PetcorpusError, Reason
from petcorpus.phantom import write_study
from petcorpus.volume import Volume
from tests.conftest import phantom

runner = CliRunner()


def _only_study(root: Path):
    studies, _ = find_studies(root)
    assert len(studies) == 1
    return studies[0]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("siemens", marks=pytest.mark.slow),
        pytest.param("ge", marks=pytest.mark.slow),
        "philips",  # the fast subset converts one vendor: the one whose PET is scaled
    ],
)
def converted(request, tmp_path_factory):
    study = phantom(
        seed=31,
        size="small",
        vendor=request.param,
        diagnosis="MELANOMA",
        seg_frame_order="shuffled",
    )
    root = tmp_path_factory.mktemp(f"conv-{request.param}")
    study_dir = write_study(study, root / "dicom")
    paths = convert_to_layout(_only_study(root / "dicom"), root / "out")
    return study, study_dir, paths


def _sitk_volume(series_dir: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    return Volume.from_sitk(reader.Execute())


def test_layout_files_and_dtypes(converted):
    _, _, paths = converted
    expected = {
        "CT": np.int16,
        "PET": np.float32,
        "SUV": np.float32,
        "CTres": np.float32,
        "SEG": np.uint8,
    }
    for name, dtype in expected.items():
        img = nib.load(paths[name])
        assert img.get_data_dtype() == dtype, name
        assert int(img.header["sform_code"]) == 1
        assert int(img.header["qform_code"]) == 1


def test_geometry_equals_simpleitk(converted):
    _, study_dir, paths = converted
    for name, tag in (("CT", "CT IMAGES"), ("PET", "PET corr.")):
        (series_dir,) = [p for p in study_dir.iterdir() if tag in p.name]
        ref = _sitk_volume(series_dir)
        ours = Volume.from_nifti(paths[name])
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours.affine, ref.affine, rtol=0, atol=1e-4)


def test_values_equal_phantom_truth(converted):
    study, _, paths = converted
    t = study.truth
    np.testing.assert_array_equal(Volume.from_nifti(paths["CT"]).array, t.ct_hu.array)
    np.testing.assert_allclose(
        Volume.from_nifti(paths["PET"]).array, t.pet_bqml.array, rtol=1e-6, atol=1e-3
    )
    np.testing.assert_allclose(
        Volume.from_nifti(paths["SUV"]).array, t.suv.array, rtol=1e-5, atol=1e-6
    )


def test_seg_equals_truth_exactly_with_shuffled_frames(converted):
    study, _, paths = converted
    seg = Volume.from_nifti(paths["SEG"])
    assert seg.array.sum() > 0
    np.testing.assert_array_equal(seg.array, study.truth.lesion_mask.array)


def test_ctres_is_ct_on_the_pet_grid(converted):
    study, _, paths = converted
    ctres = Volume.from_nifti(paths["CTres"])
    pet = Volume.from_nifti(paths["PET"])
    assert ctres.same_grid(pet)
    # Inside organs, CT sampled on the PET grid has the tissue's HU (phantom labels).
    labels = study.truth.pet_labels.array
    liver = ctres.array[labels == 6]
    lung = ctres.array[labels == 4]
    assert 30 < float(np.median(liver)) < 120
    assert float(np.median(lung)) < -700
    # Outside the CT field of view: the fill value.
    assert float(ctres.array.min()) == -1024.0


def test_sidecar_has_suv_inputs_and_no_identifiers(converted):
    study, _, paths = converted
    side = json.loads(paths["sidecar"].read_text())
    assert side["suv"]["time_reference"] == "qiba"
    assert side["pet_series_instance_uid"] == study.pet[0].SeriesInstanceUID
    assert side["ct_series_instance_uid"] == study.ct[0].SeriesInstanceUID
    text = paths["sidecar"].read_text()
    assert str(study.pet[0].PatientName) not in text
    assert "Phantom^" not in text
    # SUV factor per rescaled pixel equals the truth (Bq/ml factor x SUV factor per Bq/ml).
    t = study.truth
    assert side["suv"]["factor"] == pytest.approx(t.suv_factors["bw"] * t.bqml_factor, rel=1e-6)
    for name in ("CT", "PET", "SUV", "CTres", "SEG"):
        hdr = nib.load(paths[name]).header
        assert b"Phantom" not in hdr["descrip"].tobytes()
        assert study.subject_id.encode() not in hdr["descrip"].tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lbm", "bsa"])
def test_other_suv_kinds(kind, tmp_path):
    study = phantom(
        seed=31, size="small", vendor="siemens", diagnosis="MELANOMA", seg_frame_order="shuffled"
    )
    write_study(study, tmp_path)
    out = convert_study(_only_study(tmp_path), ConversionOptions(suv=kind))
    np.testing.assert_allclose(
        out.suv.array,
        study.truth.pet_bqml.array * study.truth.suv_factors[kind],
        rtol=1e-5,
        atol=1e-7,
    )


def test_study_without_pet_is_a_clear_error(tmp_path):
    study = phantom(seed=32, size="small", vendor="siemens", diagnosis="NEGATIVE")
    study_dir = write_study(study, tmp_path)
    shutil.rmtree(next(p for p in study_dir.iterdir() if "PET" in p.name))
    with pytest.raises(PetcorpusError) as info:
        convert_study(_only_study(tmp_path))
    assert info.value.reason == Reason.NO_SERIES


@pytest.mark.slow
def test_negative_study_gives_empty_seg(tmp_path):
    study = phantom(seed=32, size="small", vendor="ge", diagnosis="NEGATIVE")
    write_study(study, tmp_path)
    out = convert_study(_only_study(tmp_path))
    assert out.seg is not None
    assert out.seg.array.sum() == 0
    assert out.seg.same_grid(out.pet)


@pytest.mark.parametrize("vendor", [pytest.param("siemens", marks=pytest.mark.slow), "philips"])
def test_one_thread_writes_the_same_bytes_as_two(vendor, tmp_path):
    """One thread writes inline and computes SUV in the PET's buffer; two threads write in
    the background into fresh arrays. The files must not differ by a byte (Philips: PET is
    CNTS x a scale factor, so PET and SUV are both scaled copies)."""
    from petcorpus.convert import write_converted

    study = phantom(seed=33, size="small", vendor=vendor, diagnosis="LYMPHOMA")
    write_study(study, tmp_path / "dicom")
    scanned = _only_study(tmp_path / "dicom")
    one = write_converted(scanned, tmp_path / "one", ConversionOptions(workers=1))
    two = write_converted(scanned, tmp_path / "two", ConversionOptions(workers=2))
    assert one.sha256 == two.sha256
    assert set(one.sha256) == {"CT", "PET", "SUV", "CTres", "SEG", "sidecar"}
    suv = Volume.from_nifti(one.paths["SUV"]).array
    pet = Volume.from_nifti(one.paths["PET"]).array
    meta = json.loads(one.paths["sidecar"].read_text())["suv"]
    ratio = meta["factor"] / meta["bqml_factor"]  # SUV = PET(Bq/ml) x factor / bqml factor
    np.testing.assert_allclose(suv, pet.astype(np.float64) * ratio, rtol=1e-6)
    assert (vendor == "philips") == (meta["bqml_factor"] != 1.0)


@pytest.mark.slow
def test_cli_converts_a_tree_and_reports_a_broken_study(tmp_path):
    good = phantom(seed=33, size="small", vendor="philips", diagnosis="LYMPHOMA")
    bad = phantom(seed=34, size="small", vendor="siemens", diagnosis="LUNG_CANCER")
    write_study(good, tmp_path / "dicom")
    bad_dir = write_study(bad, tmp_path / "dicom")
    pet_dir = next(p for p in bad_dir.iterdir() if "PET" in p.name)
    sorted(pet_dir.iterdir())[40].unlink()  # a missing slice
    result = runner.invoke(app, ["convert", str(tmp_path / "dicom"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "1 converted, 1 failed" in result.output
    assert "SLICE_GAP" in result.output
    assert len(list((tmp_path / "out").glob("*/*/SUV.nii.gz"))) == 1


def test_cli_rejects_bad_options(tmp_path):
    result = runner.invoke(app, ["convert", str(tmp_path), str(tmp_path / "o"), "--suv", "xyz"])
    assert result.exit_code == 2
