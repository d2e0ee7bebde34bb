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

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petcorpus._memory import gc_paused, keep_freed_memory
from petcorpus.catalog import ArtifactRecord, Catalog, FailureRecord, artifact_record
from petcorpus.convert import ConversionOptions, write_converted
from petcorpus.errors import PetcorpusError, Reason, printable
from petcorpus.naming import Naming, OutputName, name_studies

if TYPE_CHECKING:
    from petcorpus.dicom.scan import StudyInfo

__all__ = [
    "STUDY_KINDS",
    "BuildReport",
    "ImportReport",
    "StudyOutcome",
    "StudyTask",
    "build",
    "import_enhance",
    "run_study",
    "skipped_summary",
]

log = logging.getLogger(__name__)

#: What a conversion imports, loaded once by the forkserver so workers start warm (the
#: lazy imports of highdicom, pydicom's code dictionaries and ISA-L made the first study
#: of each worker 0.4-0.7 s slower).
WORKER_MODULES = (
    "petcorpus.pipeline",
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


@dataclasses.dataclass
class BuildReport:
    """The result of one build run."""

    run_id: int
    done: list[StudyOutcome]
    skipped: list[str]
    failed: list[StudyOutcome]
    #: files under the root that were not read as DICOM images, with the reason
    skipped_files: list[tuple[Path, str]]
    hdf5: Path | None
    seconds: float
    #: time spent by the driver before the first task starts (scan, catalog, plan)
    plan_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


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


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """The build's local worker processes (None for one worker: the driver converts)."""
    if workers <= 1:
        yield None
        return
    from petcorpus._procs import process_pool

    # forkserver: workers start from a clean process, not a fork of a threaded driver; the
    # server imports the conversion stack once, so each worker starts in milliseconds. The
    # processes end with the driver and never import from the current folder (_procs).
    with process_pool(workers, preload=WORKER_MODULES, initializer=keep_freed_memory) as pool:
        yield pool


def _iter_local(
    tasks: Sequence[StudyTask], pool: ProcessPoolExecutor | None
) -> Iterator[StudyOutcome]:
    if pool is None or len(tasks) <= 1:
        for task in tasks:
            yield run_study(task)
        return
    futures = [pool.submit(run_study, t) for t in tasks]
    for fut in as_completed(futures):
        yield fut.result()


#: Threads that run studies inside a Dask worker (see :func:`_dask_worker_plugin`).
_study_threads: ThreadPoolExecutor | None = None


def _dask_worker_plugin() -> Any:
    from dask.distributed import WorkerPlugin

    class PrepareWorkers(WorkerPlugin):  # type: ignore[misc]
        """Prepare every worker (also those that join later) like a local pool's process.

        Dask runs tasks on a thread pool whose threads have their own malloc arenas, and
        those map every whole-body volume afresh: faulting ~220 MB in again per study cost
        0.5-1 s here. So the worker keeps freed memory, threads started from now on use
        the main heap, and :func:`_run_study_on_worker` runs each study on one of them.
        """

        def setup(self, worker: Any) -> None:
            import importlib

            from petcorpus import _memory, pipeline

            _memory.keep_freed_memory()
            _memory.share_main_arena()
            for name in WORKER_MODULES:
                importlib.import_module(name)
            if pipeline._study_threads is None:
                pipeline._study_threads = ThreadPoolExecutor(
                    max_workers=max(1, int(worker.state.nthreads)),
                    thread_name_prefix="petcorpus-study",
                )

        def teardown(self, worker: Any) -> None:
            from petcorpus import pipeline

            threads, pipeline._study_threads = pipeline._study_threads, None
            if threads is not None:
                threads.shutdown(wait=False)

    return PrepareWorkers()


def _run_study_on_worker(task: StudyTask) -> StudyOutcome:
    """:func:`run_study` on the worker's study threads (the Dask thread only waits)."""
    threads = _study_threads
    if threads is None:
        return run_study(task)
    return threads.submit(run_study, task).result()


def _iter_dask(tasks: Sequence[StudyTask], client: Any) -> Iterator[StudyOutcome]:
    from dask.distributed import as_completed as dask_completed

    futures = client.map(_run_study_on_worker, list(tasks), pure=False)
    for fut in dask_completed(futures):
        yield fut.result()


def _dask_client(scheduler: str) -> Any:
    from petcorpus._optional import import_optional

    distributed = import_optional("dask.distributed", extra="dask", purpose="a Dask scheduler")
    return distributed.Client(scheduler)


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
    hdf5_contiguous: bool = False,
    site: str | None = None,
    licence: str | None = None,
    command: Sequence[str] | str | None = None,
    on_planned: Callable[[int, int], None] | None = None,
    on_outcome: Callable[[StudyOutcome], None] | None = None,
    naming: Naming | str = Naming.DICOM,
) -> BuildReport:
    """Convert every study under ``dicom_root`` into ``out`` and catalogue it.

    Parameters
    ----------
    dicom_root : path
        Any DICOM tree (TCIA layout or a hospital export); studies are found by UID.
    out : path
        Output corpus: ``<out>/<subject>/<study>/*.nii.gz`` (folders named by
        :mod:`petcorpus.naming`) and ``<out>/catalog.sqlite``.
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
    hdf5_contiguous : bool
        Write the HDF5 datasets uncompressed and contiguous (``H5Options(contiguous=True)``):
        ~5x larger, but patch reads are memory-mapped copies.
    site, licence : str, optional
        Recorded on every subject (e.g. ``"autoPET"``, ``"CC BY-NC 4.0"``).
    naming : {"dicom", "folders"}
        How study folders are named: from DICOM identity (default, unique per study at any
        tree depth) or from the two folders above each series folder; see
        :mod:`petcorpus.naming`.
    on_planned, on_outcome : callable, optional
        Progress hooks: ``on_planned(n_to_convert, n_skipped)`` once, ``on_outcome(o)`` per
        study as it finishes.
    """
    from petcorpus.atomic import remove_stale_temps
    from petcorpus.dicom.scan import scan

    t0 = time.perf_counter()
    options = options or ConversionOptions()
    if hdf5_contiguous and options.compat == "autopet":
        raise ValueError("a contiguous HDF5 does not apply to compat='autopet' (float64 + gzip)")
    dicom_root, out = Path(dicom_root), Path(out)
    n_workers = workers or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        dask = client
        if dask is None and scheduler is not None:
            dask = _dask_client(scheduler)
            stack.callback(dask.close)
        pool: ProcessPoolExecutor | None = None
        executor: Executor | None
        if dask is not None:
            # Prepared first (see _dask_worker_plugin), then the cluster parses the headers
            # it is about to convert, as a local pool does.
            dask.register_plugin(_dask_worker_plugin(), name="petcorpus-prepare-workers")
            executor = dask.get_executor(pure=False)
        else:
            # One pool for the whole build: header parsing holds the GIL, so the worker
            # processes that will convert parse the headers first (a second pool cost ~0.6 s).
            pool = executor = stack.enter_context(_process_pool(n_workers))
            if pool is None:  # the driver converts: the same memory habit, undone after
                keep_freed_memory()
                stack.callback(keep_freed_memory, False)
        scanned = scan(dicom_root, executor=executor)
        if not scanned.studies:
            raise PetcorpusError(
                f"no DICOM study found ({skipped_summary(scanned.skipped, dicom_root)})",
                path=dicom_root,
                reason=Reason.NO_SERIES,
            )
        _check_series_choice(scanned.studies, options, dicom_root)
        # Every study's folder is fixed, and checked to be its own, before anything is
        # written (see petcorpus.naming).
        names = name_studies(scanned.studies, naming=naming, recorded=_recorded_names(out))
        out.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temps(out)  # leftovers of a killed run; no writer is active now
        if removed:
            log.info("removed %d temp files of an interrupted run", len(removed))
        catalog = stack.enter_context(Catalog.open(out))
        run_id = catalog.start_run(
            command,
            {
                **options.as_dict(),
                "workers": n_workers,
                "scheduler": scheduler,
                "hdf5": str(hdf5 or ""),
                "naming": str(Naming(naming)),
            },
        )
        with catalog.transaction():
            for path, why in scanned.skipped:
                catalog.record_failure(run_id, None, "scan", _skipped_error(path, why, dicom_root))
        if clinical is not None:
            from petcorpus.tables import ingest_clinical

            ingest_clinical(catalog, clinical, site=site, licence=licence)
        tasks: list[StudyTask] = []
        skipped: list[str] = []
        for study in scanned.studies:
            uid = str(study.study_uid)
            name = names[uid]
            catalog.record_subject(name.subject, site=site, licence=licence)
            catalog.record_study(
                uid,
                subject_id=name.subject,
                study_date=_iso_date(study.study_date),
                source=str(name),
            )
            catalog.record_series(study.series)
            if catalog.is_complete(uid, STUDY_KINDS):
                skipped.append(uid)
                continue
            # Threads inside a study: unless the options fix them, share the cores
            # between the local processes (Dask workers bring their own thread budget).
            per_study = options
            if options.workers is None and dask is None:
                per_study = dataclasses.replace(
                    options, workers=max(1, (os.cpu_count() or 1) // n_workers)
                )
            tasks.append(StudyTask(study, name, str(out), per_study))
        # Largest studies first: the last task to start is then a small one, so the
        # workers finish close together (longest-processing-time-first scheduling).
        tasks.sort(key=lambda t: -t.study.n_files)
        plan_seconds = time.perf_counter() - t0
        if on_planned:
            on_planned(len(tasks), len(skipped))

        outcomes = _iter_dask(tasks, dask) if dask is not None else _iter_local(tasks, pool)
        done: list[StudyOutcome] = []
        failed: list[StudyOutcome] = []
        for outcome in outcomes:
            _record(catalog, run_id, outcome)
            (done if outcome.ok else failed).append(outcome)
            if on_outcome:
                on_outcome(outcome)

        hdf5_path = None
        if hdf5 is not None:
            hdf5_path = _write_hdf5(catalog, Path(hdf5), out, options, done, hdf5_contiguous)
        catalog.finish_run(
            run_id, {"done": len(done), "skipped": len(skipped), "failed": len(failed)}
        )
    return BuildReport(
        run_id=run_id,
        done=done,
        skipped=skipped,
        failed=failed,
        skipped_files=[(p, why) for p, why in scanned.skipped],
        hdf5=hdf5_path,
        seconds=time.perf_counter() - t0,
        plan_seconds=plan_seconds,
    )


def _record(catalog: Catalog, run_id: int, outcome: StudyOutcome) -> None:
    if outcome.failure is not None:
        catalog.record_failure(run_id, outcome.study_uid, outcome.failure.stage, outcome.failure)
        return
    catalog.record_artifacts(outcome.study_uid, outcome.artifacts)
    catalog.set_status(outcome.study_uid, "done")


def _check_series_choice(
    studies: Sequence[StudyInfo], options: ConversionOptions, root: Path
) -> None:
    """``--pet-series``/``--ct-series`` must name a series of that modality under the root."""
    for uid, modality, flag in (
        (options.pet_series, "PT", "--pet-series"),
        (options.ct_series, "CT", "--ct-series"),
    ):
        if uid is None:
            continue
        found = {s.series_uid for st in studies for s in st.by_modality(modality)}
        if uid not in found:
            raise PetcorpusError(
                f"{flag} {uid}: no {modality} series with this SeriesInstanceUID "
                "(`petcorpus scan` lists them)",
                path=root,
                reason=Reason.NO_SERIES,
            )


def _recorded_names(out: Path) -> dict[str, str]:
    """StudyInstanceUID → ``<subject>/<study>`` of the studies an existing catalog holds."""
    from petcorpus.catalog import CATALOG_NAME

    if not (out / CATALOG_NAME).is_file():
        return {}
    # Writable: a run killed as it created the catalog left a file without a schema.
    with Catalog.open(out) as catalog:
        rows = catalog.query("SELECT study_uid, source FROM studies WHERE source IS NOT NULL")
    return dict(zip(rows["study_uid"].astype(str), rows["source"].astype(str), strict=True))


def _skipped_error(path: Path, why: str, root: Path) -> PetcorpusError:
    """A file the scan skipped, as a catalog failure (its path relative to the root)."""
    with contextlib.suppress(ValueError):
        path = path.relative_to(root)
    return PetcorpusError(f"skipped: {why}", path=path, reason=Reason.SKIPPED_FILE)


def skipped_summary(skipped: Sequence[tuple[Path, str]], root: Path, show: int = 3) -> str:
    """One line naming the first ``show`` skipped files (relative to ``root``) and why."""
    if not skipped:
        return "the folder holds no files"
    first = "; ".join(f"{_rel(p, root)}: {why}" for p, why in skipped[:show])
    more = f" and {len(skipped) - show} more" if len(skipped) > show else ""
    return f"{len(skipped)} files skipped: {first}{more}"


def _rel(path: Path, root: Path) -> str:
    try:
        return printable(str(path.relative_to(root)) or path.name)
    except ValueError:
        return printable(str(path))


def _iso_date(value: str | None) -> str | None:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None


def _write_hdf5(
    catalog: Catalog,
    path: Path,
    out: Path,
    options: ConversionOptions,
    done: list[StudyOutcome],
    contiguous: bool,
) -> Path:
    """Append every converted study that the HDF5 corpus does not hold yet (crash-safe)."""
    from petcorpus.layouts.hdf5 import H5Options, H5Study, append_study, shard_dir

    compat = options.compat == "autopet"
    h5opts = H5Options(compat=compat, contiguous=contiguous)
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


@dataclasses.dataclass
class ImportReport:
    """The result of cataloguing an ENHANCE.PET corpus in place."""

    run_id: int
    cases: int
    incomplete: list[str]
    release: str


def import_enhance(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    command: Sequence[str] | str | None = None,
) -> ImportReport:
    """Catalogue an ENHANCE.PET corpus (either release, folders or zips) without copying it.

    Each case becomes a subject ``ENHANCE_<case>`` (sex, age, site and the licence that the
    site's Data-Source implies: a user can filter by licence) with one study
    ``enhance:<case>`` whose CT and PT "series" carry the CT-/PT-details.xlsx fields as
    parameters and the image/mask locations (CT and PET stay where they are). A case
    missing a file is recorded as a failure with the missing files, not fatal.
    """
    from petcorpus.layouts.enhance import enhance_cases_table, open_enhance

    corpus = open_enhance(root)
    table = enhance_cases_table(corpus)
    incomplete: list[str] = []
    with Catalog.open(out) as catalog:
        run_id = catalog.start_run(command, {"from": "enhance", "root": str(root)})
        with catalog.transaction():
            for row in table.to_dict("records"):
                case = str(row["case_id"])
                subject, study_uid = f"ENHANCE_{case}", f"enhance:{case}"
                catalog.record_subject(
                    subject,
                    sex=_clean(row.get("pt_sex")),
                    age=_int(row.get("pt_age")),
                    site=_clean(row.get("site")),
                    licence=_clean(row.get("licence")),
                )
                catalog.record_study(study_uid, subject_id=subject, source=row.get("ct_path"))
                series = []
                for modality, prefix, path_key in (
                    ("CT", "ct_", "ct_path"),
                    ("PT", "pt_", "pt_path"),
                ):
                    params = {
                        k[len(prefix) :]: _clean(v)
                        for k, v in row.items()
                        if k.startswith(prefix) and k != path_key
                    }
                    params["path"] = row.get(path_key)
                    if modality == "CT":
                        params.update({k: v for k, v in row.items() if k.startswith("mask_")})
                    series.append(
                        {
                            "series_uid": f"{study_uid}:{modality}",
                            "study_uid": study_uid,
                            "modality": modality,
                            "manufacturer": _clean(row.get(f"{prefix}manufacturer")),
                            "model": None,
                            "files": 1 if row.get(path_key) else 0,
                            "frame_of_reference_uid": None,
                            "description": f"ENHANCE.PET {corpus.release}",
                            "params": params,
                        }
                    )
                catalog.record_series(series)
                missing = _clean(row.get("missing"))
                if missing:
                    incomplete.append(case)
                    exc = PetcorpusError(
                        f"case {case} is missing: {missing}",
                        path=row.get("ct_path") or root,
                        reason=Reason.NO_SERIES,
                    )
                    catalog.record_failure(run_id, study_uid, "import", exc)
                else:
                    catalog.set_status(study_uid, "done")
        catalog.finish_run(
            run_id, {"done": len(table) - len(incomplete), "failed": len(incomplete)}
        )
    return ImportReport(
        run_id=run_id, cases=len(table), incomplete=incomplete, release=str(corpus.release)
    )


def _clean(value: Any) -> Any:
    """None for NaN/empty cells; plain Python scalars otherwise."""
    if value is None:
        return None
    try:
        import math

        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _int(value: Any) -> int | None:
    v = _clean(value)
    try:
        return None if v is None else int(float(str(v).rstrip("Yy")))
    except ValueError:
        return None
