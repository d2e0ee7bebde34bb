"""Plan a build: scan the tree, name every study's folder, and make one task per study.

Planning reads headers only: :func:`plan_build` refuses a tree without studies, a
``--pet-series``/``--ct-series`` that names no series, and two studies that would share a
folder; :func:`plan_tasks` then records the studies in the catalog and keeps those whose
outputs are not complete (the resume check).

Memory: the scan stages its files in the catalog (:mod:`petcorpus.dicom.scan_store`) and
the plan reads the studies back one at a time, three times (naming, recording, and once
more as each task is handed to a worker); what it keeps per study is its UID, output name,
number of files and fingerprint, so the driver's memory does not grow with the files of
the tree.

Re-runs: the scan reads the catalog's scan cache (:mod:`petcorpus.dicom.scan_cache`), so
unchanged files are not parsed again; :func:`plan_tasks` writes the cache back. A study
whose inputs changed since its conversion (its fingerprint differs from the one recorded
with its outputs) is converted again even when its outputs are intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path

from petcorpus.catalog import Catalog
from petcorpus.convert import ConversionOptions
from petcorpus.dicom.scan import StagedScan, StudyInfo, stage_scan
from petcorpus.errors import PetcorpusError, Reason, printable
from petcorpus.naming import Naming, OutputName, name_studies
from petcorpus.pipeline.tasks import STUDY_KINDS, StudyTask

__all__ = [
    "BuildPlan",
    "PlannedTasks",
    "plan_build",
    "plan_tasks",
    "record_skipped",
    "skipped_summary",
]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What a build found under its root, and where each study goes."""

    root: Path
    scanned: StagedScan
    #: StudyInstanceUID → output folder, unique (see :mod:`petcorpus.naming`)
    names: dict[str, OutputName]

    @property
    def studies(self) -> Iterator[StudyInfo]:
        """The studies, read back from the catalog one at a time."""
        return iter(self.scanned)


def plan_build(
    dicom_root: str | os.PathLike[str],
    catalog: Catalog,
    *,
    options: ConversionOptions,
    naming: Naming | str = Naming.DICOM,
    executor: Executor | None = None,
) -> BuildPlan:
    """Scan ``dicom_root`` (on ``executor`` if given; not the catalog's folder, should it be
    inside) into ``catalog``'s scan store and name every study's output folder. The
    catalog's tables are not changed.

    Raises
    ------
    PetcorpusError
        ``NO_SERIES``: no study under the root, or a chosen series that is not there;
        ``OUTPUT_COLLISION``: two studies would share a folder.
    """
    root = Path(dicom_root)
    with _staging_errors(catalog):
        scanned = stage_scan(root, catalog.scan_store(), executor=executor, skip=catalog.out_dir)
    if not len(scanned):
        raise PetcorpusError(
            f"no DICOM study found ({skipped_summary(scanned.skipped(), root)})",
            path=root,
            reason=Reason.NO_SERIES,
        )
    found: dict[str, set[str]] = {"PT": set(), "CT": set()}

    def studies() -> Iterator[StudyInfo]:
        for study in scanned:
            for s in study.series:
                if s.modality in found:
                    found[s.modality].add(s.series_uid)
            yield study

    with _staging_errors(catalog):
        names = name_studies(studies(), naming=naming, recorded=catalog.recorded_sources())
    _check_series_choice(found, options, root)
    return BuildPlan(root=root, scanned=scanned, names=names)


class PlannedTasks:
    """The studies to convert, largest first, each read back as a :class:`StudyTask` when
    it is handed out (so the plan holds no file list)."""

    def __init__(
        self,
        plan: BuildPlan,
        todo: list[tuple[str, int, str | None]],
        out: str,
        options: ConversionOptions,
    ) -> None:
        self._plan, self._out, self._options = plan, out, options
        # Largest studies first: the last task to start is then a small one, so the
        # workers finish close together (longest-processing-time-first scheduling).
        self._todo = sorted(todo, key=lambda t: (-t[1], t[0]))
        #: StudyInstanceUID → fingerprint of the inputs (recorded with the outputs)
        self.fingerprints = {uid: fp for uid, _, fp in self._todo}

    def __len__(self) -> int:
        return len(self._todo)

    def __iter__(self) -> Iterator[StudyTask]:
        for uid, _, _ in self._todo:
            study = self._plan.scanned.study(uid)
            yield StudyTask(study, self._plan.names[uid], self._out, self._options)


