"""The per-study task a build's workers run: convert, write and hash one study.

:func:`run_study` is pure with respect to the catalog: it writes the study's folder
atomically and returns plain data (artifact hashes or a failure record); it never raises
through the pool. The same function runs in a local process, a pool worker or a Dask worker.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from petcorpus._memory import gc_paused
from petcorpus.catalog import ArtifactRecord, FailureRecord, artifact_record
from petcorpus.convert import ConversionOptions, write_converted
from petcorpus.naming import OutputName

if TYPE_CHECKING:
    from petcorpus.dicom.scan import StudyInfo

__all__ = ["STUDY_KINDS", "WORKER_MODULES", "StudyOutcome", "StudyTask", "run_study"]

#: What a conversion imports, loaded once by the forkserver so workers start warm (the
#: lazy imports of highdicom, pydicom's code dictionaries and ISA-L made the first study
#: of each worker 0.4-0.7 s slower).
WORKER_MODULES = (
    "petcorpus.pipeline.tasks",
    "petcorpus.convert",
    "petcorpus.dicom.series",
    "petcorpus.dicom.seg",
    "petcorpus.dicom.scan",
    "petcorpus.nifti",
    "petcorpus.resample",
    "SimpleITK",
    "highdicom",
    "isal.igzip",
)

#: Artifacts every converted study has (SEG only when the study has a SEG series).
STUDY_KINDS = ("CT", "PET", "SUV", "CTres", "sidecar")


@dataclasses.dataclass(frozen=True)
class StudyTask:
    """Everything a worker needs for one study (picklable)."""

    study: StudyInfo
    name: OutputName
    out: str
    options: ConversionOptions


@dataclasses.dataclass(frozen=True)
class StudyOutcome:
    """What a worker returns: the study's artifacts, or why it failed."""

    study_uid: str
    subject: str
    study: str
    artifacts: tuple[ArtifactRecord, ...] = ()
    failure: FailureRecord | None = None
    seconds: float = 0.0
    #: what the user should know of a converted study (an ambiguous series choice, ...)
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None


def run_study(task: StudyTask) -> StudyOutcome:
    """Convert, write and hash one study. Never raises: failures come back as data."""
    t0 = time.perf_counter()
    uid = str(task.study.study_uid)
    subject, study_name = task.name.subject, task.name.study
    try:
        with gc_paused():
            written = write_converted(
                task.study, task.out, task.options, name=task.name, drop_cache=True
            )
        records = tuple(
            artifact_record(p, task.out, kind, sha256=written.sha256[kind])
            for kind, p in written.paths.items()
        )
    except Exception as exc:  # a batch records every failure and goes on
        failure = FailureRecord.from_exception(uid, "convert", exc)
        return StudyOutcome(
            uid, subject, study_name, failure=failure, seconds=time.perf_counter() - t0
        )
    return StudyOutcome(
        uid,
        subject,
        study_name,
        artifacts=records,
        seconds=time.perf_counter() - t0,
        warnings=written.warnings,
    )
