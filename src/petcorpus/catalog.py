"""The corpus catalog: one SQLite file, ``OUT/catalog.sqlite``, owned by the driver.

The catalog records what a build saw and made: subjects, studies, series and their
acquisition parameters, the artifacts written (path relative to ``OUT``, sha256, dtype,
shape, spacing, bytes), every run (command line, versions, options, counts) and every
failure (study, stage, error class, reason code, message).

Only the process that drives a build writes it. Workers compute plain, picklable results
(:class:`ArtifactRecord` via :func:`artifact_record`, :class:`FailureRecord` via
:meth:`FailureRecord.from_exception`) and return them; the driver records them in one
transaction per study. The schema is versioned (``PRAGMA user_version`` and the ``meta``
table); the database runs in WAL mode with foreign keys on.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as out, Catalog.open(out) as cat:
...     cat.record_subject("PETCT_0000000001", sex="F", age=54, diagnosis="NEGATIVE")
...     cat.record_study("1.2.3", subject_id="PETCT_0000000001", study_date="2026-01-02")
...     int(cat.query("SELECT count(*) AS n FROM studies")["n"][0])
1
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import sqlite3
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from petcorpus.errors import CorruptFileError, PetcorpusError, Reason, UnsupportedError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CATALOG_NAME",
    "SCHEMA_VERSION",
    "ArtifactRecord",
    "Catalog",
    "FailureRecord",
    "VerifyIssue",
    "VerifyReport",
    "artifact_record",
    "hash_file",
    "verify",
]

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
# SQLite result codes of a file that is not (or no longer) a database: SQLITE_CORRUPT, NOTADB.
_SQLITE_CORRUPT = frozenset({11, 26})
#: Bumped whenever a table or column changes; :meth:`Catalog.open` refuses newer files.
SCHEMA_VERSION = 2

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

#: Version → the script that brings a catalog of the version before it up to it.
_MIGRATIONS = {
    2: """
CREATE TABLE splits (
    subject_id TEXT PRIMARY KEY REFERENCES subjects(subject_id) ON DELETE CASCADE,
    fold INTEGER,
    is_test INTEGER NOT NULL DEFAULT 0
);
""",
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version() -> str:
    from petcorpus import __version__

    return __version__


def hash_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (:func:`hashlib.file_digest`).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "x"); _ = p.write_bytes(b"abc")
    ...     hash_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One file a build wrote: what the catalog stores about it.

    Picklable, so a worker can compute it (hashing in the worker's process) and return it.

    Attributes
    ----------
    kind : str
        ``CT``, ``PET``, ``SUV``, ``CTres``, ``SEG``, ``HDF5``, ``sidecar`` ...
    path : str
        POSIX path relative to the output folder.
    sha256 : str
        Hex digest of the file's bytes.
    bytes : int
        File size.
    dtype : str or None
        Voxel dtype (numpy name) for images.
    shape, spacing : tuple or None
        Voxel grid (I, J, K) and voxel size in mm, for images.
    """

    kind: str
    path: str
    sha256: str
    bytes: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None


