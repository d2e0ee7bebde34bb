"""Read-only views of the catalog: the tables and summaries that commands, reports and
splits read (no SQL outside the catalog package)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petcorpus.catalog.schema import CATALOG_NAME
from petcorpus.errors import PetcorpusError

if TYPE_CHECKING:
    import pandas as pd

    from petcorpus.dicom.scan_store import ScanStore

__all__ = ["CatalogReads"]


class CatalogReads:
    """The read methods of :class:`~petcorpus.catalog.Catalog` (a mixin over its connection
    and folder)."""

    _conn: sqlite3.Connection
    out_dir: Path

    @property
    def path(self) -> Path:
        """The database file."""
        return self.out_dir / CATALOG_NAME

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
        """Run one SQL statement and return its rows as a pandas DataFrame."""
        import pandas as pd

        try:
            cur = self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise PetcorpusError(f"SQL error: {exc}", path=self.path) from exc
        cols = [d[0] for d in cur.description or ()]
        return pd.DataFrame([tuple(r) for r in cur.fetchall()], columns=cols)

    # -- the scan cache (see petcorpus.dicom.scan_cache) ---------------------------------------
    def scan_store(self) -> ScanStore:
        """Where a scan stages its files, with the scan cache of the last one (none when the
        catalog predates it); the cache is written back by the plan.

        Paths are relative to the scanned root: a tree moved elsewhere with its sizes and
        mtimes (``cp -a``, another mount point) is still known."""
        from petcorpus.dicom.scan_store import ScanStore

        return ScanStore(self._conn, cache=self.schema_version >= 3)

    def recorded_sources(self) -> dict[str, str]:
        """StudyInstanceUID → ``<subject>/<study>`` of every catalogued study with a folder."""
        rows = self._conn.execute("SELECT study_uid, source FROM studies WHERE source IS NOT NULL")
        return {str(r[0]): str(r[1]) for r in rows}

    def input_fingerprint(self, study_uid: str) -> str | None:
        """The fingerprint of the inputs a study was last converted from (None: unknown)."""
        if self.schema_version < 3:
            return None
        row = self._conn.execute(
            "SELECT fingerprint FROM study_inputs WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        return None if row is None else str(row[0])

    def subject_attributes(self) -> pd.DataFrame:
        """One row per subject with converted or catalogued studies: ``subject_id``,
        ``n_studies``, ``diagnosis``, ``site``, ``tracer`` (the PET's normalised ``Tracer``,
        e.g. FDG or PSMA, else its Radiopharmaceutical); a subject's differing values are
        joined with ``+`` in sorted order."""
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

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of one read-only statement as plain dicts (values as SQLite stored
        them: an age stays an int, a missing value is None)."""
        try:
            return [dict(r) for r in self._conn.execute(sql, params)]
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

    def licences(self) -> list[str]:
        """The distinct licences recorded for subjects, sorted (empty when none is)."""
        rows = self._rows(
            "SELECT DISTINCT licence FROM subjects WHERE licence IS NOT NULL ORDER BY licence"
        )
        return [str(r["licence"]) for r in rows]

    def series_record(self, series_uid: str) -> dict[str, Any] | None:
        """One series: ``series_uid``, ``study_uid``, ``modality``, ``manufacturer``,
        ``model``, ``description`` and ``params`` (name → the number when the value is
        numeric, else its text); None when the series is not catalogued."""
        rows = self._rows(
            "SELECT series_uid, study_uid, modality, manufacturer, model, description "
            "FROM series WHERE series_uid = ?",
            (series_uid,),
        )
        if not rows:
            return None
        params: dict[str, Any] = {}
        for r in self._rows(
            "SELECT name, value, value_num FROM params WHERE series_uid = ? ORDER BY name",
            (series_uid,),
        ):
            params[r["name"]] = r["value_num"] if r["value_num"] is not None else r["value"]
        return {**rows[0], "params": params}

    def failures_table(self) -> list[dict[str, Any]]:
        """Every recorded failure, oldest first: ``study_uid`` (None for a skipped file),
        ``stage``, ``error_class``, ``reason``, ``message``, ``path``."""
        return self._rows(
            "SELECT study_uid, stage, error_class, reason, message, path FROM failures "
            "ORDER BY failure_id"
        )

    def study_folders(self) -> list[dict[str, Any]]:
        """Every study with its output folder: ``study_uid``, ``subject_id``, ``diagnosis``
        (the study's, else the subject's), ``study_date`` and ``folder`` (the folder of its
        SUV or PET artifact relative to the corpus, e.g. ``"<subject>/<study>"``; None
        when nothing was written)."""
        rows = self._rows(
            """SELECT st.study_uid, st.subject_id,
                      coalesce(st.diagnosis, su.diagnosis) AS diagnosis, st.study_date,
                      (SELECT a.path FROM artifacts a WHERE a.study_uid = st.study_uid
                       AND a.kind IN ('SUV', 'PET') ORDER BY a.kind = 'SUV' DESC
                       LIMIT 1) AS folder
               FROM studies st LEFT JOIN subjects su USING (subject_id)
               ORDER BY st.subject_id, st.study_date, st.study_uid"""
        )
        for r in rows:
            if r["folder"] is not None:
                r["folder"] = r["folder"].rpartition("/")[0] or None
        return rows

    def pet_params(self) -> dict[str, dict[str, Any]]:
        """Study UID → the acquisition parameters of its PET series (the first PT series
        of the study): name → the number when numeric, else the stored text."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._rows(
            """SELECT se.study_uid, p.name, p.value, p.value_num FROM params p
               JOIN series se USING (series_uid)
               WHERE se.modality = 'PT' AND se.series_uid = (
                   SELECT min(s2.series_uid) FROM series s2
                   WHERE s2.study_uid = se.study_uid AND s2.modality = 'PT')"""
        ):
            v = r["value_num"] if r["value_num"] is not None else r["value"]
            out.setdefault(str(r["study_uid"]), {})[str(r["name"])] = v
        return out

    def _has_table(self, name: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def qc_studies(self) -> list[dict[str, Any]]:
        """The last quality control, one row per case: ``case_key``, ``study_uid``,
        ``flagged``, ``measures`` (JSON text), ``checked`` (empty before any ``qc`` run or
        in a catalog older than the QC tables)."""
        if not self._has_table("qc_studies"):
            return []
        return self._rows(
            "SELECT case_key, study_uid, flagged, measures, checked FROM qc_studies "
            "ORDER BY case_key"
        )

    def qc_flags(self, *, pictures: bool = False) -> list[dict[str, Any]]:
        """Every flag of the last quality control: ``case_key``, ``study_uid``,
        ``check_name``, ``reason``, ``message``, ``value`` and, with ``pictures``,
        ``picture`` (PNG bytes or None)."""
        if not self._has_table("qc_flags"):
            return []
        pic = ", f.picture" if pictures else ""
        return self._rows(
            "SELECT f.case_key, q.study_uid, f.check_name, f.reason, f.message, f.value"
            f"{pic} FROM qc_flags f JOIN qc_studies q USING (case_key) "
            "ORDER BY f.case_key, f.flag_id"
        )

    def qc_summary(self) -> dict[str, Any] | None:
        """``checked``, ``flagged`` (counts of cases) and ``reasons`` (reason → number of
        flagged cases) of the last quality control; None before any."""
        rows = self.qc_studies()
        if not rows:
            return None
        reasons: dict[str, int] = {}
        for r in self._rows(
            "SELECT reason, count(DISTINCT case_key) AS n FROM qc_flags GROUP BY reason "
            "ORDER BY n DESC, reason"
        ):
            reasons[str(r["reason"])] = int(r["n"])
        return {
            "checked": len(rows),
            "flagged": sum(1 for r in rows if r["flagged"]),
            "reasons": reasons,
        }

    def summary(self) -> dict[str, Any]:
        """Counts for ``petcorpus catalog status``: subjects, studies by status, series by
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
