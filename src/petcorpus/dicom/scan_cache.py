"""The per-file keys of a scan: parsed from headers (in worker processes), or taken from
what the last scan of the same tree remembered, so a re-run parses no unchanged header.

A file is known by its path relative to the root, its size and its mtime (ns): when all
three match the cached row, the scan takes the file's keys (UIDs, position, orientation,
InstanceNumber, acquisition time) or its skip reason from the row instead of parsing the
header. A series is known by the fingerprint of its members (paths, sizes, mtimes): when
it matches, the series' summary (modality, vendor, params...) comes from the cache too,
and the series' first and earliest headers are not read again.

The cache lives in the catalog (:class:`~petcorpus.catalog.Catalog`); the scan only sees
the :class:`ScanCache` protocol, reads it folder by folder (the driver never holds the
whole tree's rows), and returns the rows to write as :class:`ScanCacheWrites`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset

from petcorpus._memory import gc_paused
from petcorpus.dicom.header import as_float, as_text, read_scan_header
from petcorpus.dicom.io import DICOMDIR_SOP_CLASS, cannot_parse
from petcorpus.errors import PetcorpusError

__all__ = [
    "CachedFile",
    "EmptyCache",
    "ScanCache",
    "ScanCacheWrites",
    "fingerprint",
    "read_cached",
    "walk_folders",
]

#: One cached file: size, mtime_ns, study_uid, series_uid, x, y, z, orientation (JSON),
#: instance, acquisition, skip reason (the UIDs are None for a skipped file).
CachedFile = tuple[
    int,
    int,
    str | None,
    str | None,
    float | None,
    float | None,
    float | None,
    str | None,
    float | None,
    str | None,
    str | None,
]

#: The fields of a series' summary that the cache keeps (besides its members).
SUMMARY_FIELDS = (
    "modality",
    "manufacturer",
    "model",
    "frame_of_reference_uid",
    "description",
    "series_number",
    "params",
    "patient_id",
    "study_date",
)


class ScanCache(Protocol):
    """An earlier scan of the same root, as :func:`petcorpus.dicom.scan.scan` reads it."""

    def folders(self) -> set[str]:
        """Folders (relative to the root, ``/``-separated, ``""`` for the root itself)
        that have cached files."""
        ...

    def files_in(self, folder: str) -> dict[str, CachedFile]:
        """The cached files of one folder: name → row."""
        ...

    def series(self) -> Mapping[tuple[str, str], tuple[str, str]]:
        """(study UID, series UID) → (fingerprint, summary as JSON)."""
        ...


@dataclasses.dataclass
class ScanCacheWrites:
    """What a scan changes in its cache (written by the caller, in one transaction)."""

    #: (folder, name, *CachedFile): files parsed by this scan
    files: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    #: (folder, name) of cached files that are gone
    gone: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: cached folders that are gone
    gone_folders: list[str] = dataclasses.field(default_factory=list)
    #: every series of this scan: (study UID, series UID, fingerprint, summary JSON); the
    #: cache's other series are dropped
    series: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)

    def clear(self) -> None:
        """Forget the rows (once written)."""
        for rows in (self.files, self.gone, self.gone_folders, self.series):
            rows.clear()


def walk_folders(root: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """(folder, folder relative to ``root``, sorted file names) in the scan's walk order."""
    if root.is_file():
        yield root.parent, "", [root.name]
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        yield Path(dirpath), "" if rel == "." else rel.replace(os.sep, "/"), sorted(filenames)


