"""Compat mode: petcorpus reproduces the published autoPET recipe (lab-midas/TCIA_processing
``tcia_dicom_to_nifti.py``) run with the libraries it used: dicom2nifti for CT and PET,
nibabel for the SUV formula, nilearn for CTres. The recipe's steps are re-stated here
(not imported) and run on a phantom study written as DICOM."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from petcorpus.compat_autopet import (
    compat_pet_values,
    compat_seg,
    compat_volumes,
    recipe_seg,
    recover_stored,
    to_compat_orientation,
)
from petcorpus.dicom.seg import load_seg
from petcorpus.dicom.series import load_series
from petcorpus.dicom.suv import autopet_reference_file, compute_suv
from petcorpus.layouts.autopet import AutopetStudy, write_autopet_study
from petcorpus.nifti import write_nifti
from petcorpus.phantom import write_study
from petcorpus.resample import resample_to
from petcorpus.volume import Volume
from tests.conftest import phantom

dicom2nifti = pytest.importorskip(
    "dicom2nifti", reason="dicom2nifti (test extra) is needed to run the published recipe"
)
nilearn_image = pytest.importorskip(
    "nilearn.image", reason="nilearn (test extra) is needed to run the published recipe"
)


def _series_dirs(study_dir: Path) -> dict[str, Path]:
    out = {}
    for d in sorted(study_dir.iterdir()):
        first = next(d.glob("*.dcm"))
        out[str(pydicom.dcmread(first, stop_before_pixels=True).Modality)] = d
    return out


def _to_nifti(series_dir: Path, tmp: Path) -> Path:
    work = tmp / f"d2n-{series_dir.name[:8]}"
    work.mkdir()
    dicom2nifti.convert_directory(str(series_dir), str(work), compression=True, reorient=True)
    return next(work.glob("*nii.gz"))


def _recipe_factor(pet_file: Path) -> float:
    """The recipe's SUVbw factor, from one file, times of day (stated independently)."""
    ds = pydicom.dcmread(pet_file)
    rp = ds.RadiopharmaceuticalInformationSequence[0]

    def seconds(t: str) -> float:
        return float(t[:2]) * 3600 + float(t[2:4]) * 60 + float(t[4:13])

    dt = seconds(ds.AcquisitionTime) - seconds(rp.RadiopharmaceuticalStartTime)
    decayed = rp.RadionuclideTotalDose * 0.5 ** (dt / rp.RadionuclideHalfLife)
    return 1000 * ds.PatientWeight / decayed


def _run_recipe(study_dir: Path, out: Path) -> dict[str, Path]:
    """CT/PET by dicom2nifti (reorient), SUV by the formula, SEG from pixel_array, CTres
    by nilearn: the published steps."""
    dirs = _series_dirs(study_dir)
    out.mkdir()
    shutil.copy(_to_nifti(dirs["CT"], out.parent), out / "CT.nii.gz")
    shutil.copy(_to_nifti(dirs["PT"], out.parent), out / "PET.nii.gz")
    factor = _recipe_factor(next(dirs["PT"].glob("*.dcm")))
    pet = nib.load(out / "PET.nii.gz")
    suv = (pet.get_fdata() * factor).astype(np.float32)
    nib.save(nib.Nifti1Image(suv, pet.affine), out / "SUV.nii.gz")
    mask = pydicom.dcmread(next(dirs["SEG"].glob("*.dcm")))
    arr = np.transpose(mask.pixel_array, (2, 1, 0))
    iop = mask[0x5200, 0x9229][0].PlaneOrientationSequence[0].ImageOrientationPatient
    if iop[4] == 1:
        arr = np.flip(arr, 1)
    nib.save(nib.Nifti1Image(arr, pet.affine), out / "SEG.nii.gz")
    ctres = nilearn_image.resample_to_img(
        nib.load(out / "CT.nii.gz"), pet, fill_value=-1024, copy_header=True, force_resample=True
    )
    nib.save(ctres, out / "CTres.nii.gz")
    return {name: out / f"{name}.nii.gz" for name in ("CT", "PET", "SUV", "SEG", "CTres")}


