"""Loading image series: values vs the phantom truth, geometry vs SimpleITK, bad input."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import get_encoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from petcorpus.dicom.series import load_series, read_dataset
from petcorpus.errors import (
    CorruptFileError,
    GeometryMismatchError,
    PetcorpusError,
    Reason,
    SliceGapError,
)
from petcorpus.volume import Volume
from tests.conftest import phantom

TOL_MM = 1e-4


def _series_dir(study_dir: Path, prefix: str) -> Path:
    return next(p for p in study_dir.iterdir() if p.name.startswith(prefix))


def _sitk(files) -> Volume:
    """SimpleITK's reading of a series (GDCM sorts the files itself)."""
    folder = str(Path(files[0]).parent)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return Volume.from_sitk(reader.Execute())


def _write(datasets, folder: Path, names=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, ds in enumerate(datasets):
        f = folder / (names[k] if names else f"{k:04d}.dcm")
        ds.save_as(f, enforce_file_format=True)
        out.append(f)
    return out


def _ct_copy(n: int | None = None, seed: int = 5):
    cts = phantom(seed=seed, vendor="siemens", diagnosis="LYMPHOMA").ct
    return [copy.deepcopy(d) for d in (cts if n is None else cts[:n])]


# -- values and geometry -------------------------------------------------------------------
def test_ct_and_pet_equal_truth_and_simpleitk(vendor_study):
    study, study_dir = vendor_study
    t = study.truth
    ct_files = sorted(_series_dir(study_dir, "2.").glob("*.dcm"))
    pet_files = sorted(_series_dir(study_dir, "4.").glob("*.dcm"))
    ct = load_series(ct_files[::-1], workers=2)  # any input order
    pet = load_series(pet_files, workers=2)
    assert ct.volume.dtype == np.int16 and pet.volume.dtype == np.float32
    assert np.array_equal(ct.volume.array, t.ct_hu.array)
    np.testing.assert_allclose(
        pet.volume.array.astype(np.float64) * t.bqml_factor, t.pet_bqml.array, rtol=1e-6
    )
    for loaded, files, truth in ((ct, ct_files, t.ct_hu), (pet, pet_files, t.pet_bqml)):
        ref = _sitk(files)
        assert np.abs(loaded.volume.affine - ref.affine).max() < TOL_MM
        assert np.abs(loaded.volume.affine - truth.affine).max() < TOL_MM
        assert loaded.volume.shape == ref.shape
    assert np.array_equal(ct.volume.array, _sitk(ct_files).array)
    # slice order: ascending z, headers without pixel data, files and UIDs aligned
    z = [float(d.ImagePositionPatient[2]) for d in pet.datasets]
    assert z == sorted(z) and list(pet.positions) == pytest.approx(z)
    assert all("PixelData" not in d for d in pet.datasets)
    assert pet.sop_instance_uids == tuple(str(d.SOPInstanceUID) for d in pet.datasets)
    assert [read_dataset(f).SOPInstanceUID for f in pet.files[:3]] == list(
        pet.sop_instance_uids[:3]
    )


def test_threads_and_single_thread_agree(vendor_study):
    _, study_dir = vendor_study
    files = sorted(_series_dir(study_dir, "4.").glob("*.dcm"))
    a = load_series(files, workers=1)
    b = load_series(files, workers=3)
    assert np.array_equal(a.volume.array, b.volume.array)
    assert np.array_equal(a.volume.affine, b.volume.affine)


@pytest.mark.parametrize(
    "iop",
    [
        [1, 0, 0, 0, -1, 0],  # normal -z: slices sorted against the table direction
        [0.8660254, 0.5, 0, -0.5, 0.8660254, 0],  # rotated in plane
        [0, 1, 0, 0, 0, -1],  # sagittal
        [1, 0, 0, 0, 0.8660254, -0.5],  # oblique
    ],
)
def test_oblique_and_flipped_geometry_equals_simpleitk(tmp_path, iop):
    dss = _ct_copy(12)
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    origin = np.array([-30.0, 12.5, 40.0])
    order = np.random.default_rng(0).permutation(len(dss))
    for k, ds in enumerate(dss):
        ds.ImageOrientationPatient = [f"{v:.7f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + order[k] * 4.0 * normal]
    files = _write(dss, tmp_path / "obl")
    got = load_series(files)
    ref = _sitk(files)
    assert np.abs(got.volume.affine - ref.affine).max() < TOL_MM
    assert np.array_equal(got.volume.array, ref.array)
    assert got.volume.spacing[2] == pytest.approx(4.0, abs=1e-5)


# -- real-world encodings -------------------------------------------------------------------
@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_compressed_ct_decodes_to_identical_hu(tmp_path, syntax):
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no pydicom encoder for {syntax.name} installed (pyjpegls/openjpeg)")
    dss = _ct_copy(6)
    plain = load_series(_write(copy.deepcopy(dss), tmp_path / "plain"))
    for ds in dss:
        ds.compress(syntax)  # pydicom's encoders (pyjpegls / openjpeg / rle)
    files = _write(dss, tmp_path / "comp")
    assert read_dataset(files[0]).file_meta.TransferSyntaxUID == syntax
    got = load_series(files)
    assert np.array_equal(got.volume.array, plain.volume.array)
    assert np.array_equal(got.volume.affine, plain.volume.affine)


@pytest.mark.skipif(shutil.which("gdcmconv") is None, reason="gdcmconv (GDCM) not installed")
def test_jpeg_lossless_process14_decodes_to_identical_hu(tmp_path):
    # pydicom has no JPEG Lossless encoder; GDCM's gdcmconv writes one (Process 14, SV1).
    dss = _ct_copy(4)
    src = _write(dss, tmp_path / "plain")
    (tmp_path / "jpeg").mkdir()
    for f in src:
        subprocess.run(["gdcmconv", "--jpeg", str(f), str(tmp_path / "jpeg" / f.name)], check=True)
    files = sorted((tmp_path / "jpeg").glob("*.dcm"))
    assert read_dataset(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert np.array_equal(load_series(files).volume.array, load_series(src).volume.array)


def test_headerless_implicit_vr_files_read(tmp_path):
    dss = _ct_copy(5)
    plain = load_series(_write(copy.deepcopy(dss), tmp_path / "plain"))
    (tmp_path / "raw").mkdir()
    files = []
    for k, ds in enumerate(dss):
        del ds.file_meta
        ds.preamble = None
        f = tmp_path / "raw" / f"IM{k}"  # no extension, no preamble, no file meta
        ds.save_as(f, implicit_vr=True, little_endian=True, enforce_file_format=False)
        files.append(f)
    assert files[0].read_bytes()[:2] == b"\x08\x00"  # starts with (0008,xxxx)
    got = load_series(files)
    assert np.array_equal(got.volume.array, plain.volume.array)
    assert np.array_equal(got.volume.affine, plain.volume.affine)


def test_real_ct_series_matches_simpleitk(realdata):
    files = sorted((realdata / "dcmqi-ct-seg" / "ct-3slice").glob("*.dcm"))
    got = load_series(files)
    ref = _sitk(files)
    assert got.volume.shape == (512, 512, 3)
    assert np.abs(got.volume.affine - ref.affine).max() < TOL_MM
    assert np.array_equal(got.volume.array, ref.array.astype(np.int16))
    assert got.volume.spacing[2] == pytest.approx(1.0, abs=1e-3)


# -- bad input -----------------------------------------------------------------------------
def test_truncated_file_is_named(tmp_path):
    files = _write(_ct_copy(4), tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptFileError, match="truncated") as err:
        load_series(files)
    assert err.value.path == str(files[2]) and err.value.reason == Reason.CORRUPT_FILE
    files[2].write_bytes(data[:300])  # cut inside the header
    with pytest.raises(CorruptFileError) as err:
        load_series(files)
    assert err.value.path == str(files[2])


def test_zero_byte_file_is_named(tmp_path):
    files = _write(_ct_copy(4), tmp_path / "s")
    files[1].write_bytes(b"")
    with pytest.raises(CorruptFileError, match="zero bytes") as err:
        load_series(files)
    assert err.value.path == str(files[1])


def test_non_dicom_file_is_named(tmp_path):
    files = _write(_ct_copy(3), tmp_path / "s")
    junk = tmp_path / "s" / "notes.txt"
    junk.write_text("scanner log\n" * 20)
    with pytest.raises(CorruptFileError, match="not a DICOM file") as err:
        load_series([*files, junk])
    assert err.value.path == str(junk)


def test_missing_slice_reports_positions(tmp_path):
    dss = _ct_copy(8)
    z = [float(d.ImagePositionPatient[2]) for d in dss]
    files = _write(dss[:4] + dss[5:], tmp_path / "s")
    with pytest.raises(SliceGapError, match="not uniform") as err:
        load_series(files)
    assert f"{z[3]:.4f}" in str(err.value) and f"{z[5]:.4f}" in str(err.value)
    assert err.value.reason == Reason.SLICE_GAP


def test_duplicate_slice_has_its_own_reason(tmp_path):
    dss = _ct_copy(5)
    dup = copy.deepcopy(dss[2])
    dup.SOPInstanceUID = generate_uid()
    dup.file_meta.MediaStorageSOPInstanceUID = dup.SOPInstanceUID
    files = _write([*dss, dup], tmp_path / "s")
    with pytest.raises(SliceGapError, match="two slices at position") as err:
        load_series(files)
    assert err.value.reason == Reason.DUPLICATE_SLICE


def test_mixed_orientation_is_named(tmp_path):
    dss = _ct_copy(4)
    dss[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    files = _write(dss, tmp_path / "s")
    with pytest.raises(GeometryMismatchError, match="mixed orientations") as err:
        load_series(files)
    assert err.value.path == str(files[3])


def test_different_rows_columns_is_named(tmp_path):
    dss = _ct_copy(4)
    small = dss[1].pixel_array[:64, :64]
    dss[1].Rows, dss[1].Columns = small.shape
    dss[1].PixelData = np.ascontiguousarray(small).tobytes()
    files = _write(dss, tmp_path / "s")
    with pytest.raises(GeometryMismatchError, match="Rows/Columns") as err:
        load_series(files)
    assert err.value.path == str(files[1])


def test_different_pixel_spacing_is_named(tmp_path):
    dss = _ct_copy(3)
    dss[2].PixelSpacing = ["1.5", "1.5"]
    files = _write(dss, tmp_path / "s")
    with pytest.raises(GeometryMismatchError, match="PixelSpacing") as err:
        load_series(files)
    assert err.value.path == str(files[2])


def test_single_slice_uses_slice_thickness(tmp_path):
    files = _write(_ct_copy(1), tmp_path / "s")
    v = load_series(files).volume
    assert v.shape[2] == 1 and v.spacing[2] == pytest.approx(
        float(pydicom.dcmread(files[0]).SliceThickness)
    )


def test_12_bit_stored_goes_through_pydicom_and_matches(tmp_path):
    dss = _ct_copy(3)  # Siemens phantom: unsigned, HU + 1024 fits in 12 bits
    plain = load_series(_write(copy.deepcopy(dss), tmp_path / "plain"))
    for ds in dss:
        assert ds.PixelRepresentation == 0
        ds.BitsStored, ds.HighBit = 12, 11
    got = load_series(_write(dss, tmp_path / "b12"))
    assert np.array_equal(got.volume.array, plain.volume.array)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_truncated_compressed_file_is_named(tmp_path):
    dss = _ct_copy(3)
    for ds in dss:
        ds.compress(RLELossless)
    files = _write(dss, tmp_path / "rle")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) - 4000])
    with pytest.raises(CorruptFileError) as err:
        load_series(files)
    assert err.value.path == str(files[1])


def test_ct_goes_to_simpleitk_without_a_copy_when_files_come_sorted(vendor_study):
    from petcorpus.resample import sitk_image

    _, study_dir = vendor_study
    files = sorted(_series_dir(study_dir, "2.").glob("*.dcm"))
    files.sort(key=lambda f: float(read_dataset(f).ImagePositionPatient[2]))
    ct = load_series(files, workers=1).volume
    image = sitk_image(ct)
    assert sitk.GetArrayViewFromImage(image).ctypes.data == ct.array.ctypes.data
    reference = _sitk(files)
    assert np.array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), reference.array)
    assert np.allclose(image.GetOrigin(), reference.to_sitk().GetOrigin(), atol=TOL_MM)
    # any other file order is permuted into place: the same voxels, in a plain array
    shuffled = load_series(files[::-1], workers=1).volume
    assert np.array_equal(shuffled.array, ct.array)


