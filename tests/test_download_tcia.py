"""The TCIA flow against a fake NBIA server: getSeries → per-series zips → TCIA-style tree."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import urllib.parse
import zipfile
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from petcorpus.download import Ledger, RetryPolicy, download_autopet, plan_autopet, read_manifest
from petcorpus.download.tcia import CLINICAL_CSV_NAME
from petcorpus.errors import ChecksumError, CorruptFileError
from tests._download_server import FakeServer
from tests.conftest import phantom

COLLECTION = "FDG-PET-CT-Lesions"


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _series_zip(datasets, md5: bool, corrupt: bool = False) -> bytes:
    buf = io.BytesIO()
    rows = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for ds in datasets:
            raw = _bytes(ds)
            # NBIA: 1-NNN.dcm with NewFileNames=Yes; SOP-UID names in the MD5 variant
            name = f"{ds.SOPInstanceUID}.dcm" if md5 else f"1-{int(ds.InstanceNumber):03d}.dcm"
            zf.writestr(name, raw)
            digest = hashlib.md5(raw).hexdigest()
            rows.append((name, "0" * 32 if corrupt else digest))
        if md5:
            zf.writestr(
                "md5hashes.csv", "Filename,MD5Hash\n" + "".join(f"{n},{h}\n" for n, h in rows)
            )
    return buf.getvalue()


def _payload(studies) -> tuple[list, dict, dict]:
    """getSeries rows, series truth and the server's files for some phantom studies."""
    rows, truth, files = [], {}, {}
    for st in studies:
        for modality, datasets in st.series.items():
            ds = datasets[0]
            uid = str(ds.SeriesInstanceUID)
            truth[uid] = datasets
            rows.append(
                {
                    "SeriesInstanceUID": uid,
                    "StudyInstanceUID": str(ds.StudyInstanceUID),
                    "Modality": modality,
                    "PatientID": st.subject_id,
                    "SeriesNumber": int(ds.SeriesNumber),
                    "SeriesDescription": str(getattr(ds, "SeriesDescription", "")),
                    "Collection": COLLECTION,
                    "ImageCount": len(datasets),
                    "FileSize": sum(len(_bytes(d)) for d in datasets),
                }
            )
            for md5 in (True, False):
                files[_image_path(uid, md5)] = _series_zip(datasets, md5)
    q = urllib.parse.urlencode({"Collection": COLLECTION, "format": "json"})
    files[f"/nbia/v1/getSeries?{q}"] = json.dumps(rows).encode()
    for subject in {r["PatientID"] for r in rows}:
        q2 = urllib.parse.urlencode(
            {"Collection": COLLECTION, "format": "json", "PatientID": subject}
        )
        mine = [r for r in rows if r["PatientID"] == subject]
        files[f"/nbia/v1/getSeries?{q2}"] = json.dumps(mine).encode()
    files["/clinical.csv"] = b"Subject ID,diagnosis\nPETCT_x,LYMPHOMA\n"
    return rows, truth, files


def _image_path(uid: str, md5: bool = True) -> str:
    q = urllib.parse.urlencode({"SeriesInstanceUID": uid})
    ep = "getImageWithMD5Hash?" if md5 else "getImage?NewFileNames=Yes&"
    return f"/nbia/v1/{ep}{q}"


class FakeNbia:
    """Serves getSeries and getImage/getImageWithMD5Hash for phantom studies."""

    def __init__(self, server: FakeServer, payload) -> None:
        self.server = server
        self.base = f"{server.url}/nbia/v1"
        self.rows, self.truth, files = payload
        server.files.update(files)
        self.clinical_url = f"{server.url}/clinical.csv"

    def image_path(self, uid: str, md5: bool = True) -> str:
        return _image_path(uid, md5)

    def image_gets(self) -> list:
        return [g for g in self.server.gets() if "getImage" in g[1]]


@pytest.fixture(scope="module")
def studies():
    return [
        phantom(seed=31, size="small", index=1),
        phantom(seed=32, size="small", index=2, vendor="ge"),
    ]


