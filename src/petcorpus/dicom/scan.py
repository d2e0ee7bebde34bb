"""Index a DICOM tree by its headers: studies → series → files, and pick a study's CT and PET.

Files are grouped by StudyInstanceUID and SeriesInstanceUID, never by folder depth; files
that are not DICOM (or cannot be read) are skipped and listed with the reason. Only headers
are read (``stop_before_pixels`` with a short list of tags).

The choice of a study's series (:meth:`StudyInfo.select`):

PET
    Among the PT series, attenuation-corrected ones (CorrectedImage contains ATTN and the
    description does not say NAC) first, then one that a SEG of the study references, then
    the one with the most slices, then the lowest SeriesInstanceUID (for a deterministic
    answer). When two series remain equally suitable, the choice is reported as a warning
    (``--pet-series UID`` picks another).
CT
    Among the CT series, those whose z-extent covers the chosen PET's (± half a slice)
    first, then those sharing the PET's FrameOfReferenceUID, then the most slices, then the
    lowest UID; equally suitable CTs are reported (``--ct-series UID`` picks another), and
    so is a chosen CT that does not cover the PET or has another FrameOfReferenceUID.
SEG
    Every SEG series of the study, those referencing the chosen PET first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from petcorpus._memory import gc_paused
from petcorpus.dicom.header import as_float, as_text, read_scan_header, series_params
from petcorpus.dicom.io import DICOMDIR_SOP_CLASS, cannot_parse, get_value
from petcorpus.errors import PetcorpusError, Reason

__all__ = ["ScanResult", "Selection", "SeriesInfo", "StudyInfo", "scan"]


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """Header summary of one series (what the catalog stores)."""

    series_uid: str
    study_uid: str
    modality: str
    files: tuple[Path, ...]
    manufacturer: str | None = None
    model: str | None = None
    frame_of_reference_uid: str | None = None
    description: str | None = None
    series_number: int | None = None
    #: (min, max) of ImagePositionPatient z (LPS, mm) over the slices; None without positions
    z_extent: tuple[float, float] | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: files in the series' folder(s) that the scan could not read as DICOM although they
    #: may be slices (zero bytes, truncated, unreadable, unparsable), with the reason:
    #: a gap in the series is then reported as these files, not as a missing slice
    unreadable: tuple[tuple[Path, str], ...] = ()

    def __hash__(self) -> int:
        return hash((self.series_uid, self.files))

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def is_attenuation_corrected(self) -> bool:
        ci = self.params.get("CorrectedImage") or ()
        desc = (self.description or "").upper()
        return "ATTN" in ci and not re.search(r"\bNAC\b|NON.?AC|UNCORR", desc)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The series chosen for conversion, and why."""

    ct: SeriesInfo
    pet: SeriesInfo
    segs: list[SeriesInfo]
    reasons: list[str]
    #: choices a user may want to revisit (two equally good series), never silent
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """One study: its UID, anonymised identifiers and its series."""

    study_uid: str
    patient_id: str | None
    study_date: str | None
    series: list[SeriesInfo]
    #: damaged files (with the reason) in folders of their own beside the study's series
    unreadable: tuple[tuple[Path, str], ...] = ()

    def by_modality(self, modality: str) -> list[SeriesInfo]:
        return [s for s in self.series if s.modality == modality]

    @property
    def n_files(self) -> int:
        return sum(s.n_files for s in self.series)

    def select(self, *, pet_series: str | None = None, ct_series: str | None = None) -> Selection:
        """Choose the PET, the CT and the SEGs (rule in the module docstring).

        Parameters
        ----------
        pet_series, ct_series : str, optional
            SeriesInstanceUIDs that override the rule for this study (ignored when the
            study has no series of that UID, so one choice can travel with a whole batch).

        Raises
        ------
        PetcorpusError
            Reason NO_SERIES when the study has no PT or no CT series.
        """
        reasons: list[str] = []
        warnings: list[str] = []
        pets = self.by_modality("PT")
        cts = self.by_modality("CT")
        for name, found in (("PT", pets), ("CT", cts)):
            if not found:
                have = sorted({s.modality for s in self.series}) or ["nothing"]
                files = [f for s in self.series for f in s.files]
                raise PetcorpusError(
                    f"study {self.study_uid} has no {name} series (it has {', '.join(have)})",
                    # a study of one file (its UIDs damaged, say): that file
                    path=(files[0] if len(files) == 1 else files[0].parent) if files else None,
                    reason=Reason.NO_SERIES,
                )
        annotated = {s.params.get("ReferencedSeriesUID") for s in self.by_modality("SEG")}
        pets = sorted(
            pets,
            key=lambda s: (
                s.series_uid != pet_series,
                not s.is_attenuation_corrected,
                s.series_uid not in annotated,
                -s.n_files,
                s.series_uid,
            ),
        )
        pet = pets[0]
        if pet.series_uid == pet_series:
            reasons.append(f"PET {pet.series_uid} ({pet.description}): chosen by --pet-series")
        elif len(pets) == 1:
            reasons.append(f"PET {pet.series_uid}: the only PT series")
        else:
            why = "attenuation corrected" if pet.is_attenuation_corrected else "no AC series"
            if pet.series_uid in annotated:
                why += ", the SEG's reference"
            reasons.append(
                f"PET {pet.series_uid} ({pet.description}): {why}, {pet.n_files} slices, "
                f"chosen from {len(pets)} PT series"
            )
            rivals = [
                s for s in pets[1:] if s.is_attenuation_corrected == pet.is_attenuation_corrected
            ]
            if rivals:
                kind = "attenuation-corrected PT" if pet.is_attenuation_corrected else "PT"
                others = ", ".join(f"{s.series_uid} ({s.description})" for s in rivals)
                warnings.append(
                    f"{len(rivals) + 1} {kind} series: chose {pet.series_uid} "
                    f"({pet.description}, {pet.n_files} slices) over {others}; "
                    "choose another with --pet-series UID"
                )

        def covers(ct: SeriesInfo) -> bool:
            if ct.z_extent is None or pet.z_extent is None:
                return False
            tol = 0.5 * float(pet.params.get("SliceThickness") or 0.0) + 1e-3
            return ct.z_extent[0] <= pet.z_extent[0] + tol and ct.z_extent[1] >= (
                pet.z_extent[1] - tol
            )

        def same_for(ct: SeriesInfo) -> bool:
            return bool(ct.frame_of_reference_uid) and (
                ct.frame_of_reference_uid == pet.frame_of_reference_uid
            )

        cts = sorted(
            cts,
            key=lambda s: (
                s.series_uid != ct_series,
                not covers(s),
                not same_for(s),
                -s.n_files,
                s.series_uid,
            ),
        )
        ct = cts[0]
        parts = [
            "covers the PET's z-extent" if covers(ct) else "does NOT cover the PET's z-extent"
        ]
        if same_for(ct):
            parts.append("same frame of reference")
        parts.append(f"{ct.n_files} slices")
        if ct.series_uid == ct_series:
            parts.insert(0, "chosen by --ct-series")
        reasons.append(
            f"CT {ct.series_uid} ({ct.description}): {', '.join(parts)}"
            + (f", chosen from {len(cts)} CT series" if len(cts) > 1 else ", the only CT series")
        )
        rivals = [
            s
            for s in cts[1:]
            if ct.series_uid != ct_series
            and (covers(s), same_for(s)) == (covers(ct), same_for(ct))
        ]
        if not covers(ct):  # converted, but CTres is -1024 where the CT has no slice
            warnings.append(
                f"CT {ct.series_uid} does not cover the PET's z-extent (CT z "
                f"{_extent(ct)} mm, PET z {_extent(pet)} mm): CTres is -1024 HU outside the CT"
            )
        if not same_for(ct):  # the grids are taken to share patient coordinates
            ct_for, pet_for = ct.frame_of_reference_uid, pet.frame_of_reference_uid
            what = (
                f"differ in FrameOfReferenceUID ({ct_for or 'none'} vs {pet_for or 'none'})"
                if ct_for or pet_for
                else "have no FrameOfReferenceUID"
            )
            warnings.append(
                f"CT {ct.series_uid} and PET {pet.series_uid} {what}: CTres assumes their "
                "patient coordinates agree"
            )
        if rivals:
            warnings.append(
                f"{len(rivals) + 1} equally suitable CT series: chose {ct.series_uid} "
                f"({ct.description}, {ct.n_files} slices) over "
                f"{', '.join(f'{s.series_uid} ({s.description})' for s in rivals)}; "
                "choose another with --ct-series UID"
            )
        segs = sorted(
            self.by_modality("SEG"),
            key=lambda s: (s.params.get("ReferencedSeriesUID") != pet.series_uid, s.series_uid),
        )
        for s in segs:
            ref = s.params.get("ReferencedSeriesUID")
            what = (
                "the PET"
                if ref == pet.series_uid
                else ("the CT" if ref == ct.series_uid else f"series {ref}")
            )
            reasons.append(f"SEG {s.series_uid}: references {what}")
        return Selection(ct=ct, pet=pet, segs=segs, reasons=reasons, warnings=warnings)


