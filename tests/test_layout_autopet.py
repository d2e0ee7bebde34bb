"""The autoPET layout: five NIfTI files + sidecar per study, atomic, byte-reproducible."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petcorpus import __version__
from petcorpus.compat_autopet import to_compat_orientation
from petcorpus.errors import GeometryMismatchError, PetcorpusError
from petcorpus.layouts.autopet import (
    DTYPES,
    SIDECAR,
    AutopetStudy,
    iter_autopet_studies,
    read_autopet_study,
    write_autopet_study,
)
from petcorpus.resample import resample_to
from petcorpus.volume import Volume
from tests.conftest import phantom


def _study(**sidecar) -> AutopetStudy:
    ph = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    t = ph.truth
    ctres = resample_to(t.ct_hu, t.pet_bqml, interpolation="linear", fill=-1024.0)
    return AutopetStudy(
        ct=t.ct_hu,
        pet=t.pet_bqml,
        suv=t.suv,
        ctres=ctres,
        seg=t.lesion_mask,
        sidecar={"suv": {"factor": t.suv_factors["bw"], "time_reference": "qiba"}, **sidecar},
    )


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_write_read_round_trip(tmp_path):
    study = _study(pet_series_instance_uid="1.2.3")
    paths = write_autopet_study(tmp_path / "PETCT_0a" / "study-1", study)
    assert sorted(p.name for p in paths.values()) == sorted(
        ["CT.nii.gz", "PET.nii.gz", "SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz", SIDECAR]
    )
    back = read_autopet_study(tmp_path / "PETCT_0a" / "study-1")
    for name, vol in study.volumes().items():
        got = back.volumes()[name]
        assert got.dtype == DTYPES[name], name
        assert got.same_grid(vol, atol=1e-4), name
        np.testing.assert_array_equal(got.array, vol.array.astype(DTYPES[name]), err_msg=name)
    assert back.sidecar["petcorpus_version"] == __version__
    assert back.sidecar["pet_series_instance_uid"] == "1.2.3"
    assert back.sidecar["schema_version"] == 1
    # SimpleITK reads the CT with the same world geometry as the truth.
    ct = Volume.from_sitk(sitk.ReadImage(str(paths["CT"])))
    assert ct.same_grid(study.ct, atol=1e-4)


def test_headers_have_no_identifiers_and_units(tmp_path):
    paths = write_autopet_study(tmp_path / "s" / "t", _study())
    for name in ("CT", "PET", "SUV", "CTres", "SEG"):
        hdr = nib.load(paths[name]).header
        assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
        assert hdr.get_xyzt_units()[0] == "mm"
        raw = nib.load(paths[name]).header.binaryblock
        assert b"Phantom" not in raw and b"PETCT_" not in raw
    text = paths["sidecar"].read_text()
    assert "Phantom" not in text


def test_byte_reproducible_and_atomic_replace(tmp_path):
    study = _study()
    a = tmp_path / "a" / "s" / "t"
    b = tmp_path / "b" / "s" / "t"
    write_autopet_study(a, study, workers=1)
    write_autopet_study(b, study, workers=4)
    assert _digests(a) == _digests(b)
    # Rewriting replaces the folder as a whole (no stale files, no temp folders left).
    (a / "extra.txt").write_text("stale")
    write_autopet_study(a, study)
    assert "extra.txt" not in _digests(a)
    assert sorted(p.name for p in a.parent.iterdir()) == ["t"]


def test_study_without_seg(tmp_path):
    study = _study()
    study.seg = None
    paths = write_autopet_study(tmp_path / "s" / "t", study)
    assert "SEG" not in paths
    assert read_autopet_study(tmp_path / "s" / "t").seg is None


def test_refuses_identifiers_in_sidecar(tmp_path):
    with pytest.raises(ValueError, match="PatientName"):
        write_autopet_study(tmp_path / "s" / "t", _study(inputs={"PatientName": "Doe^John"}))
    assert not (tmp_path / "s" / "t").exists()
    assert list(tmp_path.rglob("*")) == []


def test_refuses_volumes_off_the_pet_grid(tmp_path):
    study = _study()
    study.suv = study.ct  # CT grid, not PET
    with pytest.raises(GeometryMismatchError, match="SUV"):
        write_autopet_study(tmp_path / "s" / "t", study)


def test_dtypes_keep_and_compat_from_sidecar(tmp_path):
    study = _study(options={"compat": "autopet", "compat_flavor": "current"})
    study.pet = study.pet.with_array(study.pet.array.astype(np.float64))
    paths = write_autopet_study(tmp_path / "s" / "t", study)
    assert nib.load(paths["PET"]).get_data_dtype() == np.float64
    assert nib.load(paths["CT"]).get_data_dtype() == np.float64
    assert nib.load(paths["SUV"]).get_data_dtype() == np.float32
    paths = write_autopet_study(tmp_path / "s" / "u", _study(), dtypes="keep")
    assert nib.load(paths["SEG"]).get_data_dtype() == np.uint8


def test_sidecar_is_deterministic_json(tmp_path):
    paths = write_autopet_study(tmp_path / "s" / "t", _study(z=1, a=2))
    text = paths["sidecar"].read_text()
    assert text.endswith("\n")
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_iter_and_read_errors(tmp_path):
    study = _study()
    write_autopet_study(tmp_path / "PETCT_b" / "s2", study)
    write_autopet_study(tmp_path / "PETCT_a" / "s1", study)
    (tmp_path / "PETCT_a" / ".tmp-s3-abcd").mkdir()
    (tmp_path / "PETCT_a" / ".tmp-s3-abcd" / "PET.nii.gz").write_bytes(b"")
    (tmp_path / "PETCT_c" / "empty").mkdir(parents=True)
    found = [(s, t) for s, t, _ in iter_autopet_studies(tmp_path)]
    assert found == [("PETCT_a", "s1"), ("PETCT_b", "s2")]
    with pytest.raises(PetcorpusError, match=r"missing CT\.nii\.gz"):
        read_autopet_study(tmp_path / "PETCT_c" / "empty")


def test_to_compat_orientation_is_las_and_same_world():
    ph = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    pet = ph.truth.pet_bqml
    assert pet.orientation == ("L", "P", "S")
    las = to_compat_orientation(pet)
    assert las.orientation == ("L", "A", "S")
    np.testing.assert_array_equal(las.array, pet.array[:, ::-1, :])
    # Every voxel keeps its world position.
    ijk = np.array([[3, 5, 7], [0, 0, 0], [99, 99, 79]])
    src = ijk.copy()
    src[:, 1] = pet.shape[1] - 1 - ijk[:, 1]
    np.testing.assert_allclose(las.voxel_to_world(ijk), pet.voxel_to_world(src), atol=1e-9)
    # Already LAS: unchanged. RAS input: i flipped.
    assert np.array_equal(to_compat_orientation(las).affine, las.affine)
    ras = Volume(np.zeros((4, 5, 6)), np.diag([2.0, 2.0, 3.0, 1.0]))
    out = to_compat_orientation(ras)
    assert out.orientation == ("L", "A", "S")
    np.testing.assert_allclose(out.voxel_to_world([0, 0, 0]), ras.voxel_to_world([3, 0, 0]))