def artifact_record(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    dtype: str | None = None,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    sha256: str | None = None,
) -> ArtifactRecord:
    """Hash ``path`` and describe it relative to ``out_dir``.

    A ``sha256`` computed while the file was written (see
    :func:`petcorpus.nifti.write_nifti_sha256`) spares reading it back.

    For NIfTI files the dtype, shape and spacing are read from the header (no voxel data)
    unless given.

    Raises
    ------
    PetcorpusError
        If ``path`` is not inside ``out_dir`` (reason ``INVALID_VALUE``).
    """
    p = Path(path).resolve()
    root = Path(out_dir).resolve()
    try:
        rel = p.relative_to(root).as_posix()
    except ValueError:
        raise PetcorpusError(f"artifact is not inside the output folder {root}", path=p) from None
    if dtype is None and p.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            img = cast("nib.Nifti1Image", nib.load(p))
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            raise CorruptFileError(f"not a readable NIfTI file: {exc}", path=p) from exc
        hdr = img.header
        dtype = str(hdr.get_data_dtype().newbyteorder("="))
        shape = tuple(int(s) for s in img.shape) if shape is None else shape
        spacing = tuple(float(z) for z in hdr.get_zooms()[:3]) if spacing is None else spacing
    return ArtifactRecord(
        kind=kind,
        path=rel,
        sha256=sha256 or hash_file(p),
        bytes=p.stat().st_size,
        dtype=None if dtype is None else str(dtype),
        shape=None if shape is None else tuple(int(s) for s in shape),
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
    )


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """A failed stage of one study, as plain data a worker can return instead of raising."""

    study_uid: str | None
    stage: str
    error_class: str
    reason: str
    message: str
    path: str | None = None

    @classmethod
    def from_exception(
        cls, study_uid: str | None, stage: str, exc: BaseException
    ) -> FailureRecord:
        """Summarise ``exc``; reason is the PetcorpusError's code, else ``UNEXPECTED``.

        A wrapped error is judged by its innermost cause: the deepest PetcorpusError along
        ``__cause__`` (and ``__context__``, unless suppressed with ``from None``) gives the
        reason, the path and the message, whatever wraps it.
        """
        inner: PetcorpusError | None = None
        seen: set[int] = set()
        cur: BaseException | None = exc
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            if isinstance(cur, PetcorpusError):
                inner = cur
            cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
        if inner is not None:
            exc = inner
            reason, path, msg = str(inner.reason), inner.path, inner.message
        else:
            reason, path = "UNEXPECTED", None
            msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return cls(
            study_uid=study_uid,
            stage=stage,
            error_class=type(exc).__name__,
            reason=reason,
            message=str(msg).splitlines()[0] if msg else type(exc).__name__,
            path=path,
        )