def _extent(series: SeriesInfo) -> str:
    z = series.z_extent
    return "unknown" if z is None else f"{z[0]:.1f} to {z[1]:.1f}"


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """Studies found under a root, and the files skipped with the reason."""

    root: Path
    studies: list[StudyInfo]
    skipped: list[tuple[Path, str]]

    @property
    def n_files(self) -> int:
        return sum(st.n_files for st in self.studies)


# -- reading -----------------------------------------------------------------------------------
def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


@dataclasses.dataclass(frozen=True, slots=True)
class _FileKeys:
    """What grouping and sorting need of one file: plain values that pickle ~50x faster
    than the pydicom Dataset (worker processes return these, not headers)."""

    path: Path
    study_uid: str
    series_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    instance: float | None
    acquisition: str

    @classmethod
    def from_dataset(cls, path: Path, ds: Dataset) -> _FileKeys:
        return cls(
            path=path,
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            orientation=_floats(ds.get("ImageOrientationPatient"), 6),
            instance=as_float(ds.get("InstanceNumber")),
            acquisition=_acq_key(ds),
        )


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(x) for x in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


#: first words of the skip reasons of files that may be damaged slices, as opposed to
#: files that are not images (other files, DICOMDIR, FIFOs...)
DAMAGED = ("zero bytes", "truncated", "unreadable", "cannot parse")


