"""The phantom's DICOM is read correctly by independent readers, per vendor."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from petcorpus import Volume
from petcorpus.phantom import DIAGNOSES, make_study, write_corpus, write_study

from .conftest import phantom


def _series_dir(study_dir: Path, tag: str) -> Path:
    (found,) = [p for p in study_dir.iterdir() if tag in p.name]
    return found


def _sitk_read(series_dir: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    return Volume.from_sitk(reader.Execute())


def test_pydicom_reads_every_file_with_strict_validation(vendor_study):
    _, study_dir = vendor_study
    files = sorted(study_dir.rglob("*.dcm"))
    assert len(files) == 80 + 80 + 1
    old = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        for f in files:
            ds = pydicom.dcmread(f)
            for elem in ds.iterall():
                elem.value  # noqa: B018 - forces value validation under RAISE
    finally:
        pydicom.config.settings.reading_validation_mode = old


def test_sitk_reads_ct_geometry_and_hu(vendor_study):
    study, study_dir = vendor_study
    ct = _sitk_read(_series_dir(study_dir, "CT IMAGES"))
    truth = study.truth.ct_hu
    assert ct.shape == truth.shape == (128, 128, 80)
    np.testing.assert_allclose(ct.affine, truth.affine, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(ct.array, truth.array)


def test_sitk_reads_pet_geometry_and_per_slice_rescale(vendor_study):
    study, study_dir = vendor_study
    pet = _sitk_read(_series_dir(study_dir, "PET"))
    truth = study.truth.pet_bqml
    np.testing.assert_allclose(pet.affine, truth.affine, rtol=0, atol=1e-4)
    # ITK applies each file's RescaleSlope: values are counts (Philips) or Bq/ml.
    np.testing.assert_allclose(
        pet.array * study.truth.bqml_factor, truth.array, rtol=1e-6, atol=1e-3
    )
    slopes = {
        pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope
        for f in _series_dir(study_dir, "PET").iterdir()
    }
    assert len(slopes) > 40  # a different slope per slice


def test_highdicom_reads_the_seg_referencing_the_pet(vendor_study):
    study, study_dir = vendor_study
    (seg_file,) = _series_dir(study_dir, "Segmentation").iterdir()
    seg = hd.seg.segread(seg_file)
    pet_uid = study.pet[0].SeriesInstanceUID
    refs = {r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence}
    assert refs == {pet_uid}
    assert seg.FrameOfReferenceUID == study.pet[0].FrameOfReferenceUID
    assert seg.number_of_segments == 1
    # Frames hold exactly the lesion voxels of the truth.
    mask = study.truth.lesion_mask.array
    assert int(seg.NumberOfFrames) == int(np.count_nonzero(mask.any(axis=(0, 1))))
    assert seg.pixel_array.sum() == mask.sum()


@pytest.mark.slow
def test_dcm2niix_agrees_on_geometry(vendor_study, tmp_path):
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix is not installed (Debian package dcm2niix; .ci/run installs it)")
    study, study_dir = vendor_study
    for tag, truth in [("CT IMAGES", study.truth.ct_hu), ("PET", study.truth.pet_bqml)]:
        out = tmp_path / tag.replace(" ", "_")
        out.mkdir()
        subprocess.run(
            [
                "dcm2niix",
                "-z",
                "n",
                "-b",
                "n",
                "-o",
                str(out),
                "-f",
                "img",
                str(_series_dir(study_dir, tag)),
            ],
            check=True,
            capture_output=True,
        )
        img = nib.load(out / "img.nii")
        vol = Volume.from_nifti(img)
        # dcm2niix flips rows to its own voxel order; compare world coordinates of voxels.
        centre_world = vol.voxel_to_world((np.array(vol.shape) - 1) / 2.0)
        np.testing.assert_allclose(
            centre_world, truth.voxel_to_world((np.array(truth.shape) - 1) / 2.0), atol=1e-3
        )
        np.testing.assert_allclose(sorted(vol.spacing), sorted(truth.spacing), atol=1e-4)
        lo, hi = vol.bounds()
        tlo, thi = truth.bounds()
        np.testing.assert_allclose(lo, tlo, atol=1e-3)
        np.testing.assert_allclose(hi, thi, atol=1e-3)


def test_vendor_tags():
    siemens = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA").pet[0]
    ge = phantom(seed=11, size="small", vendor="ge", diagnosis="LYMPHOMA").pet[0]
    philips = phantom(seed=11, size="small", vendor="philips", diagnosis="LYMPHOMA").pet[0]
    for ds in (siemens, ge, philips):
        assert ds.DecayCorrection == "START"
        assert {"ATTN", "DECY"} <= set(ds.CorrectedImage)
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        assert 300e6 <= float(rp.RadionuclideTotalDose) <= 350e6
        assert float(rp.RadionuclideHalfLife) == 6586.2
        assert rp.RadiopharmaceuticalStartDateTime.endswith(rp.RadiopharmaceuticalStartTime)
        assert float(ds.PatientWeight) > 0 and float(ds.PatientSize) > 0
        assert ds.PatientSex in ("M", "F") and ds.PatientAge.endswith("Y")
        assert "2i" in ds.ReconstructionMethod or "3i" in ds.ReconstructionMethod
    assert siemens.Units == "BQML" and siemens.Manufacturer == "SIEMENS"
    # GE: SeriesTime rewritten after the scan, true start in (0009,100D).
    assert ge.Units == "BQML"
    assert ge.private_block(0x0009, "GEMS_PETD_01")[0x0D].VR == "DT"
    assert ge.SeriesTime > ge.AcquisitionTime
    # Philips: counts with both private scale factors.
    assert philips.Units == "CNTS"
    block = philips.private_block(0x7053, "Philips PET Private Group")
    assert float(block[0x00].value) > 0 and float(block[0x09].value) > 0


def test_multi_bed_times():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    acq = sorted({ds.AcquisitionTime for ds in study.pet})
    assert len(acq) > 1  # several beds
    assert study.pet[0].SeriesTime <= acq[0]


def test_truth_suv_is_bqml_times_factor():
    t = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA").truth
    np.testing.assert_allclose(t.suv.array, t.pet_bqml.array * t.suv_factors["bw"], rtol=1e-6)
    # Liver SUV near 2 away from lesions (the phantom's physiological uptake).
    liver = (t.pet_labels.array == 6) & (t.lesion_mask.array == 0)
    assert 1.6 < float(np.median(t.suv.array[liver])) < 2.4
    # Every lesion's peak exceeds the background of its organ.
    assert t.suv.array[t.lesion_mask.array == 1].max() > 4


def test_hand_computed_suv_factor_from_header():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    ds = study.pet[0]
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    from datetime import datetime

    inj = datetime.strptime(rp.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S.%f")
    scan = datetime.strptime(ds.SeriesDate + ds.SeriesTime, "%Y%m%d%H%M%S.%f")
    decayed = float(rp.RadionuclideTotalDose) * 0.5 ** ((scan - inj).total_seconds() / 6586.2)
    expected = float(ds.PatientWeight) * 1000 / decayed
    assert study.truth.suv_factors["bw"] == pytest.approx(expected, rel=1e-9)


def test_negative_study_has_empty_seg_segment():
    study = phantom(seed=5, size="small", vendor="siemens", diagnosis="NEGATIVE")
    assert study.truth.lesions == () and study.truth.lesion_mask.array.sum() == 0
    assert study.seg is not None and study.seg.number_of_segments == 1
    assert int(study.seg.NumberOfFrames) == 80 and study.seg.pixel_array.sum() == 0


def test_pair_lesions_are_separate_components():
    import cc3d

    t = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA").truth
    n_lesions = len(t.lesions)
    _, n = cc3d.connected_components(t.lesion_mask.array, connectivity=26, return_N=True)
    assert n == n_lesions


@pytest.mark.slow
def test_deterministic_for_a_seed():
    a = make_study(seed=3, size="small", vendor="ge")
    b = make_study(seed=3, size="small", vendor="ge")
    assert a.subject_id == b.subject_id and a.study_uid == b.study_uid
    assert a.pet[10].PixelData == b.pet[10].PixelData
    assert a.seg.PixelData == b.seg.PixelData


def test_no_real_identifiers():
    ds = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA").ct[0]
    assert str(ds.PatientName).startswith("Phantom^")
    assert ds.PatientID.startswith("PETCT_") and ds.PatientBirthDate == ""


@pytest.mark.slow
def test_write_corpus_tree_and_clinical_csv(tmp_path):
    import pandas as pd

    studies = write_corpus(tmp_path, subjects=4, seed=2, vendor="mixed")
    assert [s.vendor for s in studies] == ["siemens", "ge", "philips", "siemens"]
    assert [s.truth.diagnosis for s in studies] == list(DIAGNOSES)
    table = pd.read_csv(tmp_path / "Clinical Metadata FDG PET_CT Lesions.csv")
    assert len(table) == 12 and set(table["Modality"]) == {"CT", "PT", "SEG"}
    first = table[table["Subject ID"] == studies[0].subject_id].iloc[0]
    assert (
        first["diagnosis"] == studies[0].truth.diagnosis and first["sex"] == studies[0].truth.sex
    )
    for st in studies:
        series = sorted(p.name for p in (tmp_path / st.subject_id / st.study_folder).iterdir())
        assert len(series) == 3


@pytest.mark.slow
def test_shuffled_and_all_frame_segs_hold_the_same_mask(tmp_path):
    sorted_ = make_study(seed=4, size="small", diagnosis="MELANOMA")
    shuffled = make_study(seed=4, size="small", diagnosis="MELANOMA", seg_frame_order="shuffled")
    full = make_study(seed=4, size="small", diagnosis="MELANOMA", seg_all_frames=True)
    assert int(full.seg.NumberOfFrames) == 80
    assert int(shuffled.seg.NumberOfFrames) == int(sorted_.seg.NumberOfFrames)

    def z(s):
        return [
            float(f.PlanePositionSequence[0].ImagePositionPatient[2])
            for f in s.seg.PerFrameFunctionalGroupsSequence
        ]

    assert sorted(z(shuffled)) == sorted(z(sorted_)) and z(shuffled) != z(sorted_)
    assert shuffled.seg.pixel_array.sum() == sorted_.seg.pixel_array.sum()
    write_study(shuffled, tmp_path)
    assert hd.seg.segread(next(tmp_path.rglob("300.*/*.dcm"))).number_of_segments == 1


def test_several_segments():
    study = make_study(seed=4, size="small", diagnosis="LYMPHOMA", seg_segments=3)
    assert study.seg.number_of_segments == 3
