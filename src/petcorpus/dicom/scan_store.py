"""One scan's files, staged in SQLite, so that no list of them is held in memory.

The scan writes one row per file it walks (the file's keys, from its header or from the
cache, or why it was skipped) into a TEMP table of a SQLite connection, and reads the
studies back one at a time, their files ordered by series and walk order. During a build
the connection is the catalog's: the scan cache of the last run (tables ``scan_files`` and
``scan_series``, see :mod:`petcorpus.catalog.schema`) is read folder by folder, and written
back from the staged rows with SQL, never through Python lists. A standalone
:func:`~petcorpus.dicom.scan.scan` stages into an in-memory database with no cache.

So the driver's memory does not grow with the tree: a temp table spills to a temp file as
SQLite's page cache fills (2 MB by default), and what the plan keeps per study is its UID,
its name and its number of files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["CachedFile", "ScanStore", "StagedFile", "parent_folder", "path_key", "path_text"]

#: One cached file: size, mtime_ns, study_uid, series_uid, x, y, z, orientation (JSON),
#: instance, acquisition, skip reason (the UIDs are None for a skipped file).
CachedFile = tuple[
    int,
    int,
    str | None,
    str | None,
    float | None,
    float | None,
    float | None,
    str | None,
    float | None,
    str | None,
    str | None,
]

#: One staged file: walk ordinal, folder (relative to the root, ``/``-separated), name,
#: size, mtime_ns, *the CachedFile keys from study_uid on*, parsed by this scan (0/1),
#: storable in the cache (0/1).
StagedFile = tuple[Any, ...]


def path_key(name: str) -> bytes:
    """A file or folder name as stored: its bytes, so that names that are not UTF-8
    (Python's surrogate escapes) are stored and compared like any other."""
    return name.encode("utf-8", "surrogateescape")


def path_text(stored: bytes | str) -> str:
    """:func:`path_key` undone (a ``str`` from a cache written before is returned as is)."""
    return stored.decode("utf-8", "surrogateescape") if isinstance(stored, bytes) else stored


def parent_folder(folder: str) -> str | None:
    """The parent of a folder relative to the root (``/``-separated, ``""`` for the root);
    None for the root's own parent, outside the tree."""
    if not folder:
        return None
    cut = folder.rfind("/")
    return folder[:cut] if cut >= 0 else ""


class ScanStore:
    """The staged files of one scan on ``conn`` (and the cache when ``cache`` is true).

    Parameters
    ----------
    conn : sqlite3.Connection
        The catalog's connection during a build; any connection (``:memory:``) otherwise.
    cache : bool
        Read the last scan's cache from ``scan_files``/``scan_series`` and write it back
        (:meth:`write_cache`); false for a connection without those tables.
    """

    def __init__(self, conn: sqlite3.Connection, *, cache: bool) -> None:
        self._conn = conn
        self._cache = cache
        self._indexed = False
        for sql in (
            "DROP TABLE IF EXISTS temp.scan_staged",
            "DROP TABLE IF EXISTS temp.scan_staged_series",
            # INTEGER PRIMARY KEY: rows are stored in walk order, the rowid is the ordinal
            "CREATE TEMP TABLE scan_staged (ordinal INTEGER PRIMARY KEY, folder BLOB, "
            "name BLOB, size INTEGER, mtime_ns INTEGER, study_uid TEXT, series_uid TEXT, "
            "x REAL, y REAL, z REAL, orientation TEXT, instance REAL, acquisition TEXT, "
            "skip TEXT, parsed INTEGER, cacheable INTEGER, parent BLOB)",
            "CREATE TEMP TABLE scan_staged_series (study_uid TEXT, series_uid TEXT, "
            "fingerprint TEXT, summary TEXT, PRIMARY KEY (study_uid, series_uid)) WITHOUT ROWID",
        ):
            conn.execute(sql)

    # -- the last scan's cache -------------------------------------------------------------
    def cached_folders(self) -> set[str]:
        """Folders (relative, ``""`` for the root) with cached files."""
        if not self._cache:
            return set()
        rows = self._plain("SELECT DISTINCT folder FROM scan_files")
        return {path_text(r[0]) for r in rows}

    def cached_files(self, folder: str) -> dict[str, CachedFile]:
        """The cached files of one folder: name → row."""
        if not self._cache:
            return {}
        rows = self._plain(
            "SELECT name, size, mtime_ns, study_uid, series_uid, x, y, z, orientation, "
            "instance, acquisition, skip FROM scan_files WHERE folder = ?",
            (path_key(folder),),
        )
        return {path_text(r[0]): r[1:] for r in rows}

    def summary(self, study_uid: str, series_uid: str, fingerprint: str) -> dict[str, Any] | None:
        """A series' summary with this fingerprint: from this scan, else the last one (then
        kept for this scan's cache too)."""
        key = (study_uid, series_uid, fingerprint)
        where = "WHERE study_uid = ? AND series_uid = ? AND fingerprint = ?"
        row = self._plain(f"SELECT summary FROM temp.scan_staged_series {where}", key).fetchone()
        if row is None and self._cache:
            row = self._plain(f"SELECT summary FROM scan_series {where}", key).fetchone()
            if row is not None:
                self._conn.execute(
                    "INSERT OR REPLACE INTO temp.scan_staged_series VALUES (?, ?, ?, ?)",
                    (*key, row[0]),
                )
        return None if row is None else dict(json.loads(row[0]))

    def put_summary(
        self, study_uid: str, series_uid: str, fingerprint: str, summary: dict[str, Any]
    ) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO temp.scan_staged_series VALUES (?, ?, ?, ?)",
            (study_uid, series_uid, fingerprint, json.dumps(summary)),
        )

    # -- staging ---------------------------------------------------------------------------
    def stage(self, rows: Iterable[StagedFile]) -> None:
        """Add files (ordinal, folder, name, size, mtime_ns, keys..., parsed, cacheable)."""
        self._conn.executemany(
            "INSERT INTO temp.scan_staged VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((r[0], path_key(r[1]), path_key(r[2]), *r[3:], _parent_key(r[1])) for r in rows),
        )

    def folders_with_skipped_beside(self, folders: set[str]) -> list[str]:
        """Folders holding skipped files whose parent is the parent of one of ``folders``
        (siblings of a series' folder), ``folders`` themselves left out."""
        self._index()
        parents = sorted({p for f in folders if (p := parent_folder(f)) is not None})
        found: list[str] = []
        for parent in parents:
            rows = self._plain(
                "SELECT DISTINCT folder FROM temp.scan_staged WHERE skip IS NOT NULL "
                "AND parent = ?",
                (path_key(parent),),
            )
            found += (f for r in rows if (f := path_text(r[0])) not in folders)
        return found

    def _index(self) -> None:
        if self._indexed:
            return
        for sql in (
            "CREATE INDEX temp.scan_staged_by_series ON scan_staged "
            "(study_uid, series_uid, ordinal) WHERE skip IS NULL",
            "CREATE INDEX temp.scan_staged_skipped ON scan_staged (folder) WHERE skip IS NOT NULL",
            "CREATE INDEX temp.scan_staged_skipped_parent ON scan_staged (parent) "
            "WHERE skip IS NOT NULL",
        ):
            self._conn.execute(sql)
        self._indexed = True

    # -- reading back ----------------------------------------------------------------------
    def studies(self) -> list[tuple[str, int]]:
        """(StudyInstanceUID, number of files) of every study, sorted by UID."""
        self._index()
        rows = self._plain(
            "SELECT study_uid, count(*) FROM temp.scan_staged WHERE skip IS NULL "
            "GROUP BY study_uid ORDER BY study_uid"
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    def files_of(self, study_uid: str) -> Iterator[tuple[Any, ...]]:
        """The study's files by series UID, then walk order: (series_uid, folder, name,
        size, mtime_ns, ordinal, x, y, z, orientation, instance, acquisition)."""
        self._index()
        return self._plain(
            "SELECT series_uid, folder, name, size, mtime_ns, ordinal, x, y, z, orientation, "
            "instance, acquisition FROM temp.scan_staged "
            "WHERE skip IS NULL AND study_uid = ? ORDER BY series_uid, ordinal",
            (study_uid,),
        )

    def skipped(self) -> Iterator[tuple[str, str, str]]:
        """(folder, name, reason) of every skipped file, in walk order."""
        rows = self._plain(
            "SELECT folder, name, skip FROM temp.scan_staged WHERE skip IS NOT NULL "
            "ORDER BY ordinal"
        )
        return ((path_text(r[0]), path_text(r[1]), str(r[2])) for r in rows)

    def skipped_in(self, folder: str) -> list[tuple[str, str]]:
        """(name, reason) of the skipped files of one folder, in walk order."""
        self._index()
        rows = self._plain(
            "SELECT name, skip FROM temp.scan_staged WHERE skip IS NOT NULL AND folder = ? "
            "ORDER BY ordinal",
            (path_key(folder),),
        )
        return [(path_text(r[0]), str(r[1])) for r in rows]

    def n_parsed(self) -> int:
        """Files whose header this scan parsed (not taken from the cache)."""
        return int(self._plain("SELECT count(*) FROM temp.scan_staged WHERE parsed").fetchone()[0])

    # -- writing the cache back ----------------------------------------------------------
    def write_cache(self) -> None:
        """The cache becomes this scan: rows of the files parsed, no row of a file or series
        gone (the caller commits, with the plan's other writes)."""
        if not self._cache:
            return
        c = self._conn
        c.execute(
            "CREATE INDEX IF NOT EXISTS temp.scan_staged_by_path ON scan_staged (folder, name)"
        )
        c.execute(
            "DELETE FROM scan_files WHERE NOT EXISTS (SELECT 1 FROM temp.scan_staged s "
            "WHERE s.folder = scan_files.folder AND s.name = scan_files.name)"
        )
        c.execute(
            "INSERT OR REPLACE INTO scan_files SELECT folder, name, size, mtime_ns, "
            "study_uid, series_uid, x, y, z, orientation, instance, acquisition, skip "
            "FROM temp.scan_staged WHERE parsed AND cacheable AND size IS NOT NULL"
        )
        c.execute("DELETE FROM scan_series")
        c.execute("INSERT INTO scan_series SELECT * FROM temp.scan_staged_series")

    def _plain(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.row_factory = None  # plain tuples (the catalog's connection makes Rows)
        return cur.execute(sql, params)


def _parent_key(folder: str) -> bytes | None:
    """The stored parent of a folder (NULL for the root's: no folder of the tree)."""
    parent = parent_folder(folder)
    return None if parent is None else path_key(parent)