@pytest.fixture(scope="module")
def payload(studies):
    return _payload(studies)


@pytest.fixture
def nbia(payload):
    with FakeServer() as server:
        yield FakeNbia(server, payload)


POLICY = RetryPolicy(attempts=3, backoff=0.001, timeout=10, sleep=lambda s: None)


def _check_tree(dest: Path, studies, nbia: FakeNbia) -> None:
    """Independent reader: pydicom over every file, grouped by UIDs (as a scanner does)."""
    by_series: dict[str, list[Path]] = defaultdict(list)
    study_dirs: dict[str, set[Path]] = defaultdict(set)
    for f in sorted(dest.rglob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_series[str(ds.SeriesInstanceUID)].append(f)
        study_dirs[str(ds.StudyInstanceUID)].add(f.parent.parent)
        rel = f.relative_to(dest).parts
        assert len(rel) == 4 and rel[0] == ds.PatientID
        assert re.fullmatch(r"\d\d-\d\d-\d{4}-NA-.+-\d{5}", rel[1])
        assert re.fullmatch(rf"{int(ds.SeriesNumber)}\.000000-.+-\d{{5}}", rel[2])
        assert re.fullmatch(r"1-\d{3}\.dcm", rel[3])
        assert int(rel[3][2:5]) == int(ds.InstanceNumber)
    assert set(by_series) == set(nbia.truth)
    for uid, files in by_series.items():
        truth = nbia.truth[uid]
        assert len(files) == len(truth)
        want = {hashlib.md5(_bytes(d)).hexdigest() for d in truth}
        assert {hashlib.md5(f.read_bytes()).hexdigest() for f in files} == want
    assert all(len(dirs) == 1 for dirs in study_dirs.values())  # one folder per study
    assert {p.name for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")} == {
        st.subject_id for st in studies
    }


def test_tcia_flow_builds_a_tree_a_reader_accepts(nbia, studies, tmp_path) -> None:
    dest = tmp_path / "autopet"
    report = download_autopet(
        dest, nbia_url=nbia.base, clinical_url=nbia.clinical_url, policy=POLICY, workers=3
    )
    assert report.ok, report.failed
    assert len(report.done) == len(nbia.truth) + 1
    _check_tree(dest, studies, nbia)
    assert (dest / CLINICAL_CSV_NAME).read_bytes().startswith(b"Subject ID")
    assert not list((dest / ".petcorpus-download").rglob("*.zip"))  # zips removed
    ledger = Ledger(dest)
    assert len([k for k in ledger if k.startswith("series:")]) == len(nbia.truth)


def test_tree_is_read_by_the_scanner(nbia, studies, tmp_path) -> None:
    from petcorpus.dicom.scan import scan

    dest = tmp_path / "autopet"
    download_autopet(dest, nbia_url=nbia.base, clinical_url=nbia.clinical_url, policy=POLICY)
    result = scan(dest, workers=1)
    assert result.skipped == [] or all(p.suffix != ".dcm" for p, _ in result.skipped)
    assert {s.study_uid for s in result.studies} == {st.study_uid for st in studies}
    assert {s.patient_id for s in result.studies} == {st.subject_id for st in studies}
    for study in result.studies:
        got = {(se.series_uid, se.modality, len(se.files)) for se in study.series}
        want = {
            (str(d[0].SeriesInstanceUID), m, len(d))
            for st in studies
            if st.study_uid == study.study_uid
            for m, d in st.series.items()
        }
        assert got == want


def test_rerun_after_completion_fetches_no_series(nbia, studies, tmp_path) -> None:
    dest = tmp_path / "autopet"
    download_autopet(dest, nbia_url=nbia.base, clinical_url=nbia.clinical_url, policy=POLICY)
    n_images = len(nbia.image_gets())
    assert n_images == len(nbia.truth)
    report = download_autopet(
        dest, nbia_url=nbia.base, clinical_url=nbia.clinical_url, policy=POLICY
    )
    assert report.done == [] and len(report.skipped) == len(nbia.truth) + 1
    assert len(nbia.image_gets()) == n_images  # no series fetched again
    # with a saved series list, not even the listing is requested
    listing = tmp_path / "series.json"
    listing.write_text(json.dumps(nbia.rows))
    n = len(nbia.server.log)
    download_autopet(
        dest,
        series_list=listing,
        nbia_url=nbia.base,
        clinical_url=nbia.clinical_url,
        policy=POLICY,
    )
    assert len(nbia.server.log) == n


def test_manifest_and_plain_getimage(nbia, studies, tmp_path) -> None:
    uids = [r["SeriesInstanceUID"] for r in nbia.rows if r["PatientID"] == studies[1].subject_id]
    manifest = tmp_path / "x.tcia"
    manifest.write_text(
        "downloadServerUrl=https://nbia.cancerimagingarchive.net/nbia-download/servlet/\n"
        "includeAnnotation=true\nnoOfrRetry=4\ndatabasketId=manifest-1.tcia\n"
        "manifestVersion=3.0\nListOfSeriesToDownload=\n" + "\n".join(uids) + "\n"
    )
    assert read_manifest(manifest) == uids
    dest = tmp_path / "autopet"
    report = download_autopet(
        dest, manifest=manifest, nbia_url=nbia.base, clinical_url=None, md5=False, policy=POLICY
    )
    assert report.ok and len(report.done) == len(uids)
    assert all("NewFileNames=Yes" in g[1] for g in nbia.image_gets())
    got = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)
        for f in dest.rglob("*.dcm")
    }
    assert got == set(uids)


