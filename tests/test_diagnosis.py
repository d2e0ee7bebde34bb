"""The right reason, naming the right file: damaged slices, gantry tilt, SUV header values.

Each case is built from the phantom and asserts the reason code, the file named and a
message that does not contradict itself (no "a slice is missing?" for a slice that is there
but unreadable, no spacing complaint for a tilted stack).
"""

from __future__ import annotations

import builtins
import copy
import logging
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from petcorpus.catalog import FailureRecord
from petcorpus.convert import ConversionOptions, convert_study
from petcorpus.dicom.scan import DAMAGED, scan
from petcorpus.dicom.series import load_series
from petcorpus.errors import (
    CorruptFileError,
    GeometryMismatchError,
    MissingTagError,
    PetcorpusError,
    Reason,
    SliceGapError,
)
from petcorpus.phantom import write_study
from tests.conftest import phantom


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """One small phantom study written once; each test works on its own copy."""
    study = phantom(seed=41, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    root = tmp_path_factory.mktemp("diagnosis-src")
    write_study(study, root)
    return root


@pytest.fixture
def tree(written, tmp_path) -> Path:
    dest = tmp_path / "dicom"
    shutil.copytree(written, dest)
    return dest


def _series_dir(root: Path, word: str) -> Path:
    return next(p for p in root.rglob("*") if p.is_dir() and word in p.name)


def _pet_info(root: Path):
    res = scan(root)
    (study,) = res.studies
    (pet,) = study.by_modality("PT")
    return res, study, pet


def _failure(study) -> FailureRecord:
    """What a build records for the study (run_study does exactly this)."""
    with pytest.raises(PetcorpusError) as err:
        convert_study(study, ConversionOptions(workers=1))
    return FailureRecord.from_exception(study.study_uid, "convert", err.value)


def _deny_open(monkeypatch, victim: Path) -> None:
    """Make reading ``victim`` fail as a chmod 000 file does for a normal user.

    The tests run as root, for whom permissions do not stop a read: ``open`` raises the
    error the OS would raise instead. As another user, chmod does the real thing.
    """
    if os.geteuid() != 0:
        victim.chmod(0)
        return
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file) == victim:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


# -- damaged slices: CORRUPT_FILE naming the file, not SLICE_GAP -------------------------------
def test_zero_byte_slice_is_corrupt_file_named(tree):
    pet_dir = _series_dir(tree, "PET corr")
    victim = sorted(pet_dir.glob("*.dcm"))[40]
    victim.write_bytes(b"")
    res, study, pet = _pet_info(tree)
    assert (victim, "zero bytes (an empty file)") in res.skipped
    assert pet.unreadable == ((victim, "zero bytes (an empty file)"),)
    with pytest.raises(CorruptFileError) as err:
        load_series(pet, workers=1)
    e = err.value
    assert e.reason == Reason.CORRUPT_FILE and e.path == str(victim)
    assert str(e).startswith(f"{victim}: zero bytes")
    assert "this file is probably the missing slice" in e.message
    assert "slice is missing?" not in e.message

    rec = _failure(study)  # what the catalog stores
    assert (rec.reason, rec.path) == ("CORRUPT_FILE", str(victim))
    assert rec.message.startswith("zero bytes")


def test_a_lone_damaged_seg_fails_its_study_instead_of_losing_the_lesions(tree):
    seg_dir = _series_dir(tree, "Segmentation")
    (victim,) = seg_dir.iterdir()
    victim.write_bytes(b"")  # the study's only SEG: no series is left in its folder
    _, study, _ = _pet_info(tree)
    assert not study.by_modality("SEG")
    assert study.unreadable == ((victim, "zero bytes (an empty file)"),)
    rec = _failure(study)
    assert (rec.reason, rec.path) == ("CORRUPT_FILE", str(victim))
    assert "--no-seg" in rec.message
    converted = convert_study(study, ConversionOptions(workers=1, seg=False))
    assert converted.sidecar["seg_series_instance_uid"] is None


