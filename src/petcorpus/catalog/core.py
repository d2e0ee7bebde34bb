"""The :class:`Catalog`: open, migrate, and record what a build saw and made."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from petcorpus.catalog.reads import CatalogReads
from petcorpus.catalog.records import (
    ArtifactRecord,
    FailureRecord,
    VerifyReport,
    _check,
    _now,
    _row_to_record,
    _version,
    artifact_record,
)
from petcorpus.catalog.schema import (
    _MIGRATIONS,
    _SCHEMA,
    _SQLITE_CORRUPT,
    CATALOG_NAME,
    SCHEMA_VERSION,
)
from petcorpus.errors import PetcorpusError, Reason, UnsupportedError

__all__ = ["Catalog", "verify"]

log = logging.getLogger(__name__)


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


class Catalog(CatalogReads):
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
                    "spacing, bytes, created, mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        rec.mtime_ns,
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

    def record_splits(self, folds: Mapping[str, int | None]) -> None:
        """Replace the stored split: subject → fold (``None``: the test set)."""
        with self.transaction():
            self._conn.execute("DELETE FROM splits")
            self._conn.executemany(
                "INSERT INTO splits(subject_id, fold, is_test) VALUES (?, ?, ?)",
                [(s, f, int(f is None)) for s, f in sorted(folds.items())],
            )

    def record_input_fingerprint(self, study_uid: str, fingerprint: str | None) -> None:
        """Record the inputs a study was converted from (None forgets them)."""
        with self.transaction():
            if fingerprint is None:
                self._conn.execute("DELETE FROM study_inputs WHERE study_uid = ?", (study_uid,))
            else:
                self._conn.execute(
                    "INSERT OR REPLACE INTO study_inputs VALUES (?, ?)", (study_uid, fingerprint)
                )

    def record_qc(self, studies: Iterable[Any], run_id: int | None = None) -> int:
        """Replace the stored quality control with ``studies`` (one transaction).

        Each item is a mapping or an object with ``key`` (the case key), ``study_uid``
        (None when unknown or not in the catalog), ``measures`` (a mapping, stored as
        JSON) and ``flags`` (items with ``check``, ``reason``, ``message``, ``value`` and
        ``picture``, PNG bytes or None). Returns the number of cases recorded.
        """
        known = {str(r[0]) for r in self._conn.execute("SELECT study_uid FROM studies")}
        checked = _now()
        n = 0
        with self.transaction():
            self._conn.execute("DELETE FROM qc_flags")
            self._conn.execute("DELETE FROM qc_studies")
            for st in studies:
                key = str(_attr(st, "key"))
                uid = _attr(st, "study_uid")
                flags = list(_attr(st, "flags") or ())
                self._conn.execute(
                    "INSERT INTO qc_studies VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        uid if uid in known else None,
                        run_id,
                        int(bool(flags)),
                        json.dumps(dict(_attr(st, "measures") or {}), sort_keys=True,
                                   default=str, allow_nan=True),
                        checked,
                    ),
                )  # fmt: skip
                self._conn.executemany(
                    "INSERT INTO qc_flags(case_key, check_name, reason, message, value, "
                    "picture) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (key, str(_attr(f, "check")), str(_attr(f, "reason")),
                         str(_attr(f, "message")), _attr(f, "value"), _attr(f, "picture"))
                        for f in flags
                    ],
                )  # fmt: skip
                n += 1
        return n

    # -- checks -------------------------------------------------------------------------------
    def is_complete(
        self,
        study_uid: str,
        kinds: Iterable[str] | None = None,
        *,
        rehash: bool = True,
        trust_mtime: bool = False,
    ) -> bool:
        """The resume check: the study has artifacts and every file exists with its checksum.

        Parameters
        ----------
        kinds : iterable of str, optional
            Artifact kinds that must all be catalogued (e.g. ``CT PET SUV CTres SEG``).
        rehash : bool
            Re-hash each file (default); False compares sizes only.
        trust_mtime : bool
            A file whose size and modification time are those recorded is not re-hashed
            (what a build does for a study whose inputs are unchanged: a re-run then reads
            no output; ``petcorpus catalog verify`` still re-hashes everything).
        """
        records = self.artifacts(study_uid)
        if not records:
            return False
        if kinds is not None and not set(kinds) <= {r.kind for r in records}:
            return False
        return all(_check(self.out_dir, r, rehash, trust_mtime) is None for r in records)

    def record_mtimes(self, study_uid: str) -> None:
        """Record the current mtime of the study's artifacts where it differs from the one
        recorded (none in catalogs of an older petcorpus, or a file touched since): call it
        right after :meth:`is_complete` found them intact, so the next check trusts them."""
        rows = self._conn.execute(
            "SELECT artifact_id, path, mtime_ns FROM artifacts WHERE study_uid = ?",
            (study_uid,),
        ).fetchall()
        with self.transaction():
            for artifact_id, path, recorded in rows:
                with suppress(OSError):
                    mtime = (self.out_dir / path).stat().st_mtime_ns
                    if mtime != recorded:
                        self._conn.execute(
                            "UPDATE artifacts SET mtime_ns = ? WHERE artifact_id = ?",
                            (mtime, artifact_id),
                        )

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


def verify(out_dir: str | os.PathLike[str], *, rehash: bool = True) -> VerifyReport:
    """Re-hash every artifact catalogued in ``out_dir`` (see :meth:`Catalog.verify`)."""
    with Catalog.open(out_dir, create=False) as cat:
        return cat.verify(rehash=rehash)
