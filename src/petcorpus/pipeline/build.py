"""Build a corpus: scan → plan (one task per study) → convert in parallel → record.

Workers run :func:`~petcorpus.pipeline.tasks.run_study`; the driver (:func:`build`) owns
the catalog and records what workers return, as they return it. The same tasks run on the
driver, in a local process pool or on a Dask cluster (:class:`~.executors.Runner`).

Resume: a study whose catalogued artifacts all exist with matching SHA-256, and whose input
files are those it was converted from (same paths, sizes and mtimes), is skipped; everything
else is (re)done. The scan takes unchanged files' header keys from the catalog's scan cache,
so a re-run over an unchanged tree parses no header. Outputs are written to temp folders and
renamed into place, so a killed build leaves no partial file and loses nothing already
recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from petcorpus.catalog import CATALOG_NAME, Catalog
from petcorpus.convert import ConversionOptions
from petcorpus.errors import PetcorpusError
from petcorpus.naming import Naming
from petcorpus.pipeline.executors import Runner
from petcorpus.pipeline.plan import plan_build, plan_tasks, record_skipped
from petcorpus.pipeline.tasks import WORKER_MODULES, StudyOutcome, run_study

__all__ = ["BuildReport", "build"]

log = logging.getLogger(__name__)


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
    #: DICOM headers the scan parsed (0 when the tree is unchanged since the last build)
    headers_parsed: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


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

    t0 = time.perf_counter()
    options = options or ConversionOptions()
    if hdf5_contiguous and options.compat == "autopet":
        raise ValueError("a contiguous HDF5 does not apply to compat='autopet' (float64 + gzip)")
    out = Path(out)
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(
            Runner(workers=workers, client=client, scheduler=scheduler, preload=WORKER_MODULES)
        )
        # The scan stages its files in the catalog (the driver holds no list of them), so
        # the catalog is opened first; a plan that refuses the tree removes what it made.
        made = [p for p in (out, out / CATALOG_NAME) if not p.exists()]
        catalog = stack.enter_context(Catalog.open(out))
        # Header parsing holds the GIL, so the processes that will convert parse the
        # headers first (a second pool cost ~0.6 s); on Dask, the cluster parses them.
        try:
            plan = plan_build(
                dicom_root, catalog, options=options, naming=naming, executor=runner.executor
            )
        except PetcorpusError:
            catalog.close()
            _remove_made(made)
            raise
        removed = remove_stale_temps(out)  # leftovers of a killed run; no writer is active now
        if removed:
            log.info("removed %d temp files of an interrupted run", len(removed))
        run_id = catalog.start_run(
            command,
            {
                **options.as_dict(),
                "workers": runner.workers,
                "scheduler": scheduler,
                "hdf5": str(hdf5 or ""),
                "naming": str(Naming(naming)),
            },
        )
        skipped_files = plan.scanned.skipped()
        record_skipped(catalog, run_id, plan)
        if clinical is not None:
            from petcorpus.tables import ingest_clinical

            ingest_clinical(catalog, clinical, site=site, licence=licence)
        tasks, skipped = plan_tasks(
            plan,
            catalog,
            options=options,
            threads_per_task=runner.threads_per_task(),
            site=site,
            licence=licence,
        )
        plan_seconds = time.perf_counter() - t0
        if on_planned:
            on_planned(len(tasks), len(skipped))

        done: list[StudyOutcome] = []
        failed: list[StudyOutcome] = []
        inputs = tasks.fingerprints
        for outcome in runner.map_unordered(run_study, tasks):
            _record(catalog, run_id, outcome, inputs.get(outcome.study_uid))
            (done if outcome.ok else failed).append(outcome)
            if on_outcome:
                on_outcome(outcome)

        hdf5_path = None
        if hdf5 is not None:
            hdf5_path = _write_hdf5(catalog, Path(hdf5), out, options, done, hdf5_contiguous)
        headers_parsed = plan.scanned.parsed
        catalog.finish_run(
            run_id, {"done": len(done), "skipped": len(skipped), "failed": len(failed)}
        )
    return BuildReport(
        run_id=run_id,
        done=done,
        skipped=skipped,
        failed=failed,
        skipped_files=skipped_files,
        hdf5=hdf5_path,
        seconds=time.perf_counter() - t0,
        plan_seconds=plan_seconds,
        headers_parsed=headers_parsed,
    )


def _remove_made(made: list[Path]) -> None:
    """Remove the catalog (and the output folder) a refused plan created."""
    for path in reversed(made):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty: nothing else of ours is there
        else:
            for extra in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{extra}").unlink(missing_ok=True)


def _record(
    catalog: Catalog, run_id: int, outcome: StudyOutcome, inputs: str | None = None
) -> None:
    """One study's result, in one transaction; a converted study with the fingerprint of
    the inputs it was converted from (the resume check compares it)."""
    if outcome.failure is not None:
        catalog.record_failure(run_id, outcome.study_uid, outcome.failure.stage, outcome.failure)
        return
    with catalog.transaction():
        catalog.record_artifacts(outcome.study_uid, outcome.artifacts)
        catalog.set_status(outcome.study_uid, "done")
        catalog.record_input_fingerprint(outcome.study_uid, inputs)


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