def test_slice_truncated_inside_its_header_is_named(tree):
    pet_dir = _series_dir(tree, "PET corr")
    victim = sorted(pet_dir.glob("*.dcm"))[20]
    victim.write_bytes(victim.read_bytes()[:1500])  # cut among the header elements
    res, _study, pet = _pet_info(tree)
    reason = dict(res.skipped)[victim]
    assert reason.startswith("truncated: the file ends after 1500 bytes")
    with pytest.raises(CorruptFileError) as err:
        load_series(pet, workers=1)
    assert err.value.path == str(victim) and err.value.message.startswith("truncated")


def test_slice_truncated_in_its_pixels_is_named(tree):
    pet_dir = _series_dir(tree, "PET corr")
    victim = sorted(pet_dir.glob("*.dcm"))[7]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 500])
    res, study, _pet = _pet_info(tree)
    assert res.skipped == []  # the header is whole: the scan cannot know
    rec = _failure(study)
    assert (rec.reason, rec.path) == ("CORRUPT_FILE", str(victim))
    assert "truncated" in rec.message


def test_unreadable_slice_names_the_os_error(tree, monkeypatch):
    pet_dir = _series_dir(tree, "PET corr")
    victim = sorted(pet_dir.glob("*.dcm"))[33]
    _deny_open(monkeypatch, victim)
    res, study, _pet = _pet_info(tree)
    assert dict(res.skipped)[victim] == "unreadable: [Errno 13] Permission denied"
    rec = _failure(study)
    assert (rec.reason, rec.path) == ("CORRUPT_FILE", str(victim))
    assert rec.message.startswith("unreadable: [Errno 13] Permission denied")
    # given the files directly (no scan), the read itself names the file and the OS error
    with pytest.raises(CorruptFileError, match=r"Errno 13\] Permission denied") as err:
        load_series(sorted(pet_dir.glob("*.dcm")), workers=1)
    assert err.value.path == str(victim)


def test_several_unreadable_files_are_all_named(tree):
    pet_dir = _series_dir(tree, "PET corr")
    files = sorted(pet_dir.glob("*.dcm"))
    for f in (files[10], files[50]):
        f.write_bytes(b"")
    _res, _study, pet = _pet_info(tree)
    with pytest.raises(CorruptFileError) as err:
        load_series(pet, workers=1)
    assert err.value.path == str(files[10]) and files[50].name in err.value.message
    assert "are probably the missing slices" in err.value.message


def test_a_real_gap_beside_a_readme_stays_a_slice_gap(tree):
    pet_dir = _series_dir(tree, "PET corr")
    sorted(pet_dir.glob("*.dcm"))[40].unlink()
    (pet_dir / "README.txt").write_text("exported by the scanner\n")
    res, _study, pet = _pet_info(tree)
    assert dict(res.skipped)[pet_dir / "README.txt"].startswith("not a DICOM file")
    assert pet.unreadable == ()  # a text file is not a damaged slice
    with pytest.raises(SliceGapError) as err:
        load_series(pet, workers=1)
    assert err.value.reason == Reason.SLICE_GAP and "slice is missing" in err.value.message


def test_damaged_file_beside_a_whole_series_is_only_logged(tree, caplog):
    pet_dir = _series_dir(tree, "PET corr")
    (pet_dir / "1-999.dcm").write_bytes(b"")
    _res, _study, pet = _pet_info(tree)
    assert [p.name for p, _ in pet.unreadable] == ["1-999.dcm"]
    with caplog.at_level(logging.WARNING, logger="petcorpus.dicom.series"):
        loaded = load_series(pet, workers=1)
    assert loaded.volume.shape[2] == pet.n_files
    assert "1-999.dcm" in caplog.text and "no gap" in caplog.text