def stat_key(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None when it cannot be stat'ed (a broken link)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def cacheable(*values: float | None) -> bool:
    """SQLite stores NaN as NULL: a file with a non-finite key is parsed on every run."""
    return all(v is None or math.isfinite(v) for v in values)


def fingerprint(parts: Iterator[str] | list[str]) -> str:
    """A short digest of ordered text parts."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


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


def _acq_key(ds: Dataset) -> str:
    adt = as_text(ds.get("AcquisitionDateTime"))
    if adt:
        return adt
    return (as_text(ds.get("AcquisitionDate")) or "") + (as_text(ds.get("AcquisitionTime")) or "~")


class _Memo(dict[Any, Any]):
    """One object per distinct UID or orientation read from the cache (less memory)."""

    def __missing__(self, key: Any) -> Any:
        value = tuple(json.loads(key)) if isinstance(key, str) and key[:1] == "[" else key
        self[key] = value
        return value


def _from_row(path: Path, row: CachedFile, memo: _Memo) -> _FileKeys | str:
    _, _, study, series, x, y, z, orientation, instance, acquisition, skip = row
    if skip is not None or study is None or series is None:
        return skip or "no StudyInstanceUID/SeriesInstanceUID"
    return _FileKeys(
        path=path,
        study_uid=memo[study],
        series_uid=memo[series],
        position=None if x is None or y is None or z is None else (x, y, z),
        orientation=None if orientation is None else memo[orientation],
        instance=instance,
        acquisition=acquisition or "",
    )


def _to_row(folder: str, name: str, stat: tuple[int, int], h: _FileKeys | str) -> tuple | None:
    """The cache row of a parsed file (None when it cannot be stored faithfully)."""
    if isinstance(h, str):
        return (folder, name, *stat, None, None, None, None, None, None, None, None, h)
    pos = h.position or (None, None, None)
    if not cacheable(*pos, h.instance, *(h.orientation or ())):
        return None
    orientation = None if h.orientation is None else json.dumps(list(h.orientation))
    return (
        folder,
        name,
        *stat,
        h.study_uid,
        h.series_uid,
        *pos,
        orientation,
        h.instance,
        h.acquisition,
        None,
    )


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


def _parse(
    paths: list[Path], workers: int | None, processes: int | None, executor: Executor | None
) -> list[_FileKeys | str]:
    chunk = 256
    parts = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    if executor is not None and len(parts) > 1:
        return _read_shared(parts, executor)
    if processes is not None and processes > 1 and len(parts) > 1:
        from petcorpus._procs import process_pool

        with process_pool(processes, preload=("petcorpus.dicom.scan",)) as procs:
            return _read_shared(parts, procs)
    n_workers = workers or 1
    if n_workers == 1:  # a thread pool of one only adds hand-offs
        return [_read_header(p) for p in paths]
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(_read_header, paths))


def read_cached(
    root: Path, cache: ScanCache, parse: Callable[[list[Path]], list[_FileKeys | str]]
) -> tuple[list[Path], list[_FileKeys | str], list[tuple[int, int] | None], ScanCacheWrites, int]:
    """Every file under ``root`` in walk order with its keys (from ``cache`` when its size
    and mtime match, else by ``parse``), its (size, mtime_ns), the cache rows to write, and
    the number of files parsed."""
    paths: list[Path] = []
    headers: list[_FileKeys | str | None] = []
    stats: list[tuple[int, int] | None] = []
    todo: list[tuple[int, str, str]] = []  # (index, folder, name) of the files to parse
    writes = ScanCacheWrites()
    known, seen, memo = cache.folders(), set(), _Memo()
    for folder, rel, names in walk_folders(root):
        cached = cache.files_in(rel) if rel in known else {}  # one folder at a time
        seen.add(rel)
        for name in names:
            path = folder / name
            stat = stat_key(path)
            row = cached.pop(name, None)
            if row is not None and stat is not None and row[:2] == stat:
                headers.append(_from_row(path, row, memo))
            else:
                headers.append(None)
                todo.append((len(paths), rel, name))
            paths.append(path)
            stats.append(stat)
        writes.gone.extend((rel, name) for name in cached)  # cached, no longer there
    writes.gone_folders = sorted(known - seen)
    parsed = parse([paths[i] for i, _, _ in todo])
    for (i, rel, name), h in zip(todo, parsed, strict=True):
        headers[i] = h
        stat = stats[i]
        row = None if stat is None else _to_row(rel, name, stat, h)
        if row is not None:
            writes.files.append(row)
    return paths, headers, stats, writes, len(todo)  # type: ignore[return-value]


class EmptyCache:
    """A :class:`ScanCache` that remembers nothing (a first build): every file is parsed,
    and the scan returns the rows to write."""

    def folders(self) -> set[str]:
        return set()

    def files_in(self, folder: str) -> dict[str, CachedFile]:
        return {}

    def series(self) -> dict[tuple[str, str], tuple[str, str]]:
        return {}