def _read_header(path: Path) -> _FileKeys | str:
    """The file's keys, or why it is skipped (a reason starting with one of :data:`DAMAGED`
    when the file may be a damaged slice)."""
    try:
        ds = read_scan_header(path)
    except PetcorpusError as exc:
        return exc.message
    try:
        if not ds.get("SeriesInstanceUID") or not ds.get("StudyInstanceUID"):
            meta = getattr(ds, "file_meta", None)
            sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
            if sop_class == DICOMDIR_SOP_CLASS or path.name.upper() == "DICOMDIR":
                return "DICOMDIR (an index of the files, not an image)"
            return "no StudyInstanceUID/SeriesInstanceUID"
        return _FileKeys.from_dataset(path, ds)
    except Exception as exc:  # pydicom converts elements when read: a damaged header
        return cannot_parse(exc)


def _int(v: Any) -> int | None:
    f = as_float(v)
    return int(f) if f is not None and math.isfinite(f) else None


def _slice_key(keys: _FileKeys, normal: np.ndarray | None) -> tuple[int, float, str]:
    """Sort files along the slice normal; without orientation, by InstanceNumber."""
    if normal is not None:
        if keys.position is None:
            return (1, 0.0, str(keys.path))
        return (0, float(np.dot(keys.position, normal)), str(keys.path))
    return (0, keys.instance if keys.instance is not None else 0.0, str(keys.path))


