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

from petcorpus.catalog.core import Catalog, verify
from petcorpus.catalog.records import (
    ArtifactRecord,
    FailureRecord,
    VerifyIssue,
    VerifyReport,
    artifact_record,
    hash_file,
)
from petcorpus.catalog.schema import CATALOG_NAME, SCHEMA_VERSION

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
