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

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus.dicom.header import series_summary
from petcorpus.dicom.scan_cache import SUMMARY_FIELDS, _FileKeys, fingerprint, stage_tree
from petcorpus.dicom.scan_store import ScanStore, path_text
from petcorpus.errors import PetcorpusError, Reason

__all__ = [
    "ScanResult",
    "Selection",
    "SeriesInfo",
    "StagedScan",
    "StudyInfo",
    "scan",
    "stage_scan",
]


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
    #: digest of the members' paths (relative to the root), sizes and mtimes
    fingerprint: str | None = dataclasses.field(default=None, compare=False)

    def __hash__(self) -> int:
        return hash((self.series_uid, self.files))

    def __reduce__(self) -> tuple[Any, ...]:
        # Compact for the trip to a worker: a series' files share one folder, so they
        # pickle as the folder and the names (a third of the bytes, ~4x faster to dump).
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        paths = tuple(map(str, state.pop("files")))
        folder = os.path.dirname(paths[0]) if paths else ""
        cut = len(folder) + 1
        if folder and all(p[:cut] == folder + os.sep and os.sep not in p[cut:] for p in paths):
            return (_series_from, (state, folder, tuple(p[cut:] for p in paths)))
        return (_series_from, (state, None, paths))

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def is_attenuation_corrected(self) -> bool:
        ci = self.params.get("CorrectedImage") or ()
        desc = (self.description or "").upper()
        return "ATTN" in ci and not re.search(r"\bNAC\b|NON.?AC|UNCORR", desc)


def _series_from(state: dict[str, Any], folder: str | None, names: tuple[str, ...]) -> SeriesInfo:
    base = Path(folder) if folder is not None else None
    files = tuple(base / n for n in names) if base is not None else tuple(map(Path, names))
    return SeriesInfo(files=files, **state)


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
    #: digest of the study's inputs (its series' fingerprints and damaged files): a changed
    #: file changes it; set when the scan keeps a cache, else None
    fingerprint: str | None = dataclasses.field(default=None, compare=False)

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
    #: headers parsed (files not found unchanged in the cache, and the first and earliest
    #: header of each series whose members changed): 0 for a re-run over an unchanged tree
    parsed: int = 0

    @property
    def n_files(self) -> int:
        return sum(st.n_files for st in self.studies)


#: first words of the skip reasons of files that may be damaged slices, as opposed to
#: files that are not images (other files, DICOMDIR, FIFOs...)
DAMAGED = ("zero bytes", "truncated", "unreadable", "cannot parse")


def _slice_key(keys: _FileKeys, normal: np.ndarray | None) -> tuple[int, float, str]:
    """Sort files along the slice normal; without orientation, by InstanceNumber."""
    if normal is not None:
        if keys.position is None:
            return (1, 0.0, str(keys.path))
        return (0, float(np.dot(keys.position, normal)), str(keys.path))
    return (0, keys.instance if keys.instance is not None else 0.0, str(keys.path))