def test_skip_reasons_are_specific(tree, monkeypatch):
    junk = tree / "junk"
    junk.mkdir()
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "notes.txt").write_text("hello\n")
    src = sorted(_series_dir(tree, "CT IMAGES").glob("*.dcm"))[0]
    (junk / "cut.dcm").write_bytes(src.read_bytes()[:1000])
    (junk / "locked.dcm").write_bytes(src.read_bytes())
    _deny_open(monkeypatch, junk / "locked.dcm")
    os.mkfifo(junk / "pipe.dcm")  # would block an open(): must not be opened
    (junk / "dangling.dcm").symlink_to(junk / "gone.dcm")
    fs = FileSet()
    fs.add(pydicom.dcmread(src))
    fs.write(junk / "export")  # a real DICOMDIR beside its copy of the file
    res = scan(junk)
    reasons = {p.relative_to(junk).as_posix(): r for p, r in res.skipped}
    assert reasons == {
        "empty.dcm": "zero bytes (an empty file)",
        "notes.txt": "not a DICOM file (no DICM marker and no DICOM header)",
        "cut.dcm": reasons["cut.dcm"],
        "locked.dcm": "unreadable: [Errno 13] Permission denied",
        "pipe.dcm": "not a regular file (a FIFO, socket or device)",
        "dangling.dcm": "unreadable: [Errno 2] No such file or directory",
        "export/DICOMDIR": "DICOMDIR (an index of the files, not an image)",
    }
    assert reasons["cut.dcm"].startswith("truncated: the file ends after 1000 bytes")
    damaged = {k for k, r in reasons.items() if r.startswith(DAMAGED)}
    assert damaged == {"empty.dcm", "cut.dcm", "locked.dcm", "dangling.dcm"}
    assert res.n_files == 1  # the copy inside export/


# -- gantry tilt -----------------------------------------------------------------------------
def _tilted_ct(tmp_path: Path, degrees: float, drop: int | None = None, jitter: bool = False):
    cts = [copy.deepcopy(d) for d in phantom(seed=5, diagnosis="LYMPHOMA").ct[:12]]
    z0 = float(cts[0].ImagePositionPatient[2])
    folder = tmp_path / "tilted"
    folder.mkdir(parents=True)
    files = []
    for k, ds in enumerate(cts):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        y += (z - z0) * math.tan(math.radians(degrees))
        if jitter and k % 3 == 1:
            y += 2.0
        ds.ImagePositionPatient = [x, round(y, 4), z]
        if k == drop:
            continue
        f = folder / f"{k:03d}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(f)
    return folder, files


@pytest.mark.parametrize("drop", [None, 5])
def test_gantry_tilt_is_its_own_reason_with_the_angle(tmp_path, drop):
    folder, files = _tilted_ct(tmp_path, 15.0, drop=drop)
    with pytest.raises(GeometryMismatchError) as err:
        load_series(files, workers=1)
    e = err.value
    assert e.reason == Reason.GANTRY_TILT and e.path == str(folder)
    assert "gantry tilt of 15.00°" in e.message
    assert "missing" not in e.message and "not uniform" not in e.message
    # the numbers agree with the angle: sideways / along = tan(15°)
    along = float(e.message.split("step ")[1].split(" mm")[0])
    side = float(e.message.split(" and ")[1].split(" mm")[0])
    assert side / along == pytest.approx(math.tan(math.radians(15.0)), rel=1e-3)


def test_small_tilt_is_detected_and_none_passes(tmp_path):
    _folder, files = _tilted_ct(tmp_path, 0.5)
    with pytest.raises(GeometryMismatchError, match=r"gantry tilt of 0\.50°"):
        load_series(files, workers=1)
    _folder, files = _tilted_ct(tmp_path / "flat", 0.0)
    assert load_series(files, workers=1).volume.shape[2] == 12


def test_positions_off_the_line_are_not_called_a_tilt(tmp_path):
    _folder, files = _tilted_ct(tmp_path, 0.0, jitter=True)
    with pytest.raises(GeometryMismatchError, match="not on one line") as err:
        load_series(files, workers=1)
    assert err.value.reason == Reason.GEOMETRY_MISMATCH


