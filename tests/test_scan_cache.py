"""The scan cache: a re-run parses no unchanged header, and a changed input is converted again."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from petcorpus.catalog import Catalog
from petcorpus.dicom.scan import scan
from petcorpus.phantom import write_corpus
from petcorpus.pipeline import build


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """Three small studies, built once (tests copy the tree and the corpus, mtimes kept)."""
    root = tmp_path_factory.mktemp("cache")
    write_corpus(root / "dicom", subjects=3, seed=8, vendor="mixed", size="small")
    report = build(root / "dicom", root / "out", workers=1)
    assert report.ok and len(report.done) == 3
    assert report.headers_parsed >= report_files(root / "dicom")
    return root / "dicom", root / "out"


def report_files(dicom: Path) -> int:
    return sum(1 for p in dicom.rglob("*") if p.is_file())


def _copy(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    shutil.copytree(built[0], dicom)  # copy2: sizes and mtimes kept, at another root
    shutil.copytree(built[1], out)
    return dicom, out


def _study_files(dicom: Path) -> dict[str, list[Path]]:
    return {st.study_uid: [f for s in st.series for f in s.files] for st in scan(dicom).studies}


def _rewrite(path: Path) -> None:
    """New content and a new mtime; the image (and so every output) stays the same."""
    ds = pydicom.dcmread(path)
    ds.ImageComments = "edited"
    ds.save_as(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_cached_scan_equals_a_fresh_scan(built, tmp_path):
    dicom, _ = _copy(built, tmp_path)
    fresh = scan(dicom)
    with Catalog.open(tmp_path / "c") as cat:
        store = cat.scan_store()
        first = scan(dicom, store=store)
        store.write_cache()
        cat._conn.commit()
        again = scan(dicom, store=cat.scan_store())
    assert first.parsed >= report_files(dicom) and again.parsed == 0
    assert first.studies == fresh.studies and first.skipped == fresh.skipped
    assert again.studies == fresh.studies and again.skipped == fresh.skipped
    assert [s.fingerprint for s in again.studies] == [s.fingerprint for s in first.studies]
    assert [s.fingerprint for s in fresh.studies] == [s.fingerprint for s in first.studies]


def test_rerun_over_an_unchanged_tree_parses_no_header(built, tmp_path):
    dicom, out = _copy(built, tmp_path)  # another root: paths are cached relative to it
    report = build(dicom, out, workers=1)
    assert report.headers_parsed == 0
    assert report.done == [] and len(report.skipped) == 3


def test_a_changed_file_is_parsed_again_and_its_study_rebuilt(built, tmp_path):
    dicom, out = _copy(built, tmp_path)
    files = _study_files(dicom)
    changed, *others = sorted(files)
    _rewrite(files[changed][len(files[changed]) // 2])
    report = build(dicom, out, workers=1)
    # the file, and at most its series' first and earliest headers
    assert 1 <= report.headers_parsed <= 3
    # the outputs' checksums still match, yet the study's input changed: converted again
    assert [o.study_uid for o in report.done] == [changed]
    assert sorted(report.skipped) == others
    again = build(dicom, out, workers=1)
    assert again.headers_parsed == 0 and again.done == []


def test_a_deleted_file_and_a_deleted_study(built, tmp_path):
    dicom, out = _copy(built, tmp_path)
    by_study = scan(dicom).studies
    shrunk, gone, kept = by_study
    top_ct = shrunk.select().ct.files[-1]  # an end slice: no gap, a smaller CT
    top_ct.unlink()
    gone_folders = {f.parent for s in gone.series for f in s.files}
    for folder in gone_folders:
        shutil.rmtree(folder)
    report = build(dicom, out, workers=1)
    assert report.ok
    assert [o.study_uid for o in report.done] == [shrunk.study_uid]
    assert report.skipped == [kept.study_uid]
    assert report.headers_parsed <= 2  # the shrunk series' first/earliest header at most
    with Catalog.open(out, readonly=True) as cat:
        n = int(cat.query("SELECT count(*) AS n FROM scan_files")["n"][0])
        series = set(cat.query("SELECT series_uid FROM scan_series").series_uid)
    assert n == report_files(dicom)  # no row of a deleted file
    assert not series & {s.series_uid for s in gone.series}


def test_the_cache_survives_a_kill(built, tmp_path):
    """Written in one transaction right after the plan: a build killed while converting
    leaves a cache the next run uses."""
    dicom = tmp_path / "dicom"
    shutil.copytree(built[0], dicom)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "petcorpus.cli", "build", str(dicom), str(out), "-j", "1"]
    proc = subprocess.Popen(
        [*cmd, "--no-progress"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    db = out / "catalog.sqlite"
    while proc.poll() is None and time.monotonic() < deadline:
        if db.exists() and _cached_files(db):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report = build(dicom, out, workers=1)
    assert report.headers_parsed == 0
    assert report.ok and len(report.done) + len(report.skipped) == 3


def _cached_files(db: Path) -> int:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=1)
    try:
        return int(conn.execute("SELECT count(*) FROM scan_files").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0
    finally:
        conn.close()


def test_a_rerun_reads_no_output_of_an_unchanged_study(built, tmp_path, monkeypatch):
    """Outputs with their recorded size and mtime are trusted when the study's inputs are
    unchanged: no file is re-hashed. A file changed in place (new mtime) is re-hashed,
    found wrong and its study converted again; `catalog verify` re-hashes everything."""
    from petcorpus.catalog import records, verify

    dicom, out = _copy(built, tmp_path)  # copytree keeps the mtimes it records
    hashed: list[Path] = []
    real = records.hash_file
    monkeypatch.setattr(records, "hash_file", lambda p: hashed.append(Path(p)) or real(p))
    report = build(dicom, out, workers=1)
    assert report.headers_parsed == 0 and len(report.skipped) == 3 and hashed == []

    with Catalog.open(out, readonly=True) as cat:
        art = next(a for a in cat.artifacts() if a.kind == "SUV")
        uid = cat.query("SELECT study_uid FROM artifacts WHERE path = ?", (art.path,))
    suv = out / art.path
    data = bytearray(suv.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes, a new mtime
    suv.write_bytes(bytes(data))
    again = build(dicom, out, workers=1)
    assert hashed == [suv]  # only the file whose mtime moved was read
    assert [o.study_uid for o in again.done] == [uid["study_uid"][0]]
    assert verify(out).ok


def test_outputs_catalogued_without_mtime_are_hashed_once_then_trusted(
    built, tmp_path, monkeypatch
):
    """A catalog from before schema 5 has no mtimes: its first re-run re-hashes every output
    (as builds always did) and records their mtimes; the next re-run reads none."""
    from petcorpus.catalog import records

    dicom, out = _copy(built, tmp_path)
    with sqlite3.connect(out / "catalog.sqlite") as conn:
        conn.execute("UPDATE artifacts SET mtime_ns = NULL")
        n_outputs = conn.execute("SELECT count(*) FROM artifacts").fetchone()[0]
    hashed: list[Path] = []
    real = records.hash_file
    monkeypatch.setattr(records, "hash_file", lambda p: hashed.append(Path(p)) or real(p))
    first = build(dicom, out, workers=1)
    assert len(first.skipped) == 3 and len(hashed) == n_outputs
    hashed.clear()
    again = build(dicom, out, workers=1)
    assert len(again.skipped) == 3 and hashed == []


def test_a_touched_output_is_hashed_once_and_not_converted_again(built, tmp_path, monkeypatch):
    from petcorpus.catalog import records

    dicom, out = _copy(built, tmp_path)
    ct = next(out.rglob("CT.nii.gz"))
    st = ct.stat()
    os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, a new mtime
    hashed: list[Path] = []
    real = records.hash_file
    monkeypatch.setattr(records, "hash_file", lambda p: hashed.append(Path(p)) or real(p))
    first = build(dicom, out, workers=1)
    assert first.done == [] and hashed == [ct]
    again = build(dicom, out, workers=1)
    assert again.done == [] and hashed == [ct]  # its new mtime was recorded
