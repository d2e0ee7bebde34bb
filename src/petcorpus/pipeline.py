"""Build a corpus: scan → plan (one task per study) → convert in parallel → record.

Workers run :func:`run_study` — a pure task that converts one study, writes it atomically
and returns plain data (artifact hashes or a failure record); it never raises through the
pool and never touches the catalog. The driver (:func:`build`) owns the catalog: it records
what workers return, as they return it. The same tasks run in a local process pool or on a
Dask cluster (``client=`` or ``scheduler=``).

Resume: a study whose catalogued artifacts all exist with matching SHA-256 is skipped;
everything else is (re)done. Outputs are written to temp folders and renamed into place, so
a killed build leaves no partial file and loses nothing already recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from petcorpus.catalog import ArtifactRecord, Catalog, FailureRecord, artifact_record
from petcorpus.convert import ConversionOptions, convert_to_layout, output_names

__all__ = ["STUDY_KINDS", "BuildReport", "StudyOutcome", "StudyTask", "build", "run_study"]

log = logging.getLogger(__name__)

#: Artifacts every converted study has (SEG only when the study has a SEG series).
STUDY_KINDS = ("CT", "PET", "SUV", "CTres", "sidecar")


@dataclasses.dataclass(frozen=True)
class StudyTask:
    """Everything a worker needs for one study (picklable)."""

    study: Any  # petcorpus.dicom.scan.StudyInfo
    dicom_root: str
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

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclasses.dataclass
class BuildReport:
    """The result of one build run."""

    run_id: int
    done: list[StudyOutcome]
    skipped: list[str]
    failed: list[StudyOutcome]
    skipped_files: int
    hdf5: Path | None
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


def run_study(task: StudyTask) -> StudyOutcome:
    """Convert, write and hash one study. Never raises: failures come back as data."""
    t0 = time.perf_counter()
    uid = str(task.study.study_uid)
    subject, study_name = output_names(task.study, task.dicom_root)
    try:
        paths = convert_to_layout(task.study, task.out, task.dicom_root, task.options)
        records = tuple(artifact_record(p, task.out, kind) for kind, p in paths.items())
    except Exception as exc:  # a batch records every failure and goes on
        failure = FailureRecord.from_exception(uid, "convert", exc)
        return StudyOutcome(
            uid, subject, study_name, failure=failure, seconds=time.perf_counter() - t0
        )
    return StudyOutcome(
        uid, subject, study_name, artifacts=records, seconds=time.perf_counter() - t0
    )


def _iter_local(tasks: Sequence[StudyTask], workers: int) -> Iterator[StudyOutcome]:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield run_study(task)
        return
    import multiprocessing as mp

    # forkserver: workers start from a clean process, not a fork of a threaded driver.
    ctx = mp.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_study, t) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()


def _iter_dask(tasks: Sequence[StudyTask], client: Any) -> Iterator[StudyOutcome]:
    from dask.distributed import as_completed as dask_completed

    futures = client.map(run_study, list(tasks), pure=False)
    for fut in dask_completed(futures):
        yield fut.result()


def _dask_client(scheduler: str) -> Any:
    try:
        from dask.distributed import Client
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "--scheduler needs dask.distributed: pip install 'petcorpus[dask]'"
        ) from exc
    return Client(scheduler)


def build(
    dicom_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    clinical: str | os.PathLike[str] | None = None,
    options: ConversionOptions | None = None,
    workers: int | None = None,
    client: Any = None,
    scheduler: str | None = None,
    hdf5: str | os.PathLike[str] | None = None,
    site: str | None = None,
    licence: str | None = None,
    command: Sequence[str] | str | None = None,
    on_planned: Callable[[int, int], None] | None = None,
    on_outcome: Callable[[StudyOutcome], None] | None = None,
) -> BuildReport:
    """Convert every study under ``dicom_root`` into ``out`` and catalogue it.

    Parameters
    ----------
    dicom_root : path
        Any DICOM tree (TCIA layout or a hospital export); studies are found by UID.
    out : path
        Output corpus: ``<out>/<subject>/<study>/*.nii.gz`` and ``<out>/catalog.sqlite``.
        With Dask, a path every worker can reach.
    clinical : path, optional
        TCIA-style clinical CSV (diagnosis, age, sex) joined to the studies.
    options : ConversionOptions, optional
        Per-study conversion options (compat mode, SUV kind and timing).
    workers : int, optional
        Local processes (default: the number of cores). Ignored with Dask.
    client, scheduler : optional
        A ``dask.distributed.Client``, or the address of a scheduler to connect to.
    hdf5 : path, optional
        Also write the corpus as HDF5 (appended study by study, crash-safe; see
        :mod:`petcorpus.layouts.hdf5`); ``options.compat`` writes float64 like the published
        file.
    site, licence : str, optional
        Recorded on every subject (e.g. ``"autoPET"``, ``"CC BY-NC 4.0"``).
    on_planned, on_outcome : callable, optional
        Progress hooks: ``on_planned(n_to_convert, n_skipped)`` once, ``on_outcome(o)`` per
        study as it finishes.
    """
    from petcorpus.atomic import remove_stale_temps
    from petcorpus.dicom.scan import scan

    t0 = time.perf_counter()
    options = options or ConversionOptions()
    dicom_root, out = Path(dicom_root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temps(out)  # leftovers of a killed run; no writer is active now
    if removed:
        log.info("removed %d temp files of an interrupted run", len(removed))
    n_workers = workers or os.cpu_count() or 1
    scanned = scan(dicom_root)

    with Catalog.open(out) as catalog:
        run_id = catalog.start_run(
            command,
            {
                **options.as_dict(),
                "workers": n_workers,
                "scheduler": scheduler,
                "hdf5": str(hdf5 or ""),
            },
        )
        if clinical is not None:
            from petcorpus.tables import ingest_clinical

            ingest_clinical(catalog, clinical, site=site, licence=licence)
        tasks: list[StudyTask] = []
        skipped: list[str] = []
        for study in scanned.studies:
            subject, study_name = output_names(study, dicom_root)
            catalog.record_subject(subject, site=site, licence=licence)
            catalog.record_study(
                str(study.study_uid),
                subject_id=subject,
                study_date=_iso_date(study.study_date),
                source=f"{subject}/{study_name}",
            )
            catalog.record_series(study.series)
            if catalog.is_complete(str(study.study_uid), STUDY_KINDS):
                skipped.append(str(study.study_uid))
                continue
            # Threads inside a study: share the cores between the local processes.
            per_study = (
                options
                if client or scheduler
                else dataclasses.replace(
                    options, workers=max(1, (os.cpu_count() or 1) // n_workers)
                )
            )
            tasks.append(StudyTask(study, str(dicom_root), str(out), per_study))
        if on_planned:
            on_planned(len(tasks), len(skipped))

        if client is not None:
            outcomes = _iter_dask(tasks, client)
        elif scheduler is not None:
            own = _dask_client(scheduler)
            outcomes = _iter_dask(tasks, own)
        else:
            own = None
            outcomes = _iter_local(tasks, n_workers)
        done: list[StudyOutcome] = []
        failed: list[StudyOutcome] = []
        try:
            for outcome in outcomes:
                _record(catalog, run_id, outcome)
                (done if outcome.ok else failed).append(outcome)
                if on_outcome:
                    on_outcome(outcome)
        finally:
            if scheduler is not None and client is None and own is not None:
                own.close()

        hdf5_path = None
        if hdf5 is not None:
            hdf5_path = _write_hdf5(catalog, Path(hdf5), out, options, done)
        catalog.finish_run(
            run_id, {"done": len(done), "skipped": len(skipped), "failed": len(failed)}
        )
    return BuildReport(
        run_id=run_id,
        done=done,
        skipped=skipped,
        failed=failed,
        skipped_files=len(scanned.skipped),
        hdf5=hdf5_path,
        seconds=time.perf_counter() - t0,
    )


def _record(catalog: Catalog, run_id: int, outcome: StudyOutcome) -> None:
    if outcome.failure is not None:
        catalog.record_failure(run_id, outcome.study_uid, outcome.failure.stage, outcome.failure)
        return
    catalog.record_artifacts(outcome.study_uid, outcome.artifacts)
    catalog.set_status(outcome.study_uid, "done")


def _iso_date(value: str | None) -> str | None:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None


def _write_hdf5(
    catalog: Catalog, path: Path, out: Path, options: ConversionOptions, done: list[StudyOutcome]
) -> Path:
    """Append every converted study that the HDF5 corpus does not hold yet (crash-safe)."""
    from petcorpus.layouts.hdf5 import H5Options, H5Study, append_study, shard_dir

    h5opts = H5Options(compat=options.compat == "autopet")
    redo = {(o.subject, o.study) for o in done}
    rows = catalog.query("SELECT DISTINCT source FROM studies WHERE status = 'done'")
    for source in rows["source"].dropna():
        subject, study = str(source).split("/", 1)
        shard = shard_dir(path) / subject / f"{study}.h5"
        if shard.exists() and (subject, study) not in redo:
            continue
        append_study(path, H5Study.from_autopet_folder(out / subject / study), h5opts)
    if path.resolve().is_relative_to(out.resolve()):
        catalog.record_artifacts(None, {"HDF5": path})
    return path
