"""The catalog's SQL schema and its migrations (one place for every table)."""

from __future__ import annotations

__all__ = ["CATALOG_NAME", "SCHEMA_VERSION"]

CATALOG_NAME = "catalog.sqlite"
# SQLite result codes of a file that is not (or no longer) a database: SQLITE_CORRUPT, NOTADB.
_SQLITE_CORRUPT = frozenset({11, 26})
#: Bumped whenever a table or column changes; :meth:`Catalog.open` refuses newer files.
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE subjects (
    subject_id TEXT PRIMARY KEY,
    sex TEXT,
    age INTEGER,
    diagnosis TEXT,
    site TEXT,
    licence TEXT
);
CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
    study_date TEXT,
    diagnosis TEXT,
    status TEXT NOT NULL DEFAULT 'scanned',
    source TEXT,
    updated TEXT
);
CREATE INDEX studies_subject ON studies(subject_id);
CREATE TABLE series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid) ON DELETE CASCADE,
    modality TEXT,
    manufacturer TEXT,
    model TEXT,
    n_files INTEGER,
    frame_of_reference_uid TEXT,
    description TEXT
);
CREATE INDEX series_study ON series(study_uid);
CREATE TABLE params (
    series_uid TEXT NOT NULL REFERENCES series(series_uid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT,
    value_num REAL,
    PRIMARY KEY (series_uid, name)
);
CREATE TABLE artifacts (
    artifact_id INTEGER PRIMARY KEY,
    study_uid TEXT REFERENCES studies(study_uid) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    dtype TEXT,
    shape TEXT,
    spacing TEXT,
    bytes INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX artifacts_path ON artifacts(path);
CREATE INDEX artifacts_study ON artifacts(study_uid);
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    command TEXT,
    petcorpus_version TEXT,
    python_version TEXT,
    options TEXT,
    counts TEXT
);
CREATE TABLE failures (
    failure_id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(run_id),
    study_uid TEXT,
    stage TEXT NOT NULL,
    error_class TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    path TEXT,
    created TEXT NOT NULL
);
CREATE INDEX failures_study ON failures(study_uid);
"""

#: Quality control (``petcorpus qc``): one row per checked case, one per flag (with its
#: picture, a PNG). A script of its own so that its version number below can change (e.g.
#: when another migration lands first) without touching it; readers test for the tables,
#: not for a version.
_QC_TABLES = """
CREATE TABLE qc_studies (
    case_key TEXT PRIMARY KEY,
    study_uid TEXT REFERENCES studies(study_uid) ON DELETE CASCADE,
    run_id INTEGER REFERENCES runs(run_id),
    flagged INTEGER NOT NULL,
    measures TEXT NOT NULL,
    checked TEXT NOT NULL
);
CREATE TABLE qc_flags (
    flag_id INTEGER PRIMARY KEY,
    case_key TEXT NOT NULL REFERENCES qc_studies(case_key) ON DELETE CASCADE,
    check_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    value REAL,
    picture BLOB
);
CREATE INDEX qc_flags_case ON qc_flags(case_key);
"""

#: Version → the script that brings a catalog of the version before it up to it.
_MIGRATIONS = {
    2: """
CREATE TABLE splits (
    subject_id TEXT PRIMARY KEY REFERENCES subjects(subject_id) ON DELETE CASCADE,
    fold INTEGER,
    is_test INTEGER NOT NULL DEFAULT 0
);
""",
    # The scan cache (what the plan needs of each file and series, keyed by path, size and
    # mtime, so a re-run parses no unchanged header) and each converted study's inputs.
    3: """
CREATE TABLE IF NOT EXISTS scan_files (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    study_uid TEXT,
    series_uid TEXT,
    x REAL,
    y REAL,
    z REAL,
    orientation TEXT,
    instance REAL,
    acquisition TEXT,
    skip TEXT,
    PRIMARY KEY (folder, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_series (
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (study_uid, series_uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS study_inputs (
    study_uid TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
""",
    4: _QC_TABLES,
    # Each artifact's mtime as written: a re-run trusts a file whose size and mtime are
    # those recorded (and whose study's inputs are unchanged) without re-hashing it.
    5: """
ALTER TABLE artifacts ADD COLUMN mtime_ns INTEGER;
""",
}
