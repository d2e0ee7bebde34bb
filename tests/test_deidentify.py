"""petcorpus deidentify: PS3.15 Basic Profile + options, SUV and SEG intact, keyed UIDs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.deid.dataset import METHOD_CODES
from petcorpus.deid.deidentify import LEDGER_NAME, REPORT_NAME, deidentify
from petcorpus.deid.phi import identifiers_from_source, phi_check
from petcorpus.deid.profile import Action, action_for
from petcorpus.deid.uids import new_uid, pseudonym
from petcorpus.dicom.suv import compute_suv
from petcorpus.phantom import make_study, write_study

KEY = b"0123456789abcdef-test-key-A"
OTHER_KEY = b"0123456789abcdef-test-key-B"
VENDORS = ("siemens", "ge", "philips")

#: what every planted study carries (also the folder name), the strings searched after
PLANTED = {
    "PatientName": "Quixwell^Marguerite^Anneliese",
    "PatientBirthDate": "19610423",
    "AccessionNumber": "ACC99812377",
    "InstitutionName": "Sankt Wendelinus Klinikum",
    "ReferringPhysicianName": "Hargreave^Theodora",
    "PerformingPhysicianName": "Oyelaran^Babatunde",
    "OperatorsName": "Vandersloot^Pieterjan",
    "OtherPatientIDs": "OTH55512398",
}
PRIVATE_NOTE = "Marguerite Quixwell called from 0176-5550123"


def _patient_id(i: int) -> str:
    return f"MRN-8362917{i}"


def _plant(study, i: int):
    pid = _patient_id(i)
    for series in study.series.values():
        for ds in series:
            ds.PatientID = pid
            for kw, v in PLANTED.items():
                setattr(ds, kw, v)
            block = ds.private_block(0x0011, "ACME_NOTES", create=True)
            block.add_new(0x01, "LO", PRIVATE_NOTE)
    for ds in study.pet:
        ds.SeriesDescription = f"PET WB Quixwell {pid}"
    study.seg.SegmentSequence[0].SegmentLabel = f"Lesion of {pid}"
    study.subject_id = "Quixwell_Marguerite"  # a name in a folder name
    return study


def _all_strings(i: int) -> list[str]:
    out = [_patient_id(i)]
    for v in PLANTED.values():
        out.append(v)
        out += [p for p in v.replace("^", " ").split() if len(p) >= 6]
    return out


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("deid")
    src = root / "in"
    for i, vendor in enumerate(VENDORS):
        write_study(_plant(make_study(10 + i, size="small", vendor=vendor), i), src)
    out = root / "out"
    report = deidentify(src, out, key=KEY, workers=2)
    assert report.ok and not report.skipped
    return src, out, report


def _dicoms(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm"))


def test_profile_rows_match_the_standard():
    # Rows of PS3.15 Table E.1-1 as the standard's text gives them (Basic Profile column,
    # then the option's column where it names the attribute).
    assert action_for(0x00080021, ()) is Action.X_D  # Series Date
    assert action_for(0x00080021) is Action.C  # ... Rtn. Long. Modif. Dates: C
    assert action_for(0x0008103E, ()) is Action.X  # Series Description
    assert action_for(0x0008103E) is Action.C  # ... Clean Desc.: C
    assert action_for(0x0020000E) is Action.U  # Series Instance UID
    assert action_for(0x00080018) is Action.U  # SOP Instance UID
    assert action_for(0x00080031) is Action.C  # Series Time: X/D, Modif. Dates C
    assert action_for(0x001021A0, ()) is Action.X  # Smoking Status
    assert action_for(0x001021A0) is Action.K  # ... Rtn. Pat. Chars.: K
    assert action_for(0x0018936A) is Action.C  # Source End DateTime: D, Modif. C
    assert action_for(0x00082112) is Action.X_Z_U  # Source Image Sequence
    assert action_for(0x00380062) is Action.C  # Service Episode Description: X, Clean C
    assert action_for(0x00101030) is Action.K  # Patient's Weight
    assert action_for(0x00100010) is Action.Z  # Patient's Name
    assert action_for(0x00191234) is Action.X  # private


def test_no_identifier_left(trees):
    src, out, _ = trees
    hits, errors = phi_check(out, identifiers_from_source(src))
    assert hits == [] and errors == []
    needles = [s.encode().lower() for i in range(len(VENDORS)) for s in _all_strings(i)]
    needles.append(PRIVATE_NOTE.encode().lower())
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 100
    for path in [out, *out.rglob("*")]:
        low = os.fsencode(str(path.relative_to(out))).lower()
        assert not [n for n in needles if n in low], path
        if path.is_file():
            data = path.read_bytes().lower()
            assert not [n for n in needles if n in data], path


def test_attributes_the_standard_asks_for(trees):
    src, out, _ = trees
    ds = pydicom.dcmread(_dicoms(out)[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == [
        "113100",
        "113108",
        "113107",
        "113105",
    ]
    assert [c.value for c in METHOD_CODES] == ["113100", "113108", "113107", "113105"]
    assert ds.PatientID == ds.PatientName == pseudonym(KEY, ds_pid(src, ds))
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
    assert ds.PatientWeight and ds.PatientSex and ds.PatientAge  # patient characteristics


def ds_pid(src: Path, out_ds) -> str:
    for i in range(len(VENDORS)):
        if pseudonym(KEY, _patient_id(i)) == out_ds.PatientID:
            return _patient_id(i)
    raise AssertionError("no source patient")


def _pet_series(root: Path) -> dict[str, list]:
    by_study: dict[str, list] = {}
    for p in _dicoms(root):
        ds = pydicom.dcmread(p)
        if ds.Modality == "PT":
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    return by_study


def test_suv_factors_unchanged(trees):
    src, out, _ = trees
    before, after = _pet_series(src), _pet_series(out)
    assert len(before) == len(after) == len(VENDORS)
    for uid, series in before.items():
        a = compute_suv(series).as_dict()
        b = compute_suv(after[new_uid(KEY, uid)]).as_dict()
        for k in ("suv_bw", "suv_lbm", "suv_bsa", "bqml"):
            assert a[k] is not None and b[k] == pytest.approx(a[k], rel=1e-9, abs=0), (uid, k)
        # dates moved by whole days, times kept
        s0, s1 = series[0], after[new_uid(KEY, uid)][0]
        assert s0.SeriesTime == s1.SeriesTime and s0.SeriesDate != s1.SeriesDate


def test_build_of_out_equals_build_of_in(trees, tmp_path):
    from petcorpus.layouts import open_corpus
    from petcorpus.pipeline import build

    src, out, _ = trees
    a, b = tmp_path / "a", tmp_path / "b"
    assert build(src, a, workers=1).ok
    assert build(out, b, workers=1).ok
    ca, cb = open_corpus(a), open_corpus(b)
    assert len(ca.keys()) == len(cb.keys()) == len(VENDORS)
    new_subject = {pseudonym(KEY, _patient_id(i)): _patient_id(i) for i in range(len(VENDORS))}
    keys_a, keys_b = ca.keys(), cb.keys()
    by_subject = {k.split("/")[0]: k for k in keys_a}
    n_seg = 0
    for key in keys_b:
        case_b = cb.case(key)
        case_a = ca.case(by_subject[new_subject[key.split("/")[0]]])
        for name in ("CT", "PET", "SUV", "CTres", "SEG"):
            va, vb = case_a.volume(name), case_b.volume(name)
            np.testing.assert_array_equal(np.asarray(va.array), np.asarray(vb.array), name)
            np.testing.assert_array_equal(va.affine, vb.affine)
        n_seg += int(np.asarray(case_b.volume("SEG").array).sum() > 0)
    assert n_seg >= 1  # the SEG lands on the same, non-empty voxels


def test_same_key_same_uids_other_key_other_uids(trees, tmp_path):
    src, out, _ = trees
    one = src / "Quixwell_Marguerite"
    study = next(one.iterdir())
    part = tmp_path / "part"
    shutil.copytree(study, part / study.name)
    again, other = tmp_path / "again", tmp_path / "other"
    deidentify(part, again, key=KEY)
    deidentify(part, other, key=OTHER_KEY)

    def uids(root: Path) -> set[str]:
        found = set()
        for p in _dicoms(root):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            found |= {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)}
        return found

    assert uids(again) <= uids(out)
    assert not uids(again) & uids(other)
    # the same key gives the same bytes
    first = {p.relative_to(out): p.read_bytes() for p in _dicoms(out)}
    for p in _dicoms(again):
        assert p.read_bytes() == first[p.relative_to(again)]


def test_rerun_skips_what_is_done(trees):
    src, out, first = trees
    report = deidentify(src, out, key=KEY)
    assert report.resumed == len(first.written) and not report.written
    assert (out / LEDGER_NAME).is_file() and (out / REPORT_NAME).is_file()


def test_damaged_file_is_named_and_the_rest_goes_on(tmp_path):
    src = tmp_path / "in"
    write_study(make_study(3, size="small", vendor="siemens"), src)
    files = _dicoms(src)
    bad = files[0].with_name("broken.dcm")
    bad.write_bytes(files[0].read_bytes()[:400])
    (tmp_path / "key").write_text("k" * 32)
    result = CliRunner().invoke(
        app,
        ["deidentify", str(src), str(tmp_path / "out"), "--key", str(tmp_path / "key")],
    )
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if "failed" in line and "broken" in line]
    assert len(failed) == 1
    assert len(_dicoms(tmp_path / "out")) == len(files)


def test_burned_in_series_flagged(tmp_path):
    src = tmp_path / "in"
    study = make_study(4, size="small", vendor="siemens")
    for ds in study.ct:
        ds.BurnedInAnnotation = "YES"
    write_study(study, src)
    report = deidentify(src, tmp_path / "out", key=KEY)
    assert len(report.burned_in) == 1
    (series,) = report.burned_in
    assert series.split("/")[-1].startswith("CT-")
    text = (tmp_path / "out" / REPORT_NAME).read_text()
    assert "BurnedInAnnotation" in text and series in text


def test_id_map_and_written_map(tmp_path):
    src = tmp_path / "in"
    study = make_study(5, size="small", vendor="ge")
    write_study(study, src)
    (tmp_path / "key").write_text("k" * 32)
    (tmp_path / "ids.csv").write_text(f"PatientID,NewPatientID\n{study.subject_id},SUBJ001\n")
    result = CliRunner().invoke(
        app,
        [
            "deidentify",
            str(src),
            str(tmp_path / "out"),
            "--key",
            str(tmp_path / "key"),
            "--id-map",
            str(tmp_path / "ids.csv"),
            "--write-map",
            str(tmp_path / "map.csv"),
            "--date-shift",
            "-7",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == ["SUBJ001"]
    assert (tmp_path / "map.csv").read_text().splitlines()[1] == f"{study.subject_id},SUBJ001"
    ds = pydicom.dcmread(_dicoms(tmp_path / "out")[0])
    src_ds = study.ct[0]
    import datetime as dt

    shifted = dt.datetime.strptime(src_ds.StudyDate, "%Y%m%d") - dt.timedelta(days=7)
    assert ds.StudyDate == shifted.strftime("%Y%m%d")
    inside = CliRunner().invoke(
        app,
        [
            "deidentify",
            str(src),
            str(tmp_path / "out"),
            "--key",
            str(tmp_path / "key"),
            "--write-map",
            str(tmp_path / "out" / "map.csv"),
        ],
    )
    assert inside.exit_code != 0 and not (tmp_path / "out" / "map.csv").exists()
