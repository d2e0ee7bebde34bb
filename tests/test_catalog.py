"""The SQLite catalog: schema, recording, resume check, verify, CLI."""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from petcorpus.catalog import (
    CATALOG_NAME,
    SCHEMA_VERSION,
    ArtifactRecord,
    Catalog,
    FailureRecord,
    artifact_record,
    hash_file,
    verify,
)
from petcorpus.cli import app
from petcorpus.errors import PetcorpusError, Reason, SliceGapError, UnsupportedError

SUBJ = "PETCT_0123456789"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _series(uid: str, modality: str, **params) -> SimpleNamespace:
    return SimpleNamespace(
        series_uid=uid,
        study_uid=STUDY,
        modality=modality,
        manufacturer="SIEMENS",
        model="Biograph128",
        files=(Path("a.dcm"), Path("b.dcm"), Path("c.dcm")),
        frame_of_reference_uid="1.2.3.4",
        description="CT IMAGES",
        params=params,
    )


def _corpus(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """An output folder with two artifact files of one study, catalogued."""
    out = tmp_path / "out"
    study_dir = out / SUBJ / "study"
    study_dir.mkdir(parents=True)
    files = {"CT": study_dir / "CT.raw", "SEG": study_dir / "SEG.raw"}
    files["CT"].write_bytes(b"ct-bytes" * 1000)
    files["SEG"].write_bytes(b"seg" * 10)
    with Catalog.open(out) as cat:
        cat.record_study(STUDY, subject_id=SUBJ, study_date="2020-01-02")
        cat.record_artifacts(STUDY, files)
        cat.set_status(STUDY, "done")
    return out, files


def test_schema_is_versioned_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        assert cat.schema_version == SCHEMA_VERSION
        meta = dict(cat.query("SELECT key, value FROM meta").itertuples(index=False))
        assert meta["schema_version"] == str(SCHEMA_VERSION)
    conn = sqlite3.connect(tmp_path / CATALOG_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"subjects", "studies", "series", "params", "artifacts", "runs", "failures"} <= tables
    # a newer schema is refused rather than misread
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(UnsupportedError, match="newer"):
        Catalog.open(tmp_path)


def test_open_without_catalog_and_create_false_raises(tmp_path: Path) -> None:
    with pytest.raises(PetcorpusError, match="no catalog"):
        Catalog.open(tmp_path, create=False)
    assert not (tmp_path / CATALOG_NAME).exists()


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        with pytest.raises(PetcorpusError, match="not catalogued"):
            cat.record_series([_series("9.9", "CT")])
        with pytest.raises(sqlite3.IntegrityError):
            cat._conn.execute("INSERT INTO studies(study_uid, subject_id) VALUES ('x', 'nobody')")


def test_record_subject_study_series_params(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        cat.record_subject(SUBJ, sex="F", age=54, diagnosis="MELANOMA", site="autoPET")
        cat.record_subject(SUBJ, licence="CC BY-NC 4.0")  # None keeps the stored values
        cat.record_study(STUDY, subject_id=SUBJ, study_date="2020-01-02", source="/dicom/x")
        n = cat.record_series(
            [
                _series("1.1", "CT", KVP=120.0, ConvolutionKernel="B30f", PixelSpacing=[0.9, 0.9]),
                {**vars(_series("1.2", "PT", Units="BQML")), "files": 5},
            ]
        )
        assert n == 2
        subj = cat.query("SELECT * FROM subjects").iloc[0].to_dict()
        assert subj == {
            "subject_id": SUBJ,
            "sex": "F",
            "age": 54,
            "diagnosis": "MELANOMA",
            "site": "autoPET",
            "licence": "CC BY-NC 4.0",
        }
        series = cat.query("SELECT series_uid, modality, n_files FROM series ORDER BY 1")
        assert series.values.tolist() == [["1.1", "CT", 3], ["1.2", "PT", 5]]
        params = cat.query("SELECT name, value, value_num FROM params WHERE series_uid = '1.1'")
        got = {r.name: (r.value, r.value_num) for r in params.itertuples()}
        assert got["KVP"] == ("120.0", 120.0)
        assert got["ConvolutionKernel"][0] == "B30f"
        assert got["ConvolutionKernel"][1] != got["ConvolutionKernel"][1]  # NULL -> NaN
        assert json.loads(got["PixelSpacing"][0]) == [0.9, 0.9]
        # re-recording a series replaces it (and its params), it does not duplicate
        cat.record_series([_series("1.1", "CT", KVP=100)])
        assert cat.query("SELECT count(*) n FROM params WHERE series_uid='1.1'")["n"][0] == 1
        assert cat.query("SELECT status FROM studies")["status"][0] == "scanned"


@pytest.mark.slow
def test_record_series_accepts_the_scanners_series_info(tmp_path: Path) -> None:
    from petcorpus.dicom.scan import scan
    from petcorpus.phantom import write_study
    from tests.conftest import phantom

    study = phantom(seed=3, size="small", vendor="ge", diagnosis="LYMPHOMA")
    write_study(study, tmp_path / "dicom")
    result = scan(tmp_path / "dicom", workers=1)
    studies = result.studies if hasattr(result, "studies") else result
    with Catalog.open(tmp_path / "out") as cat:
        for st in studies:
            cat.record_study(st.study_uid, subject_id=st.patient_id or "x")
            cat.record_series(st.series)
        df = cat.query("SELECT modality, n_files FROM series WHERE modality != 'SEG' ORDER BY 1")
    assert df.values.tolist() == [["CT", len(study.ct)], ["PT", len(study.pet)]]


def test_hash_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    data = bytes(range(256)) * 40_000  # > one 4 MiB read block
    p.write_bytes(data)
    assert hash_file(p) == hashlib.sha256(data).hexdigest()


def test_artifact_record_reads_nifti_header_and_is_picklable(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    arr = np.zeros((4, 5, 6), np.int16)
    p = tmp_path / "s" / "CT.nii.gz"
    p.parent.mkdir()
    nib.save(nib.Nifti1Image(arr, np.diag([2.0, 3.0, 4.0, 1.0])), p)
    rec = artifact_record(p, tmp_path, "CT")
    assert rec == pickle.loads(pickle.dumps(rec))
    assert (rec.path, rec.dtype, rec.shape, rec.spacing) == (
        "s/CT.nii.gz",
        "int16",
        (4, 5, 6),
        (2.0, 3.0, 4.0),
    )
    assert rec.bytes == p.stat().st_size and rec.sha256 == hash_file(p)
    with pytest.raises(PetcorpusError, match="not inside"):
        artifact_record(p, tmp_path / "elsewhere", "CT")


def test_artifacts_round_trip_and_replace(tmp_path: Path) -> None:
    out, files = _corpus(tmp_path)
    with Catalog.open(out) as cat:
        recs = cat.artifacts(STUDY)
        assert {r.kind for r in recs} == {"CT", "SEG"}
        ct = next(r for r in recs if r.kind == "CT")
        assert ct.sha256 == hashlib.sha256(files["CT"].read_bytes()).hexdigest()
        # a worker-computed record for the same kind replaces the old one
        files["CT"].write_bytes(b"new")
        cat.record_artifacts(STUDY, [artifact_record(files["CT"], out, "CT", dtype="int16")])
        assert len(cat.artifacts(STUDY)) == 2
        assert next(r for r in cat.artifacts(STUDY) if r.kind == "CT").bytes == 3
        # corpus-level artifacts (no study), e.g. the HDF5 file
        h5 = out / "corpus.h5"
        h5.write_bytes(b"h5")
        cat.record_artifacts(None, {"HDF5": h5})
        cat.record_artifacts(None, {"HDF5": h5})
        assert cat.query("SELECT count(*) n FROM artifacts WHERE kind='HDF5'")["n"][0] == 1


def test_is_complete_is_the_resume_check(tmp_path: Path) -> None:
    out, files = _corpus(tmp_path)
    with Catalog.open(out) as cat:
        assert cat.is_complete(STUDY)
        assert cat.is_complete(STUDY, kinds=["CT", "SEG"])
        assert not cat.is_complete(STUDY, kinds=["CT", "SEG", "PET"])
        assert not cat.is_complete("unknown-study")
        data = bytearray(files["CT"].read_bytes())
        data[100] ^= 0x01  # same size, other content
        files["CT"].write_bytes(bytes(data))
        assert cat.is_complete(STUDY, rehash=False)  # sizes only: not detected
        assert not cat.is_complete(STUDY)


def test_verify_detects_flipped_byte_and_deleted_file(tmp_path: Path) -> None:
    out, files = _corpus(tmp_path)
    assert verify(out).ok and verify(out).checked == 2
    data = bytearray(files["CT"].read_bytes())
    data[-1] ^= 0xFF
    files["CT"].write_bytes(bytes(data))
    files["SEG"].unlink()
    report = verify(out)
    assert not report.ok and report.checked == 2
    assert [(i.kind, i.problem) for i in report.issues] == [("CT", "sha256"), ("SEG", "missing")]
    assert report.issues[0].study_uid == STUDY
    assert report.issues[0].actual == hash_file(files["CT"])


def test_runs_and_failures(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        cat.record_study(STUDY, subject_id=SUBJ)
        run = cat.start_run(["petcorpus", "build", "in", "out"], {"workers": 2})
        err = SliceGapError("slice 12 is missing (gap 6.0 mm)", path="/dicom/PT")
        rec = cat.record_failure(run, STUDY, "convert", err)
        # a worker returns a FailureRecord (picklable) instead of raising
        worker_rec = pickle.loads(
            pickle.dumps(FailureRecord.from_exception(STUDY, "load", KeyError("x")))
        )
        cat.record_failure(run, STUDY, "load", worker_rec)
        cat.finish_run(run, {"done": 0, "failed": 1})
        rows = cat.query("SELECT stage, error_class, reason, message, path FROM failures")
        assert rows.values.tolist()[0] == [
            "convert",
            "SliceGapError",
            "SLICE_GAP",
            "slice 12 is missing (gap 6.0 mm)",
            "/dicom/PT",
        ]
        assert rows.values.tolist()[1][:3] == ["load", "KeyError", "UNEXPECTED"]
        assert rec.reason == Reason.SLICE_GAP
        assert cat.query("SELECT status FROM studies")["status"][0] == "failed"
        r = cat.query("SELECT * FROM runs").iloc[0]
        assert r.command == "petcorpus build in out" and r.finished is not None
        assert json.loads(r.options) == {"workers": 2}
        assert json.loads(r.counts) == {"done": 0, "failed": 1}
        assert cat.summary()["failures"] == {"SLICE_GAP": 1, "UNEXPECTED": 1}


def test_transaction_is_atomic(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:

        def record_then_fail() -> None:
            with cat.transaction():
                cat.record_subject("A")
                cat.record_study("s1", subject_id="A")
                raise RuntimeError("worker result was bad")

        with pytest.raises(RuntimeError):
            record_then_fail()
        assert cat.query("SELECT count(*) n FROM subjects")["n"][0] == 0


def test_query_is_read_only_from_the_cli(tmp_path: Path) -> None:
    out, _ = _corpus(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["query", str(out), "SELECT kind FROM artifacts", "-f", "csv"])
    assert res.exit_code == 0, res.output
    assert res.output.split() == ["kind", "CT", "SEG"]
    res = runner.invoke(app, ["query", str(out), "DELETE FROM artifacts"])
    assert res.exit_code == 1
    with Catalog.open(out) as cat:
        assert len(cat.artifacts()) == 2


def test_cli_status_and_verify(tmp_path: Path) -> None:
    out, files = _corpus(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["status", str(out)])
    assert res.exit_code == 0, res.output
    assert "done 1" in res.output and "artifacts" in res.output
    res = runner.invoke(app, ["verify", str(out)])
    assert res.exit_code == 0 and "verified 2 artifacts" in res.output
    files["SEG"].unlink()
    res = runner.invoke(app, ["verify", str(out)])
    assert res.exit_code == 1
    res = runner.invoke(app, ["status", str(tmp_path / "nothing")])
    assert res.exit_code == 1


def test_artifact_record_is_frozen() -> None:
    rec = ArtifactRecord("CT", "a/CT.nii.gz", "0" * 64, 10)
    with pytest.raises(AttributeError):
        rec.kind = "PET"  # type: ignore[misc]


def test_artifact_record_rejects_a_broken_nifti(tmp_path: Path) -> None:
    from petcorpus.errors import CorruptFileError

    p = tmp_path / "CT.nii.gz"
    p.write_bytes(b"not gzip")
    with pytest.raises(CorruptFileError):
        artifact_record(p, tmp_path, "CT")