def _acq_key(ds: Dataset) -> str:
    adt = as_text(ds.get("AcquisitionDateTime"))
    if adt:
        return adt
    return (as_text(ds.get("AcquisitionDate")) or "") + (as_text(ds.get("AcquisitionTime")) or "~")


def _read_headers(paths: list[Path]) -> list[_FileKeys | str]:
    with gc_paused():
        return [_read_header(p) for p in paths]


def _read_shared(parts: list[list[Path]], executor: Executor) -> list[_FileKeys | str]:
    """Parse chunks of files on ``executor`` and, meanwhile, on this thread.

    A feeder thread hands chunks from the front to the worker processes, a few at a time;
    this thread parses chunks from the back until none is left. A fresh process pool
    needs ~0.5 s before its first worker runs (its server imports the conversion stack,
    and ``submit`` blocks until then): the driver parses instead of waiting.
    """
    import threading
    from concurrent.futures import Future
    from concurrent.futures import wait as wait_all

    results: list[list[_FileKeys | str] | None] = [None] * len(parts)
    lock = threading.Lock()
    ends = [0, len(parts)]  # next chunk from the front, one past the last from the back
    slots = threading.BoundedSemaphore(2 * (os.cpu_count() or 1))  # chunks queued at once
    futures: list[tuple[int, Future[list[_FileKeys | str]]]] = []

    def take(front: bool) -> int | None:
        with lock:
            if ends[0] >= ends[1]:
                return None
            if front:
                ends[0] += 1
                return ends[0] - 1
            ends[1] -= 1
            return ends[1]

    failed: list[BaseException] = []

    def feed() -> None:
        try:
            while True:
                slots.acquire()
                i = take(front=True)
                if i is None:
                    return
                fut = executor.submit(_read_headers, parts[i])
                fut.add_done_callback(lambda _f: slots.release())
                futures.append((i, fut))
        except BaseException as exc:  # e.g. a broken pool: re-raised by the driver below
            failed.append(exc)

    feeder = threading.Thread(target=feed, name="petcorpus-scan-feeder", daemon=True)
    feeder.start()
    while (i := take(front=False)) is not None:
        results[i] = _read_headers(parts[i])
    feeder.join()
    if failed:
        raise failed[0]
    wait_all([fut for _, fut in futures])
    for i, fut in futures:
        results[i] = fut.result()
    return [h for part in results if part is not None for h in part]


def scan(
    root: str | PathLike[str],
    *,
    workers: int | None = None,
    processes: int | None = None,
    executor: Executor | None = None,
) -> ScanResult:
    """Index every DICOM file under ``root`` by its headers.

    Parameters
    ----------
    root : path
        A folder (walked recursively, any layout) or a single file.
    workers : int, optional
        Threads reading headers (default 1). Parsing holds the GIL, so threads pay off only
        where each read waits on the network; on a local disk they slow the scan down
        (5,224 files: 2.3 s on one thread, 4.3 s on two, 5.0 s on six).
    processes : int, optional
        Parse headers in this many processes instead (~0.45 ms per file per process; the
        processes return plain per-file keys, and the driver re-reads only the first and
        the earliest header of each series).
    executor : concurrent.futures.Executor, optional
        Parse on this process pool instead of starting one (``build`` passes the pool it
        then converts with); it is left running.

    Returns
    -------
    ScanResult
        Studies (sorted by UID) with their series (sorted by modality, number, UID; files
        sorted along the slice normal, else by InstanceNumber), and the skipped files.
    """
    root_p = Path(root)
    if not root_p.exists():
        raise PetcorpusError("no such file or folder", path=root_p, reason=Reason.NO_SERIES)
    with gc_paused():
        return _scan(root_p, workers, processes, executor)


