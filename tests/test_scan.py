"""Scanning DICOM trees: grouping by UID, skipped files, parameters, the CT/PET choice."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.dicom.scan import scan
from petcorpus.errors import PetcorpusError, Reason
from petcorpus.phantom import write_study
from tests.conftest import phantom


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("scan")
    studies = [
        phantom(seed=21, vendor="siemens", diagnosis="LYMPHOMA"),
        phantom(seed=22, vendor="ge", diagnosis="MELANOMA"),
    ]
    for st in studies:
        write_study(st, root)
    return root, studies


def _clone_series(datasets, folder: Path, edit) -> str:
    """Write a copy of a series under a new SeriesInstanceUID, with ``edit`` applied."""
    uid = generate_uid()
    folder.mkdir(parents=True)
    for k, ds in enumerate(datasets):
        c = copy.deepcopy(ds)
        c.SeriesInstanceUID = uid
        c.SOPInstanceUID = generate_uid()
        c.file_meta.MediaStorageSOPInstanceUID = c.SOPInstanceUID
        if edit(c, k) is False:
            continue
        c.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return uid


def test_groups_by_uid_and_counts_skipped_files(two_studies, tmp_path):
    root, studies = two_studies
    res = scan(root)
    assert [s.study_uid for s in res.studies] == sorted(st.study_uid for st in studies)
    by_uid = {s.study_uid: s for s in res.studies}
    for st in studies:
        info = by_uid[st.study_uid]
        assert sorted(s.modality for s in info.series) == ["CT", "PT", "SEG"]
        assert info.by_modality("CT")[0].n_files == len(st.ct)
        assert info.by_modality("PT")[0].n_files == len(st.pet)
        pet = info.by_modality("PT")[0]
        # files in slice order (ascending along the normal = ascending z here)
        z = [
            float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
            for f in pet.files
        ]
        assert z == sorted(z)
    assert res.skipped == []

    # The same files flattened into one folder with junk beside them: same grouping.
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, f in enumerate(sorted(root.rglob("*.dcm"))):
        shutil.copy(f, flat / f"x{k:05d}")
    (flat / "notes.txt").write_text("hello\n")
    (flat / "empty.dcm").write_bytes(b"")
    (flat / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 40)
    res2 = scan(flat, workers=2)
    assert [len(s.series) for s in res2.studies] == [3, 3]
    assert res2.n_files == res.n_files
    reasons = {p.name: r for p, r in res2.skipped}
    assert set(reasons) == {"notes.txt", "empty.dcm", "DICOMDIR"}
    assert reasons["empty.dcm"].startswith("zero bytes") and "not a DICOM" in reasons["notes.txt"]


def test_headers_only_pixel_data_is_not_read(two_studies, tmp_path):
    root, _studies = two_studies
    src = sorted(root.rglob("*.dcm"))
    folder = tmp_path / "cut"
    folder.mkdir()
    for f in src[:5]:
        data = f.read_bytes()
        (folder / f.name).write_bytes(data[: len(data) // 2])  # pixel data cut in half
    res = scan(folder)
    assert res.n_files == 5 and res.skipped == []


def test_series_parameters(two_studies):
    root, studies = two_studies
    st = studies[0]
    scanned = scan(root).studies
    info = next(s for s in scanned if s.study_uid == st.study_uid)
    ct, pet, seg = (info.by_modality(m)[0] for m in ("CT", "PT", "SEG"))
    ds_ct = st.ct[0]
    assert ct.params["KVP"] == float(ds_ct.KVP)
    assert ct.params["XRayTubeCurrent"] == float(ds_ct.XRayTubeCurrent)
    assert ct.params["ConvolutionKernel"] == ds_ct.ConvolutionKernel
    assert ct.params["Rows"] == ds_ct.Rows and ct.params["PixelSpacing"] == [
        float(x) for x in ds_ct.PixelSpacing
    ]
    assert pet.params["Units"] == "BQML" and pet.params["DecayCorrection"] == "START"
    assert "ATTN" in pet.params["CorrectedImage"]
    assert (pet.params["Iterations"], pet.params["Subsets"]) == (2, 21)  # "PSF+TOF 2i21s"
    assert pet.params["PatientWeight"] == pytest.approx(st.truth.weight_kg)
    assert pet.params["RadionuclideTotalDose"] == pytest.approx(st.truth.injected_dose_bq)
    uptake = (st.truth.scan_start - st.truth.injection_time).total_seconds()
    assert pet.params["UptakeTimeS"] == pytest.approx(uptake)
    assert seg.params["ReferencedSeriesUID"] == pet.series_uid
    assert (
        pet.manufacturer == "SIEMENS" and pet.frame_of_reference_uid == ct.frame_of_reference_uid
    )
    zs = [float(d.ImagePositionPatient[2]) for d in st.pet]
    assert pet.z_extent == (min(zs), max(zs))
    # GE: SeriesTime is after the scan; the uptake comes from the private scan start
    ge = studies[1]
    info_ge = next(s for s in scanned if s.study_uid == ge.study_uid)
    up_ge = (ge.truth.scan_start - ge.truth.injection_time).total_seconds()
    assert info_ge.by_modality("PT")[0].params["UptakeTimeS"] == pytest.approx(up_ge)


@pytest.mark.slow
def test_select_prefers_attenuation_corrected_pet_and_covering_ct(tmp_path):
    st = phantom(seed=21, vendor="siemens", diagnosis="LYMPHOMA")  # cached
    study_dir = write_study(st, tmp_path)

    def nac(ds, k):
        ds.CorrectedImage = ["NORM", "DTIM", "SCAT", "DECY", "RAN"]
        ds.SeriesDescription = "PET NAC"

    def short_ct(ds, k):  # a CT covering only the lower half of the PET
        return k < len(st.ct) // 2

    def thin(ds, k):  # more slices than any other CT, but 0.5 mm apart: covers little
        z0 = float(st.ct[0].ImagePositionPatient[2])
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + 0.5 * k]
        return None

    nac_uid = _clone_series(st.pet, study_dir / "5-NAC", nac)
    half_uid = _clone_series(st.ct, study_dir / "6-half", short_ct)
    thin_uid = _clone_series(st.ct + st.ct[:20], study_dir / "7-thin", thin)  # most slices
    res = scan(tmp_path)
    (study,) = res.studies
    sel = study.select()
    pet_uid = next(s.series_uid for s in study.by_modality("PT") if s.series_uid != nac_uid)
    assert sel.pet.series_uid == pet_uid
    assert sel.ct.series_uid not in (half_uid, thin_uid)
    assert sel.ct.n_files == len(st.ct)
    assert [s.modality for s in sel.segs] == ["SEG"]
    text = " ".join(sel.reasons)
    assert "attenuation corrected" in text and "covers the PET" in text


def test_study_without_pet_raises_no_series(two_studies, tmp_path):
    root, studies = two_studies
    st = studies[0]
    for f in (root / st.subject_id).rglob("*.dcm"):
        if "PET" in f.parent.name or "Segmentation" in f.parent.name:
            continue
        dest = tmp_path / f.parent.name / f.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(f, dest)
    (study,) = scan(tmp_path).studies
    with pytest.raises(PetcorpusError, match="no PT series") as err:
        study.select()
    assert err.value.reason == Reason.NO_SERIES and st.study_uid in str(err.value)


def test_cli_scan(two_studies):
    root, studies = two_studies
    out = CliRunner().invoke(app, ["scan", str(root)])
    assert out.exit_code == 0, out.output
    assert "2 studies" in out.stdout and "covers the PET" in out.stdout
    out = CliRunner().invoke(app, ["scan", str(root), "--json"])
    obj = json.loads(out.stdout)
    assert len(obj["studies"]) == 2
    assert all(s["selection"]["pet"] for s in obj["studies"])
    assert all(st.subject_id not in out.stdout for st in studies)  # no patient identifiers


def test_real_files_group_by_uid(realdata):
    res = scan(realdata / "dcmqi-ct-seg")
    (study,) = res.studies
    (ct,) = study.by_modality("CT")
    segs = study.by_modality("SEG")
    assert ct.n_files == 3 and ct.manufacturer == "GE MEDICAL SYSTEMS"
    assert len(segs) == 2
    assert all(s.params["ReferencedSeriesUID"] == ct.series_uid for s in segs)
    assert {p.suffix for p, _ in res.skipped} >= {".nrrd"}  # label images beside: skipped
    with pytest.raises(PetcorpusError, match="no PT series"):
        study.select()


def test_headerless_implicit_vr_files_are_scanned(tmp_path):
    st = phantom(seed=21, vendor="siemens", diagnosis="LYMPHOMA")
    for k, ds in enumerate(st.ct[:3]):
        c = copy.deepcopy(ds)
        del c.file_meta
        c.preamble = None
        c.save_as(
            tmp_path / f"IM{k}", implicit_vr=True, little_endian=True, enforce_file_format=False
        )
    res = scan(tmp_path)
    (study,) = res.studies
    (ct,) = study.series
    assert ct.modality == "CT" and ct.n_files == 3 and res.skipped == []
    assert ct.params["KVP"] == float(st.ct[0].KVP)


def _index(result) -> list:
    return [
        (
            s.study_uid,
            s.patient_id,
            [(x.series_uid, x.modality, x.files, x.z_extent, x.params) for x in s.series],
        )
        for s in result.studies
    ]


@pytest.mark.slow
def test_process_pool_and_given_executor_index_like_one_thread(two_studies):
    """Worker processes return per-file keys, not Datasets: the index must not change."""
    from concurrent.futures import ThreadPoolExecutor

    root, _ = two_studies
    serial = scan(root)
    assert serial.n_files > 256  # more than one chunk, so the pools really split the work
    assert _index(scan(root, processes=2)) == _index(serial)
    with ThreadPoolExecutor(2) as pool:
        assert _index(scan(root, executor=pool)) == _index(serial)


def test_a_pool_that_cannot_take_work_fails_the_scan_loudly(two_studies):
    """The driver parses beside the pool; a broken pool must not leave files unread."""
    from concurrent.futures import ThreadPoolExecutor

    class Broken(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            raise RuntimeError("pool is broken")

    root, _ = two_studies
    with Broken(1) as pool, pytest.raises(RuntimeError, match="pool is broken"):
        scan(root, executor=pool)


def test_a_busy_pool_leaves_chunks_to_the_driver_and_the_index_is_unchanged(two_studies):
    """The driver parses the newest chunk itself when the pool has more than it can take;
    the chunks come back in any order, the files keep their walk order."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    on_pool: list[int] = []

    class Slow(ThreadPoolExecutor):
        def submit(self, fn, paths, **kwargs):
            def slowly(p):
                time.sleep(0.2)
                on_pool.append(threading.get_ident())
                return fn(p)

            return super().submit(slowly, paths, **kwargs)

    root, _ = two_studies
    serial = scan(root)
    with Slow(1) as pool:
        busy = scan(root, executor=pool)
    assert on_pool  # the pool parsed some chunks, the driver the others
    assert _index(busy) == _index(serial)
    assert busy.skipped == serial.skipped and busy.parsed == serial.parsed
    assert [s.fingerprint for s in busy.studies] == [s.fingerprint for s in serial.studies]