# -- what load_series takes ---------------------------------------------------------------------
def test_a_folder_given_as_a_string_or_a_path_is_its_files(tmp_path):
    files = _write(_ct_copy(6), tmp_path / "ct")
    (tmp_path / "ct" / ".DS_Store").write_bytes(b"\0")  # hidden files are not slices
    want = load_series(files, workers=1)
    for folder in (str(tmp_path / "ct"), tmp_path / "ct"):
        got = load_series(folder, workers=1)
        assert got.files == want.files
        assert np.array_equal(got.volume.array, want.volume.array)


def test_a_single_file_given_as_a_string_is_one_slice(tmp_path):
    (f,) = _write(_ct_copy(1), tmp_path / "one")
    got = load_series(str(f), workers=1)
    assert got.files == (f,) and got.volume.shape[2] == 1


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PetcorpusError, match="no files") as exc:
        load_series(tmp_path / "empty")
    assert exc.value.reason is Reason.NO_SERIES and "empty" in str(exc.value.path)


@pytest.mark.parametrize(("intercept", "dtype"), [(-1024, np.int16), (40000, np.float32)])
def test_other_modalities_are_int16_only_when_every_value_fits(tmp_path, intercept, dtype):
    dss = _ct_copy(3)
    for ds in dss:
        ds.Modality = "MR"
        ds.RescaleIntercept = str(intercept)
    got = load_series(_write(dss, tmp_path / "mr"), workers=1).volume.array
    assert got.dtype == dtype
    dss.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))  # the volume's k order
    stored = [np.frombuffer(ds.PixelData, np.uint16).reshape(ds.Rows, ds.Columns) for ds in dss]
    want = np.stack([s.T for s in stored], axis=-1).astype(np.float64) + intercept
    assert np.array_equal(got.astype(np.float64), want)