# -- SUV header values ----------------------------------------------------------------------
def _edit_pet(root: Path, edit) -> None:
    for f in sorted(_series_dir(root, "PET corr").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(f, enforce_file_format=True)


@pytest.mark.parametrize("weight", ["0", "-70", "72000"])
def test_implausible_weight_is_invalid_value_naming_the_tag(tree, weight):
    def edit(ds):
        ds.PatientWeight = weight

    _edit_pet(tree, edit)
    _res, study, pet = _pet_info(tree)
    rec = _failure(study)
    assert rec.reason == "INVALID_VALUE" and rec.error_class == "PetcorpusError"
    assert rec.path == str(pet.files[0])
    assert rec.message.startswith(f"(0010,1030) PatientWeight = {float(weight):g} kg")
    assert "missing" not in rec.message


def test_missing_weight_is_still_missing_tag(tree):
    def edit(ds):
        del ds.PatientWeight

    _edit_pet(tree, edit)
    _res, study, _pet = _pet_info(tree)
    rec = _failure(study)
    assert rec.reason == "MISSING_TAG" and "PatientWeight is missing" in rec.message


def test_decay_none_is_unsupported_and_says_which_cli_option(tree):
    def edit(ds):
        ds.DecayCorrection = "NONE"
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "RAN"]

    _edit_pet(tree, edit)
    _res, study, pet = _pet_info(tree)
    rec = _failure(study)
    assert rec.reason == "UNSUPPORTED" and rec.path == str(pet.files[0])
    assert rec.message.startswith("(0054,1102) DecayCorrection = NONE")
    assert "--suv-time autopet" in rec.message and "petcorpus suv" in rec.message
    assert "compute_suv" not in rec.message
    # the option the message names does convert the study
    out = convert_study(study, ConversionOptions(workers=1, suv_time="autopet"))
    assert out.sidecar["suv"]["time_reference"] == "autopet"


# -- the catalog records the innermost cause -------------------------------------------------
def test_failure_record_takes_the_innermost_petcorpus_error():
    inner = MissingTagError("(0010,1030) PatientWeight is missing or empty", path="/d/1.dcm")
    try:
        try:
            raise inner
        except PetcorpusError as exc:
            raise PetcorpusError(
                "cannot compute SUV", path="/d", reason=Reason.INVALID_VALUE
            ) from exc
    except PetcorpusError as outer:
        rec = FailureRecord.from_exception("1.2", "convert", outer)
    assert (rec.reason, rec.path, rec.error_class) == (
        "MISSING_TAG",
        "/d/1.dcm",
        "MissingTagError",
    )
    assert rec.message == "(0010,1030) PatientWeight is missing or empty"

    try:  # implicit chaining through a non-petcorpus error
        try:
            raise inner
        except PetcorpusError:
            raise RuntimeError("wrapped")  # noqa: B904 - the implicit chain is the point
    except RuntimeError as outer2:
        rec = FailureRecord.from_exception("1.2", "convert", outer2)
    assert rec.reason == "MISSING_TAG" and rec.path == "/d/1.dcm"

    try:  # ``from None`` is a deliberate re-diagnosis: the outer error stands
        try:
            raise inner
        except PetcorpusError:
            raise CorruptFileError("zero bytes (an empty file)", path="/d/2.dcm") from None
    except PetcorpusError as outer3:
        rec = FailureRecord.from_exception("1.2", "convert", outer3)
    assert (rec.reason, rec.path) == ("CORRUPT_FILE", "/d/2.dcm")

    rec = FailureRecord.from_exception("1.2", "convert", ValueError("boom"))
    assert rec.reason == "UNEXPECTED" and rec.path is None


def test_errors_keep_path_and_reason_through_pickle():
    e = CorruptFileError("zero bytes (an empty file)", path="/d/1.dcm")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is CorruptFileError
    assert (back.path, back.reason, back.message, str(back)) == (
        e.path,
        e.reason,
        e.message,
        str(e),
    )
    tilt = GeometryMismatchError("tilted", path="/d", reason=Reason.GANTRY_TILT)
    assert pickle.loads(pickle.dumps(tilt)).reason == Reason.GANTRY_TILT


def test_every_reason_code_is_stable():
    assert Reason("GANTRY_TILT") is Reason.GANTRY_TILT
    assert np.all([r.value == r.name for r in Reason])