def _frames_ascending(seg):
    """A copy of a BINARY SEG with its frames in ascending z (highdicom writes them
    descending): the frame order the recipe assumes (one frame per PET slice, in the
    order of the reoriented PET's k axis)."""
    seg = copy.deepcopy(seg)
    groups = list(seg.PerFrameFunctionalGroupsSequence)
    z = [float(g.PlanePositionSequence[0].ImagePositionPatient[2]) for g in groups]
    order = np.argsort(z, kind="stable")
    n, rows, cols = len(groups), int(seg.Rows), int(seg.Columns)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")
    frames = bits[: n * rows * cols].reshape(n, rows * cols)
    seg.PixelData = np.packbits(frames[order].ravel(), bitorder="little").tobytes()
    seg.PerFrameFunctionalGroupsSequence = [groups[i] for i in order]
    return seg


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    study = phantom(
        seed=21, size="small", vendor="siemens", diagnosis="LYMPHOMA", seg_all_frames=True
    )
    study = dataclasses.replace(study, seg=_frames_ascending(study.seg))
    root = tmp_path_factory.mktemp("compat")
    study_dir = write_study(study, root / "dicom")
    files = _run_recipe(study_dir, root / "recipe")
    dirs = _series_dirs(study_dir)
    ct = load_series(sorted(dirs["CT"].glob("*.dcm")))
    pet = load_series(sorted(dirs["PT"].glob("*.dcm")))
    return study, study_dir, dirs, files, ct, pet


def _petcorpus_compat(recipe_run, flavor="current"):
    _study, _, dirs, _, ct, pet = recipe_run
    ref_file = autopet_reference_file(dirs["PT"])
    factor = compute_suv([pydicom.dcmread(ref_file)], time_reference="autopet").suv_bw
    seg = load_seg(
        next(dirs["SEG"].glob("*.dcm")),
        pet.volume,
        reference_sop_uids=list(pet.sop_instance_uids),
    ).union()
    rescale = [(float(ds.RescaleSlope), float(ds.RescaleIntercept)) for ds in pet.datasets]
    return factor, compat_volumes(
        ct=ct.volume,
        pet_rescaled=pet.volume,
        suv_factor=factor,
        seg=seg,
        pet_rescale=rescale,
        flavor=flavor,
    )


@pytest.mark.slow
def test_recipe_factor_equals_petcorpus_autopet_factor(recipe_run):
    _, _, dirs, _, _, _ = recipe_run
    first = next(dirs["PT"].glob("*.dcm"))
    assert autopet_reference_file(dirs["PT"]) == first
    factor = compute_suv([pydicom.dcmread(first)], time_reference="autopet").suv_bw
    assert factor == _recipe_factor(first)


@pytest.mark.slow
def test_orientation_and_affine_equal_dicom2nifti(recipe_run, tmp_path):
    _, _, _, files, ct, pet = recipe_run
    for name, vol in (("CT", ct.volume), ("PET", pet.volume)):
        ref = nib.load(files[name])
        ours = to_compat_orientation(vol)
        assert nib.aff2axcodes(ref.affine) == ("L", "A", "S") == ours.orientation
        assert ours.shape == ref.shape
        # The header stores the affine in float32: written, both are the same numbers.
        written = write_nifti(ours, tmp_path / f"{name}.nii.gz")
        np.testing.assert_array_equal(nib.load(written).affine, ref.affine)
        np.testing.assert_allclose(ours.affine, ref.affine, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_ct_and_pet_values_equal_dicom2nifti(recipe_run):
    _, _, _, files, _ct, _pet = recipe_run
    _, (ct_c, pet_c, _, _, _) = _petcorpus_compat(recipe_run, "current")
    ref_ct = np.asanyarray(nib.load(files["CT"]).dataobj)
    ref_pet = np.asanyarray(nib.load(files["PET"]).dataobj)
    assert ct_c.dtype == ref_ct.dtype and pet_c.dtype == ref_pet.dtype
    np.testing.assert_array_equal(ct_c.array, ref_ct)
    np.testing.assert_array_equal(pet_c.array, ref_pet)


@pytest.mark.slow
def test_suv_seg_ctres_equal_recipe(recipe_run, tmp_path):
    study, _, _, files, _, _ = recipe_run
    _, (ct_c, pet_c, suv_c, ctres_c, seg_c) = _petcorpus_compat(recipe_run, "current")
    # Written through petcorpus's writer, read back like the recipe's files.
    paths = write_autopet_study(
        tmp_path / "s" / "t",
        AutopetStudy(
            ct=ct_c,
            pet=pet_c,
            suv=suv_c,
            ctres=ctres_c,
            seg=seg_c,
            sidecar={"compat": "autopet", "compat_flavor": "current"},
        ),
    )
    for name in ("SUV", "SEG"):
        ref, ours = nib.load(files[name]), nib.load(paths[name])
        assert ours.get_data_dtype() == ref.get_data_dtype(), name
        np.testing.assert_array_equal(ours.affine, ref.affine)
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))
    ref, ours = nib.load(files["CTres"]), nib.load(paths["CTres"])
    assert ours.get_data_dtype() == ref.get_data_dtype()
    np.testing.assert_array_equal(ours.affine, ref.affine)
    diff = np.abs(np.asanyarray(ours.dataobj) - np.asanyarray(ref.dataobj))
    assert float(diff.max()) < 1e-3, float(diff.max())
    # And the SEG is the truth, reoriented.
    np.testing.assert_array_equal(
        seg_c.array, to_compat_orientation(study.truth.lesion_mask).array
    )