def test_subjects_filter_and_dry_run_plan(nbia, studies, tmp_path) -> None:
    who = studies[0].subject_id
    plan = plan_autopet(
        tmp_path, subjects=[who], nbia_url=nbia.base, clinical_url=None, policy=POLICY
    )
    mine = [r for r in nbia.rows if r["PatientID"] == who]
    assert set(plan.series) == {r["SeriesInstanceUID"] for r in mine}
    assert plan.estimated_bytes == sum(r["FileSize"] for r in mine)
    assert any("PatientID=" in g[1] for g in nbia.server.gets())
    assert nbia.image_gets() == []  # planning fetches no images


@pytest.mark.slow
def test_bad_md5_in_series_zip_is_reported_and_fetched_next_time(nbia, studies, tmp_path):
    uid = next(iter(nbia.truth))
    good = nbia.server.files[nbia.image_path(uid)]
    nbia.server.files[nbia.image_path(uid)] = _series_zip(nbia.truth[uid], md5=True, corrupt=True)
    dest = tmp_path / "autopet"
    report = download_autopet(dest, nbia_url=nbia.base, clinical_url=None, policy=POLICY)
    rel = f".petcorpus-download/series/{uid}.zip"
    assert list(report.failed) == [rel] and isinstance(report.failed[rel], ChecksumError)
    assert "MD5" in str(report.failed[rel])
    assert not any(  # the bad series is absent from the tree
        str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) == uid
        for f in dest.rglob("*.dcm")
    )
    nbia.server.files[nbia.image_path(uid)] = good
    again = download_autopet(dest, nbia_url=nbia.base, clinical_url=None, policy=POLICY)
    assert again.done == [rel]
    _check_tree(dest, studies, nbia)


def test_manifest_without_uids_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.tcia"
    bad.write_text("ListOfSeriesToDownload=\nnot-a-uid\n")
    with pytest.raises(CorruptFileError):
        read_manifest(bad)


def test_clinical_csv_reader_compatibility(nbia, tmp_path) -> None:
    dest = tmp_path / "autopet"
    download_autopet(
        dest,
        series_list=None,
        nbia_url=nbia.base,
        clinical_url=nbia.clinical_url,
        policy=POLICY,
        limit=1,
    )
    rows = list(csv.DictReader((dest / CLINICAL_CSV_NAME).open()))
    assert rows == [{"Subject ID": "PETCT_x", "diagnosis": "LYMPHOMA"}]