def scan(
    root: str | PathLike[str],
    *,
    workers: int | None = None,
    processes: int | None = None,
    executor: Executor | None = None,
    store: ScanStore | None = None,
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
    store : ScanStore, optional
        Where the files are staged: a catalog's (:meth:`Catalog.scan_store
        <petcorpus.catalog.Catalog.scan_store>`) reads the last scan's cache, so files whose
        size and mtime match are not parsed and series whose members all match keep their
        summary (see :mod:`petcorpus.dicom.scan_cache`). Default: an in-memory database.

    Returns
    -------
    ScanResult
        Studies (sorted by UID) with their series (sorted by modality, number, UID; files
        sorted along the slice normal, else by InstanceNumber), the skipped files, and the
        number of headers parsed.
    """
    root_p = Path(root)
    conn = None
    if store is None:
        conn = sqlite3.connect(":memory:")
        store = ScanStore(conn, cache=False)
    try:
        staged = stage_scan(root_p, store, workers=workers, processes=processes, executor=executor)
        return ScanResult(
            root=root_p, studies=list(staged), skipped=staged.skipped(), parsed=staged.parsed
        )
    finally:
        if conn is not None:
            conn.close()


def stage_scan(
    root: Path,
    store: ScanStore,
    *,
    workers: int | None = None,
    processes: int | None = None,
    executor: Executor | None = None,
    skip: Path | None = None,
) -> StagedScan:
    """Stage every file under ``root`` in ``store`` and return the studies to read back
    one at a time (what a build plans with: nothing per file stays in memory).

    Parameters as :func:`scan`; ``skip``: a folder not to enter (a build's output folder
    inside the tree it converts).
    """
    if not root.exists():
        raise PetcorpusError("no such file or folder", path=root, reason=Reason.NO_SERIES)
    with contextlib.ExitStack() as stack:
        if executor is None and processes is not None and processes > 1:
            from petcorpus._procs import process_pool

            executor = stack.enter_context(
                process_pool(processes, preload=("petcorpus.dicom.scan",))
            )
        elif executor is None and workers is not None and workers > 1:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        stage_tree(root, store, executor, skip)
    return StagedScan(root, store)


@dataclasses.dataclass(frozen=True, slots=True)
class _Member:
    keys: _FileKeys
    ordinal: int
    #: the folder relative to the scan's root
    folder: str
    #: what the series' fingerprint takes of the file: relative path, (size, mtime_ns)
    identity: str


class StagedScan:
    """The studies of a staged scan (:func:`stage_scan`), read back one at a time.

    A study's series and files come back as :func:`scan` would return them; the summary of
    a series is parsed (its first and earliest headers) at most once per scan.
    """

    def __init__(self, root: Path, store: ScanStore) -> None:
        self.root = root
        self._store = store
        self._base = str(root if not root.is_file() else root.parent)
        self._summaries_parsed = 0
        #: (StudyInstanceUID, number of files) of every study, sorted by UID
        self.sizes: list[tuple[str, int]] = store.studies()

    def __iter__(self) -> Iterator[StudyInfo]:
        for uid, _ in self.sizes:
            yield self.study(uid)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def n_files(self) -> int:
        return sum(n for _, n in self.sizes)

    @property
    def parsed(self) -> int:
        """Headers parsed: files not taken from the cache, and series summaries read."""
        return self._store.n_parsed() + self._summaries_parsed

    def skipped(self) -> list[tuple[Path, str]]:
        """Files not read as DICOM images, with the reason, in walk order."""
        return [(self._path(f, n), why) for f, n, why in self._store.skipped()]

    def write_cache(self) -> None:
        """Store this scan as the cache of the next (after every study has been read)."""
        self._store.write_cache()

    def _path(self, folder: str, name: str) -> Path:
        return Path(
            os.path.join(self._base, folder, name) if folder else os.path.join(self._base, name)
        )

    def _damaged(self, folder: str) -> list[tuple[Path, str]]:
        """Files of ``folder`` that may be damaged slices, with the reason."""
        return [
            (self._path(folder, name), why)
            for name, why in self._store.skipped_in(folder)
            if why.startswith(DAMAGED) and not name.startswith(".")
        ]

    def study(self, uid: str) -> StudyInfo:
        """One study, as :func:`scan` returns it."""
        by_series: dict[str, list[_Member]] = {}
        folders: dict[str, Path] = {}  # relative folder -> its path
        for (
            series_uid,
            folder_b,
            name_b,
            size,
            mtime,
            ordinal,
            x,
            y,
            z,
            orient,
            instance,
            acquisition,
        ) in self._store.files_of(uid):
            folder, name = path_text(folder_b), path_text(name_b)
            path = self._path(folder, name)
            if folder not in folders:
                folders[folder] = path.parent
            keys = _FileKeys(
                path=path,
                study_uid=uid,
                series_uid=series_uid,
                position=None if x is None or y is None or z is None else (x, y, z),
                orientation=None if orient is None else _orientation(orient),
                instance=instance,
                acquisition=acquisition or "",
            )
            rel = f"{folder}/{name}" if folder else name
            stat = None if size is None else (size, mtime)
            by_series.setdefault(series_uid, []).append(
                _Member(keys, ordinal, folder, f"{rel}\0{stat}\n")
            )
        series: list[SeriesInfo] = []
        first_seen: list[tuple[int, dict[str, Any]]] = []
        series_folders: set[str] = set()
        for series_uid, members in by_series.items():
            info, summary = self._series(uid, series_uid, members, folders)
            series.append(info)
            first_seen.append((members[0].ordinal, summary))
            series_folders.update(m.folder for m in members)
        series.sort(key=lambda s: (s.modality, s.series_number or 0, s.series_uid))
        # The study's patient ID and date: those of the series met first in walk order.
        meta = min(first_seen, key=lambda t: t[0])[1] if first_seen else {}
        # Damaged files in a folder of their own beside the study's series (a SEG, say):
        # no series claims them, yet the study may be incomplete without them.
        beside = sorted(
            d
            for folder in self._store.folders_with_skipped_beside(series_folders)
            for d in self._damaged(folder)
        )
        cut = len(self._base) + 1
        fp = fingerprint(
            [
                *(f"{s.series_uid}:{s.fingerprint}" for s in series),
                *(
                    f"{str(p)[cut:]}:{why}"
                    for p, why in (*beside, *(d for s in series for d in s.unreadable))
                ),
            ]
        )
        return StudyInfo(
            uid,
            meta.get("patient_id"),
            meta.get("study_date"),
            series,
            unreadable=tuple(beside),
            fingerprint=fp,
        )

    def _series(
        self, study_uid: str, series_uid: str, members: list[_Member], folders: dict[str, Path]
    ) -> tuple[SeriesInfo, dict[str, Any]]:
        digest = hashlib.blake2b(digest_size=16)
        for m in members:  # walk order
            digest.update(m.identity.encode("utf-8", "surrogateescape"))
        fp = digest.hexdigest()
        first = members[0].keys
        summary = self._store.summary(study_uid, series_uid, fp)
        if summary is None:
            # The series' summary comes from its first file as walked and from its earliest
            # acquisition; only these two headers are read again, here.
            earliest = min(members, key=lambda m: m.keys.acquisition).keys
            summary = series_summary(first.path, earliest.path)
            self._summaries_parsed += 1 if earliest is first else 2
            self._store.put_summary(study_uid, series_uid, fp, summary)
        iop = first.orientation
        normal = None if iop is None else np.cross(iop[:3], iop[3:])
        keys = sorted((m.keys for m in members), key=functools.partial(_slice_key, normal=normal))
        zs = [k.position[2] for k in keys if k.position is not None]
        own = sorted({m.folder for m in members}, key=folders.__getitem__)
        info = SeriesInfo(
            series_uid=series_uid,
            study_uid=study_uid,
            files=tuple(k.path for k in keys),
            z_extent=(min(zs), max(zs)) if zs else None,
            unreadable=tuple(d for folder in own for d in self._damaged(folder)),
            fingerprint=fp,
            **{k: summary[k] for k in SUMMARY_FIELDS[:7]},
        )
        return info, summary


@functools.lru_cache(maxsize=64)
def _orientation(text: str) -> tuple[float, ...]:
    return tuple(json.loads(text))