@pytest.mark.slow
def test_published_flavor_dtypes_and_rounding(recipe_run):
    """dicom2nifti 2.3 (the TCIA release): int16 CT, float32 PET rescaled in float32."""
    _, _, _, files, _, pet = recipe_run
    factor, (ct_c, pet_c, suv_c, ctres_c, seg_c) = _petcorpus_compat(recipe_run, "published")
    assert (ct_c.dtype, pet_c.dtype, suv_c.dtype, ctres_c.dtype, seg_c.dtype) == (
        np.int16,
        np.float32,
        np.float32,
        np.float32,
        np.uint8,
    )
    # Hand computation from the stored integers and the header slopes, in float32.
    stored = np.stack(list(_stored_slices(pet)), axis=2)
    slopes = np.array([np.float32(ds.RescaleSlope) for ds in pet.datasets], dtype=np.float32)
    expected = stored.astype(np.float32) * slopes + np.float32(0)
    np.testing.assert_array_equal(
        pet_c.array, to_compat_orientation(pet.volume.with_array(expected)).array
    )
    np.testing.assert_array_equal(
        suv_c.array, (pet_c.array.astype(np.float64) * factor).astype(np.float32)
    )
    ref_ct = np.asanyarray(nib.load(files["CT"]).dataobj)
    np.testing.assert_array_equal(ct_c.array, ref_ct.astype(np.int16))
    ref_ctres = np.asanyarray(nib.load(files["CTres"]).dataobj)
    assert float(np.abs(ctres_c.array - ref_ctres).max()) < 1e-3


def _stored_slices(series):
    for f in series.files:
        ds = pydicom.dcmread(f)
        yield ds.pixel_array.T.astype(np.int64)


@pytest.mark.slow
def test_recover_stored_is_exact(recipe_run):
    _, _, _, _, _, pet = recipe_run
    rescale = [(float(ds.RescaleSlope), float(ds.RescaleIntercept)) for ds in pet.datasets]
    stored = recover_stored(pet.volume, rescale)
    np.testing.assert_array_equal(stored, np.stack(list(_stored_slices(pet)), axis=2))
    with pytest.raises(Exception, match="slope"):
        recover_stored(pet.volume, [(s * 1.001, b) for s, b in rescale])
    assert compat_pet_values(stored, rescale, "current").dtype == np.float64


def test_recipe_seg_breaks_where_placement_by_position_does_not(tmp_path):
    """Frames stored only for lesion slices (the default) or shuffled: the recipe's SEG is
    wrong or does not fit, petcorpus's placement is the truth."""
    for kwargs in ({"seg_frame_order": "shuffled", "seg_all_frames": True}, {}):
        study = phantom(seed=21, size="small", vendor="siemens", diagnosis="LYMPHOMA", **kwargs)
        pet_c = to_compat_orientation(study.truth.pet_bqml)
        truth_c = to_compat_orientation(study.truth.lesion_mask).array
        ours = compat_seg(load_seg(study.seg, study.truth.pet_bqml).union(), pet_c)
        np.testing.assert_array_equal(ours.array, truth_c)
        if kwargs:
            assert not np.array_equal(recipe_seg(study.seg, pet_c).array, truth_c)
        else:
            with pytest.raises(Exception, match="does not fit"):
                recipe_seg(study.seg, pet_c)


@pytest.mark.filterwarnings("ignore:Casting data from int16:UserWarning")
def test_compat_ctres_matches_nilearn_on_volumes():
    """resample_autopet on Volumes equals nilearn on the same images within 1e-3 HU."""
    study = phantom(seed=21, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    ct = to_compat_orientation(study.truth.ct_hu)
    pet = to_compat_orientation(study.truth.pet_bqml)
    ref = nilearn_image.resample_to_img(
        nib.Nifti1Image(ct.array, ct.affine),
        nib.Nifti1Image(pet.array, pet.affine),
        fill_value=-1024,
        copy_header=True,
        force_resample=True,
    )
    ours = resample_to(ct, pet, fill=-1024.0, compat="autopet")
    ref_data = np.asanyarray(ref.dataobj)
    assert ours.dtype == np.float32 == ref_data.dtype  # nilearn casts int16 to float32
    assert float(np.abs(ours.array - ref_data).max()) < 1e-3
    assert Volume(ref_data, ref.affine).same_grid(ours)