def _scan(
    root_p: Path, workers: int | None, processes: int | None, executor: Executor | None
) -> ScanResult:
    paths = list(_walk(root_p))
    chunk = 256
    parts = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    if executor is not None and len(parts) > 1:
        headers = _read_shared(parts, executor)
    elif processes is not None and processes > 1 and len(parts) > 1:
        from petcorpus._procs import process_pool

        with process_pool(processes, preload=(__name__,)) as procs:
            headers = _read_shared(parts, procs)
    else:
        n_workers = workers or 1
        if n_workers == 1:  # a thread pool of one only adds hand-offs
            headers = [_read_header(p) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                headers = list(pool.map(_read_header, paths))

    skipped: list[tuple[Path, str]] = []
    groups: dict[tuple[str, str], list[_FileKeys]] = {}
    for p, h in zip(paths, headers, strict=True):
        if isinstance(h, str):
            skipped.append((p, h))
            continue
        groups.setdefault((h.study_uid, h.series_uid), []).append(h)
    damaged: dict[Path, list[tuple[Path, str]]] = {}  # folder -> files that may be slices
    for p, why in skipped:
        if why.startswith(DAMAGED) and not p.name.startswith("."):
            damaged.setdefault(p.parent, []).append((p, why))

    studies: dict[str, list[SeriesInfo]] = {}
    study_meta: dict[str, Dataset] = {}
    for (study_uid, series_uid), members in groups.items():
        # The series' summary comes from its first file as walked and from its earliest
        # acquisition; only these two headers are read again, here.
        first_keys = members[0]
        first = read_scan_header(first_keys.path)
        modality = as_text(get_value(first, "Modality")) or "OT"
        iop = first_keys.orientation
        normal = None if iop is None else np.cross(iop[:3], iop[3:])
        members.sort(key=functools.partial(_slice_key, normal=normal))
        earliest_keys = min(members, key=lambda m: m.acquisition)
        earliest = first if earliest_keys is first_keys else read_scan_header(earliest_keys.path)
        zs = [m.position[2] for m in members if m.position is not None]
        info = SeriesInfo(
            series_uid=series_uid,
            study_uid=study_uid,
            modality=modality,
            files=tuple(m.path for m in members),
            manufacturer=as_text(get_value(first, "Manufacturer")),
            model=as_text(get_value(first, "ManufacturerModelName")),
            frame_of_reference_uid=as_text(get_value(first, "FrameOfReferenceUID")),
            description=as_text(get_value(first, "SeriesDescription")),
            series_number=_int(get_value(first, "SeriesNumber")),
            z_extent=(min(zs), max(zs)) if zs else None,
            params=series_params(modality, first, earliest),
            unreadable=tuple(
                d
                for folder in sorted({m.path.parent for m in members})
                for d in damaged.get(folder, ())
            ),
        )
        studies.setdefault(study_uid, []).append(info)
        study_meta.setdefault(study_uid, first)

    out = []
    for uid in sorted(studies):
        series = sorted(
            studies[uid], key=lambda s: (s.modality, s.series_number or 0, s.series_uid)
        )
        meta = study_meta[uid]
        # Damaged files in a folder of their own beside the study's series (a SEG, say):
        # no series claims them, yet the study may be incomplete without them.
        series_folders = {f.parent for s in series for f in s.files}
        beside = sorted(
            d
            for folder, files in damaged.items()
            if folder not in series_folders and folder.parent in {f.parent for f in series_folders}
            for d in files
        )
        out.append(
            StudyInfo(
                uid,
                as_text(get_value(meta, "PatientID")),
                as_text(get_value(meta, "StudyDate")),
                series,
                unreadable=tuple(beside),
            )
        )
    return ScanResult(root=root_p, studies=out, skipped=skipped)