def plan_tasks(
    plan: BuildPlan,
    catalog: Catalog,
    *,
    options: ConversionOptions,
    threads_per_task: int | None,
    site: str | None = None,
    licence: str | None = None,
) -> tuple[PlannedTasks, list[str]]:
    """Record the plan's studies and scan cache in ``catalog``; return (tasks to run,
    UIDs complete).

    ``threads_per_task``: threads inside one study when the options do not fix them (the
    cores shared between local processes; None leaves them to the worker).
    """
    todo: list[tuple[str, int, str | None]] = []
    complete: list[str] = []
    per_study = options
    if options.workers is None and threads_per_task is not None:
        per_study = dataclasses.replace(options, workers=threads_per_task)
    with _staging_errors(catalog), catalog.transaction():  # one commit, not three per study
        plan.scanned.write_cache()
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
            # Unchanged inputs: outputs with their recorded size and mtime are not read
            # again (a re-run then costs a stat per file; `catalog verify` re-hashes).
            if (unchanged or recorded is None) and catalog.is_complete(
                uid, STUDY_KINDS, trust_mtime=unchanged
            ):
                complete.append(uid)
                catalog.record_mtimes(uid)  # any output re-hashed just now: trusted next time
                if recorded is None and study.fingerprint is not None:
                    catalog.record_input_fingerprint(uid, study.fingerprint)
            else:
                todo.append((uid, study.n_files, study.fingerprint))
    return PlannedTasks(plan, todo, str(catalog.out_dir), per_study), complete


def record_skipped(catalog: Catalog, run_id: int, plan: BuildPlan) -> None:
    """Every file the scan skipped, as a catalog failure of stage ``scan``."""
    with catalog.transaction():
        for path, why in plan.scanned.skipped():
            catalog.record_failure(run_id, None, "scan", _skipped_error(path, why, plan.root))


@contextlib.contextmanager
def _staging_errors(catalog: Catalog) -> Iterator[None]:
    """SQLite's errors while the scan is staged or read back, as one line naming the
    catalog (a full disk, or a full temp folder: the staged rows spill there)."""
    try:
        yield
    except sqlite3.Error as exc:
        hint = (
            "another petcorpus is writing this catalog; wait for it to finish"
            if "locked" in str(exc)
            else "check the free space of the output folder and of the temp folder "
            "(SQLITE_TMPDIR, else TMPDIR or /var/tmp)"
        )
        raise PetcorpusError(
            f"cannot keep the scan in the catalog ({exc}); {hint}",
            path=catalog.path,
            reason=Reason.OUTPUT_PATH,
        ) from exc


def _check_series_choice(
    found: dict[str, set[str]], options: ConversionOptions, root: Path
) -> None:
    """``--pet-series``/``--ct-series`` must name a series of that modality under the root
    (``found``: modality → the SeriesInstanceUIDs of the tree)."""
    for uid, modality, flag in (
        (options.pet_series, "PT", "--pet-series"),
        (options.ct_series, "CT", "--ct-series"),
    ):
        if uid is not None and uid not in found[modality]:
            raise PetcorpusError(
                f"{flag} {uid}: no {modality} series with this SeriesInstanceUID "
                "(`petcorpus scan` lists them)",
                path=root,
                reason=Reason.NO_SERIES,
            )


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
    files = "1 file" if len(skipped) == 1 else f"{len(skipped)} files"
    return f"{files} skipped: {first}{more}"


def _rel(path: Path, root: Path) -> str:
    try:
        return printable(str(path.relative_to(root)) or path.name)
    except ValueError:
        return printable(str(path))


def _iso_date(value: str | None) -> str | None:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None