@dataclasses.dataclass(frozen=True)
class VerifyIssue:
    """One artifact that failed verification."""

    study_uid: str | None
    kind: str
    path: str
    problem: str  # "missing", "size", "sha256"
    expected: str
    actual: str


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """Result of re-hashing every catalogued artifact."""

    checked: int
    issues: tuple[VerifyIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def missing(self) -> tuple[VerifyIssue, ...]:
        return tuple(i for i in self.issues if i.problem == "missing")

    @property
    def mismatched(self) -> tuple[VerifyIssue, ...]:
        return tuple(i for i in self.issues if i.problem != "missing")


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _param_values(value: Any) -> tuple[str | None, float | None]:
    """Store a parameter as text (JSON for sequences) and, when numeric, as a REAL too."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return str(value), float(value)
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value), float(value)
    if isinstance(value, str):
        try:
            return value, float(value)
        except ValueError:
            return value, None
    if isinstance(value, Sequence):
        items = [float(v) if _is_number(v) else str(v) for v in value]
        return json.dumps(items), None
    return str(value), None


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


class Catalog:
    """The SQLite catalog of one output folder. Use :meth:`open`; close it (or use ``with``).

    Parameters
    ----------
    out_dir : path
        The corpus folder; the database is ``out_dir / "catalog.sqlite"``.
    conn : sqlite3.Connection
        An open connection (made by :meth:`open`).
    """

    def __init__(self, out_dir: Path, conn: sqlite3.Connection, *, readonly: bool) -> None:
        self.out_dir = out_dir
        self._conn = conn
        self.readonly = readonly
        self._depth = 0

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls, out_dir: str | os.PathLike[str], *, create: bool = True, readonly: bool = False
    ) -> Catalog:
        """Open (and with ``create``, create) ``out_dir/catalog.sqlite``.

        Raises
        ------
        PetcorpusError
            There is no catalog and ``create`` is false (or ``readonly`` is true).
        UnsupportedError
            The file was made by a newer petcorpus (its schema version is higher).
        PetcorpusError
            SQLite cannot open or set up the file (not writable, not a database, a
            folder, a full disk); the message names the file and SQLite's reason.
        """
        out = Path(out_dir)
        db = out / CATALOG_NAME
        if not db.exists():
            if not create or readonly:
                raise PetcorpusError(
                    "no catalog here; run `petcorpus build` first or check the folder", path=db
                )
            out.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            else:
                conn = sqlite3.connect(db, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            cat = cls(out, conn, readonly=readonly)
            cat._ensure_schema(db)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            unreadable = readonly or getattr(exc, "sqlite_errorcode", None) in _SQLITE_CORRUPT
            raise PetcorpusError(
                f"cannot open the catalog ({exc}); check that the file is a petcorpus "
                "catalog and that its folder is writable, with free space",
                path=db,
                reason=Reason.CORRUPT_FILE if unreadable else Reason.OUTPUT_PATH,
            ) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cat

    def _ensure_schema(self, db: Path) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise UnsupportedError(
                f"catalog schema version {version} is newer than this petcorpus supports "
                f"({SCHEMA_VERSION}); upgrade petcorpus",
                path=db,
            )
        if version == 0:
            if self.readonly:
                raise PetcorpusError("the catalog is empty (no schema)", path=db)
            with self._conn:
                self._conn.executescript(
                    "BEGIN;"
                    + _SCHEMA
                    + "".join(_MIGRATIONS.values())
                    + f"PRAGMA user_version = {SCHEMA_VERSION};"
                )
                self._conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created", _now()),
                        ("created_by", f"petcorpus {_version()}"),
                    ],
                )
            return
        if self.readonly:
            return  # an older catalog reads as it is; what it lacks reads as empty
        with self._conn:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                self._conn.executescript(
                    "BEGIN;" + _MIGRATIONS[target] + f"PRAGMA user_version = {target};"
                )
            self._conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        log.info("catalog %s migrated from schema %d to %d", db, version, SCHEMA_VERSION)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.out_dir / CATALOG_NAME

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group several ``record_*`` calls into one atomic commit (nesting is allowed)."""
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self._conn:
                yield self._conn
        finally:
            self._depth = 0

    # -- recording ----------------------------------------------------------------------------
    def record_subject(
        self,
        subject_id: str,
        *,
        sex: str | None = None,
        age: int | None = None,
        diagnosis: str | None = None,
        site: str | None = None,
        licence: str | None = None,
    ) -> None:
        """Insert or update a subject; ``None`` keeps the stored value."""
        with self.transaction():
            self._conn.execute(
                """INSERT INTO subjects VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(subject_id) DO UPDATE SET
                  sex = coalesce(excluded.sex, sex), age = coalesce(excluded.age, age),
                  diagnosis = coalesce(excluded.diagnosis, diagnosis),
                  site = coalesce(excluded.site, site),
                  licence = coalesce(excluded.licence, licence)""",
                (subject_id, sex, age, diagnosis, site, licence),
            )

    def record_study(
        self,
        study_uid: str,
        *,
        subject_id: str,
        study_date: str | None = None,
        diagnosis: str | None = None,
        status: str | None = None,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        """Insert or update a study (the subject row is created if absent).

        ``study_date`` is ISO ``YYYY-MM-DD``; ``None`` arguments keep stored values; a new
        study starts with status ``scanned``.
        """
        with self.transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO subjects(subject_id) VALUES (?)", (subject_id,)
            )
            self._conn.execute(
                """INSERT INTO studies VALUES (?, ?, ?, ?, coalesce(?, 'scanned'), ?, ?)
                ON CONFLICT(study_uid) DO UPDATE SET
                  subject_id = excluded.subject_id,
                  study_date = coalesce(excluded.study_date, study_date),
                  diagnosis = coalesce(excluded.diagnosis, diagnosis),
                  status = coalesce(?, status),
                  source = coalesce(excluded.source, source), updated = excluded.updated""",
                (
                    study_uid,
                    subject_id,
                    study_date,
                    diagnosis,
                    status,
                    None if source is None else str(source),
                    _now(),
                    status,
                ),
            )

    def set_status(self, study_uid: str, status: str) -> None:
        """Set a study's status (``scanned``, ``done``, ``failed``, ...)."""
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE studies SET status = ?, updated = ? WHERE study_uid = ?",
                (status, _now(), study_uid),
            )
        if cur.rowcount == 0:
            raise PetcorpusError(f"study {study_uid} is not in the catalog", path=self.path)

    def record_series(self, series_infos: Iterable[Any]) -> int:
        """Insert or replace series and their acquisition parameters.

        Each item is a mapping or any object with the attributes ``series_uid``,
        ``study_uid``, ``modality``, ``manufacturer``, ``model``, ``files`` (a count or a
        sequence of paths), ``frame_of_reference_uid``, ``description`` and ``params`` (a
        mapping name → value). If the study is not yet catalogued, the item must also give
        ``subject_id`` (else the study is unknown and an error is raised).

        Returns
        -------
        int
            Number of series recorded.
        """
        n = 0
        with self.transaction():
            for info in series_infos:
                study_uid = _attr(info, "study_uid")
                known = self._conn.execute(
                    "SELECT 1 FROM studies WHERE study_uid = ?", (study_uid,)
                ).fetchone()
                if known is None:
                    subject = _attr(info, "subject_id")
                    if subject is None:
                        raise PetcorpusError(
                            f"series {_attr(info, 'series_uid')} belongs to study {study_uid}, "
                            "which is not catalogued; record_study() it first",
                            path=self.path,
                        )
                    self._conn.execute(
                        "INSERT OR IGNORE INTO subjects(subject_id) VALUES (?)", (subject,)
                    )
                    self._conn.execute(
                        "INSERT INTO studies(study_uid, subject_id, updated) VALUES (?, ?, ?)",
                        (study_uid, subject, _now()),
                    )
                files = _attr(info, "files", _attr(info, "n_files"))
                n_files = (
                    None if files is None else files if isinstance(files, int) else len(files)
                )
                uid = _attr(info, "series_uid")
                self._conn.execute("DELETE FROM series WHERE series_uid = ?", (uid,))
                self._conn.execute(
                    "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        uid,
                        study_uid,
                        _attr(info, "modality"),
                        _attr(info, "manufacturer"),
                        _attr(info, "model"),
                        n_files,
                        _attr(info, "frame_of_reference_uid"),
                        _attr(info, "description"),
                    ),
                )
                params = _attr(info, "params") or {}
                self._conn.executemany(
                    "INSERT INTO params VALUES (?, ?, ?, ?)",
                    [(uid, str(k), *_param_values(v)) for k, v in params.items()],
                )
                n += 1
        return n

    def record_artifacts(
        self,
        study_uid: str | None,
        artifacts: Iterable[ArtifactRecord] | Mapping[str, str | os.PathLike[str]],
    ) -> list[ArtifactRecord]:
        """Record the files of one study (``None``: corpus-level files such as an HDF5).

        ``artifacts`` are :class:`ArtifactRecord` s (computed by a worker) or a mapping
        kind → path, which is hashed here. A record replaces any earlier one of the same
        path and any earlier one of the same study and kind.
        """
        if isinstance(artifacts, Mapping):
            records = [artifact_record(p, self.out_dir, k) for k, p in artifacts.items()]
        else:
            records = list(artifacts)
        created = _now()
        with self.transaction():
            for rec in records:
                self._conn.execute(
                    "DELETE FROM artifacts WHERE path = ? OR (study_uid IS ? AND kind = ?)",
                    (rec.path, study_uid, rec.kind),
                )
                self._conn.execute(
                    "INSERT INTO artifacts(study_uid, kind, path, sha256, dtype, shape, "
                    "spacing, bytes, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        study_uid,
                        rec.kind,
                        rec.path,
                        rec.sha256,
                        rec.dtype,
                        None if rec.shape is None else json.dumps(list(rec.shape)),
                        None if rec.spacing is None else json.dumps(list(rec.spacing)),
                        rec.bytes,
                        created,
                    ),
                )
        return records

    def artifacts(self, study_uid: str | None = None) -> list[ArtifactRecord]:
        """Artifacts of one study, or of all studies when ``study_uid`` is None."""
        sql = "SELECT * FROM artifacts"
        args: tuple[Any, ...] = ()
        if study_uid is not None:
            sql += " WHERE study_uid = ?"
            args = (study_uid,)
        return [_row_to_record(r) for r in self._conn.execute(sql + " ORDER BY path", args)]

    def record_failure(
        self,
        run_id: int | None,
        study_uid: str | None,
        stage: str,
        exc: BaseException | FailureRecord,
    ) -> FailureRecord:
        """Record a failure (an exception, or a :class:`FailureRecord` from a worker).

        The study (if catalogued) is marked ``failed``.
        """
        rec = (
            exc
            if isinstance(exc, FailureRecord)
            else FailureRecord.from_exception(study_uid, stage, exc)
        )
        with self.transaction():
            self._conn.execute(
                "INSERT INTO failures(run_id, study_uid, stage, error_class, reason, message, "
                "path, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    study_uid,
                    stage,
                    rec.error_class,
                    rec.reason,
                    rec.message,
                    rec.path,
                    _now(),
                ),
            )
            if study_uid is not None:
                self._conn.execute(
                    "UPDATE studies SET status = 'failed', updated = ? WHERE study_uid = ?",
                    (_now(), study_uid),
                )
        return rec

    def start_run(
        self, command: Sequence[str] | str | None = None, options: Mapping[str, Any] | None = None
    ) -> int:
        """Open a run row (versions, command line, options as JSON); returns its ``run_id``."""
        cmd = command if isinstance(command, str) or command is None else " ".join(command)
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO runs(started, command, petcorpus_version, python_version, options) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    _now(),
                    cmd,
                    _version(),
                    platform.python_version(),
                    json.dumps(dict(options or {}), sort_keys=True, default=str),
                ),
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, counts: Mapping[str, int] | None = None) -> None:
        """Close a run with its counts (e.g. ``{"done": 5, "skipped": 1, "failed": 1}``)."""
        with self.transaction():
            self._conn.execute(
                "UPDATE runs SET finished = ?, counts = ? WHERE run_id = ?",
                (_now(), json.dumps(dict(counts or {}), sort_keys=True), run_id),
            )

    # -- checks -------------------------------------------------------------------------------
    def is_complete(
        self,
        study_uid: str,
        kinds: Iterable[str] | None = None,
        *,
        rehash: bool = True,
    ) -> bool:
        """The resume check: the study has artifacts and every file exists with its checksum.

        Parameters
        ----------
        kinds : iterable of str, optional
            Artifact kinds that must all be catalogued (e.g. ``CT PET SUV CTres SEG``).
        rehash : bool
            Re-hash each file (default); False compares sizes only.
        """
        records = self.artifacts(study_uid)
        if not records:
            return False
        if kinds is not None and not set(kinds) <= {r.kind for r in records}:
            return False
        return all(_check(self.out_dir, r, rehash) is None for r in records)

    def verify(self, *, rehash: bool = True) -> VerifyReport:
        """Re-hash every catalogued artifact; report missing files and mismatches."""
        rows = list(self._conn.execute("SELECT * FROM artifacts ORDER BY path"))
        issues = []
        for row in rows:
            problem = _check(self.out_dir, _row_to_record(row), rehash)
            if problem is not None:
                issues.append(dataclasses.replace(problem, study_uid=row["study_uid"]))
        return VerifyReport(checked=len(rows), issues=tuple(issues))

    # -- reading ------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
        """Run one SQL statement and return its rows as a pandas DataFrame."""
        import pandas as pd

        try:
            cur = self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise PetcorpusError(f"SQL error: {exc}", path=self.path) from exc
        cols = [d[0] for d in cur.description or ()]
        return pd.DataFrame([tuple(r) for r in cur.fetchall()], columns=cols)

    def subject_attributes(self) -> pd.DataFrame:
        """One row per subject with converted or catalogued studies: ``subject_id``,
        ``n_studies``, ``diagnosis``, ``site``, ``tracer`` (the PET's normalised ``Tracer``,
        e.g. FDG or PSMA, else its Radiopharmaceutical);
        a subject's differing values are joined with ``+`` in sorted order."""
        return self.query(
            """SELECT su.subject_id,
                      count(DISTINCT st.study_uid) AS n_studies,
                      coalesce(su.diagnosis, (SELECT group_concat(d, '+') FROM (
                          SELECT DISTINCT s2.diagnosis AS d FROM studies s2
                          WHERE s2.subject_id = su.subject_id AND s2.diagnosis IS NOT NULL
                          ORDER BY d))) AS diagnosis,
                      su.site,
                      (SELECT group_concat(t, '+') FROM (
                          SELECT DISTINCT coalesce(
                              (SELECT p.value FROM params p WHERE p.series_uid = se.series_uid
                               AND p.name = 'Tracer'),
                              (SELECT p.value FROM params p WHERE p.series_uid = se.series_uid
                               AND p.name = 'Radiopharmaceutical')) AS t
                          FROM series se JOIN studies s3 USING (study_uid)
                          WHERE s3.subject_id = su.subject_id AND se.modality = 'PT'
                            AND t IS NOT NULL ORDER BY t)) AS tracer
               FROM subjects su JOIN studies st USING (subject_id)
               GROUP BY su.subject_id ORDER BY su.subject_id"""
        )

    def record_splits(self, folds: Mapping[str, int | None]) -> None:
        """Replace the stored split: subject → fold (``None``: the test set)."""
        with self.transaction():
            self._conn.execute("DELETE FROM splits")
            self._conn.executemany(
                "INSERT INTO splits(subject_id, fold, is_test) VALUES (?, ?, ?)",
                [(s, f, int(f is None)) for s, f in sorted(folds.items())],
            )

    def splits(self) -> pd.DataFrame:
        """The stored split, one row per study: subject, study, source, fold, is_test
        (empty for a catalog without one)."""
        if self.schema_version < 2:
            return self.query(
                "SELECT NULL AS subject_id, NULL AS study_uid, NULL AS source, "
                "NULL AS fold, NULL AS is_test WHERE 0"
            )
        return self.query(
            """SELECT sp.subject_id, st.study_uid, st.source, sp.fold, sp.is_test
               FROM splits sp JOIN studies st USING (subject_id)
               ORDER BY sp.is_test, sp.fold, sp.subject_id, st.source"""
        )

    def failed_studies(self) -> pd.DataFrame:
        """Each failed study's latest failure: study folder, stage, reason, file, message."""
        return self.query(
            """SELECT st.source AS study, f.stage, f.reason, f.path AS file, f.message
               FROM failures f JOIN studies st USING (study_uid)
               WHERE st.status = 'failed'
                 AND f.failure_id = (SELECT max(failure_id) FROM failures g
                                     WHERE g.study_uid = f.study_uid)
               ORDER BY st.source"""
        )

    def skipped_files(self, run_id: int | None = None) -> pd.DataFrame:
        """Files a build's scan skipped (default: the latest run), relative to its root."""
        return self.query(
            """SELECT path AS file, message FROM failures
               WHERE study_uid IS NULL AND stage = 'scan'
                 AND run_id = coalesce(?, (SELECT max(run_id) FROM runs))
               ORDER BY path""",
            (run_id,),
        )

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of one read-only statement as plain dicts (values as SQLite stored
        them: an age stays an int, a missing value is None)."""
        try:
            return [dict(r) for r in self._conn.execute(sql)]
        except sqlite3.Error as exc:
            raise PetcorpusError(f"cannot read the catalog: {exc}", path=self.path) from exc

    def subjects_table(self) -> list[dict[str, Any]]:
        """Every subject: ``subject_id``, ``sex``, ``age``, ``diagnosis``, ``site``."""
        return self._rows(
            "SELECT subject_id, sex, age, diagnosis, site FROM subjects ORDER BY subject_id"
        )

    def studies_table(self) -> list[dict[str, Any]]:
        """Every study: ``study_uid``, ``subject_id``, ``diagnosis``, ``status`` and
        ``vendor`` (the manufacturer of its PET series, else of its first series with one)."""
        return self._rows(
            """SELECT st.study_uid, st.subject_id, st.diagnosis, st.status,
                      (SELECT se.manufacturer FROM series se
                       WHERE se.study_uid = st.study_uid AND se.manufacturer IS NOT NULL
                       ORDER BY coalesce(se.modality, 'PT') != 'PT', se.rowid
                       LIMIT 1) AS vendor
               FROM studies st ORDER BY st.study_uid"""
        )

    def failures_table(self) -> list[dict[str, Any]]:
        """Every recorded failure, oldest first: ``study_uid`` (None for a skipped file),
        ``stage``, ``error_class``, ``reason``, ``message``, ``path``."""
        return self._rows(
            "SELECT study_uid, stage, error_class, reason, message, path FROM failures "
            "ORDER BY failure_id"
        )

    def summary(self) -> dict[str, Any]:
        """Counts for ``petcorpus status``: subjects, studies by status, series by
        modality, artifacts and their bytes, failures by reason, the last run."""
        c = self._conn
        last = c.execute("SELECT * FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        return {
            "schema_version": self.schema_version,
            "subjects": c.execute("SELECT count(*) FROM subjects").fetchone()[0],
            "studies": dict(
                c.execute("SELECT status, count(*) FROM studies GROUP BY status ORDER BY status")
            ),
            "series": dict(
                c.execute(
                    "SELECT coalesce(modality, '?'), count(*) FROM series "
                    "GROUP BY modality ORDER BY modality"
                )
            ),
            "artifacts": c.execute("SELECT count(*) FROM artifacts").fetchone()[0],
            "artifact_bytes": c.execute(
                "SELECT coalesce(sum(bytes), 0) FROM artifacts"
            ).fetchone()[0],
            "failures": dict(
                c.execute(
                    "SELECT f.reason, count(*) FROM failures f JOIN studies s "
                    "USING (study_uid) WHERE s.status = 'failed' GROUP BY f.reason"
                )
            ),
            "last_run": None if last is None else dict(last),
        }


def _row_to_record(row: sqlite3.Row) -> ArtifactRecord:
    return ArtifactRecord(
        kind=row["kind"],
        path=row["path"],
        sha256=row["sha256"],
        bytes=int(row["bytes"]),
        dtype=row["dtype"],
        shape=None if row["shape"] is None else tuple(json.loads(row["shape"])),
        spacing=None if row["spacing"] is None else tuple(json.loads(row["spacing"])),
    )


def _check(out_dir: Path, rec: ArtifactRecord, rehash: bool) -> VerifyIssue | None:
    p = out_dir / rec.path
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return VerifyIssue(None, rec.kind, rec.path, "missing", rec.sha256, "")
    if size != rec.bytes:
        return VerifyIssue(None, rec.kind, rec.path, "size", str(rec.bytes), str(size))
    if rehash:
        digest = hash_file(p)
        if digest != rec.sha256:
            return VerifyIssue(None, rec.kind, rec.path, "sha256", rec.sha256, digest)
    return None


def verify(out_dir: str | os.PathLike[str], *, rehash: bool = True) -> VerifyReport:
    """Re-hash every artifact catalogued in ``out_dir`` (see :meth:`Catalog.verify`)."""
    with Catalog.open(out_dir, create=False) as cat:
        return cat.verify(rehash=rehash)
