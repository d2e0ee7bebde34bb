"""Plan a build: scan the tree, name every study's folder, and make one task per study.

Planning reads headers only and writes nothing: :func:`plan_build` refuses a tree without
studies, a ``--pet-series``/``--ct-series`` that names no series, and two studies that
would share a folder, before the output folder exists. :func:`plan_tasks` then records the
studies in the catalog and keeps those whose outputs are not complete (the resume check).

Re-runs: the scan reads an existing catalog's scan cache (:mod:`petcorpus.dicom.scan_cache`)
before anything is written, so unchanged files are not parsed again; :func:`plan_tasks`
writes the cache back. A study whose inputs changed since its conversion (its fingerprint
differs from the one recorded with its outputs) is converted again even when its outputs
are intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from petcorpus.catalog import Catalog
from petcorpus.convert import ConversionOptions
from petcorpus.dicom.scan import ScanResult, StudyInfo, scan
from petcorpus.dicom.scan_cache import EmptyCache
from petcorpus.errors import PetcorpusError, Reason, printable
from petcorpus.naming import Naming, OutputName, name_studies
from petcorpus.pipeline.tasks import STUDY_KINDS, StudyTask

__all__ = ["BuildPlan", "plan_build", "plan_tasks", "record_skipped", "skipped_summary"]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What a build found under its root, and where each study goes."""

    root: Path
    scanned: ScanResult
    #: StudyInstanceUID → output folder, unique (see :mod:`petcorpus.naming`)
    names: dict[str, OutputName]

    @property
    def studies(self) -> list[StudyInfo]:
        return self.scanned.studies


def plan_build(
    dicom_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: ConversionOptions,
    naming: Naming | str = Naming.DICOM,
    executor: Executor | None = None,
) -> BuildPlan:
    """Scan ``dicom_root`` (on ``executor`` if given) and name every study's output folder.

    Raises
    ------
    PetcorpusError
        ``NO_SERIES``: no study under the root, or a chosen series that is not there;
        ``OUTPUT_COLLISION``: two studies would share a folder. Nothing is written.
    """
    root, out = Path(dicom_root), Path(out)
    recorded, scanned = _scan_with_catalog(root, out, executor)
    if not scanned.studies:
        raise PetcorpusError(
            f"no DICOM study found ({skipped_summary(scanned.skipped, root)})",
            path=root,
            reason=Reason.NO_SERIES,
        )
    _check_series_choice(scanned.studies, options, root)
    names = name_studies(scanned.studies, naming=naming, recorded=recorded)
    return BuildPlan(root=root, scanned=scanned, names=names)


def plan_tasks(
    plan: BuildPlan,
    catalog: Catalog,
    *,
    options: ConversionOptions,
    threads_per_task: int | None,
    site: str | None = None,
    licence: str | None = None,
) -> tuple[list[StudyTask], list[str]]:
    """Record the plan's studies in ``catalog``; return (tasks to run, UIDs complete).

    ``threads_per_task``: threads inside one study when the options do not fix them (the
    cores shared between local processes; None leaves them to the worker).
    """
    tasks: list[StudyTask] = []
    complete: list[str] = []
    per_study = options
    if options.workers is None and threads_per_task is not None:
        per_study = dataclasses.replace(options, workers=threads_per_task)
    with catalog.transaction():  # one commit, not three per study
        writes = plan.scanned.cache_writes
        if writes is not None:
            catalog.write_scan_cache(writes)
            writes.clear()  # written: the driver lets the rows go
        for study in plan.studies:
            uid = str(study.study_uid)
            name = plan.names[uid]
            # The fingerprint recorded with the outputs: another one means changed inputs;
            # none means outputs of an older petcorpus (judged by their checksums alone).
            recorded = catalog.input_fingerprint(uid)
            unchanged = recorded is not None and recorded == study.fingerprint
            catalog.record_subject(name.subject, site=site, licence=licence)
            catalog.record_study(
                uid,
                subject_id=name.subject,
                study_date=_iso_date(study.study_date),
                source=str(name),
            )
            if not unchanged:
                catalog.record_series(study.series)
            if (unchanged or recorded is None) and catalog.is_complete(uid, STUDY_KINDS):
                complete.append(uid)
                if recorded is None and study.fingerprint is not None:
                    catalog.record_input_fingerprint(uid, study.fingerprint)
            else:
                tasks.append(StudyTask(study, name, str(catalog.out_dir), per_study))
    # Largest studies first: the last task to start is then a small one, so the workers
    # finish close together (longest-processing-time-first scheduling).
    tasks.sort(key=lambda t: -t.study.n_files)
    return tasks, complete


def record_skipped(catalog: Catalog, run_id: int, plan: BuildPlan) -> None:
    """Every file the scan skipped, as a catalog failure of stage ``scan``."""
    with catalog.transaction():
        for path, why in plan.scanned.skipped:
            catalog.record_failure(run_id, None, "scan", _skipped_error(path, why, plan.root))


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


def _scan_with_catalog(
    root: Path, out: Path, executor: Executor | None
) -> tuple[dict[str, str], ScanResult]:
    """Scan ``root`` with the scan cache of an existing catalog in ``out``; return the
    recorded StudyInstanceUID → ``<subject>/<study>`` too. Nothing is written."""
    from petcorpus.catalog import CATALOG_NAME

    if not (out / CATALOG_NAME).is_file():
        return {}, scan(root, executor=executor, cache=EmptyCache())
    # Writable: a run killed as it created the catalog left a file without a schema.
    with Catalog.open(out) as catalog:
        recorded = catalog.recorded_sources()  # (no pandas: the driver stays small)
        return recorded, scan(root, executor=executor, cache=catalog.scan_cache())


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
