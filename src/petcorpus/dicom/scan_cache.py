"""The per-file keys of a scan: parsed from headers (in worker processes), or taken from
what the last scan of the same tree remembered, so a re-run parses no unchanged header.

A file is known by its path relative to the root, its size and its mtime (ns): when all
three match the cached row, the scan takes the file's keys (UIDs, position, orientation,
InstanceNumber, acquisition time) or its skip reason from the row instead of parsing the
header. A series is known by the fingerprint of its members (paths, sizes, mtimes): when
it matches, the series' summary (modality, vendor, params...) comes from the cache too,
and the series' first and earliest headers are not read again.

:func:`stage_tree` walks the tree and writes every file's row into a
:class:`~petcorpus.dicom.scan_store.ScanStore` as it goes, a few thousand at a time: the
headers to parse travel to the worker processes in chunks (a bounded number at once) and
their rows are staged as they come back, so the driver holds no list of the tree's files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from petcorpus._memory import gc_paused
from petcorpus.dicom.header import as_float, as_text, read_scan_header
from petcorpus.dicom.io import DICOMDIR_SOP_CLASS, cannot_parse
from petcorpus.errors import PetcorpusError

__all__ = ["SUMMARY_FIELDS", "fingerprint", "stage_tree", "walk_folders"]

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


def walk_folders(root: Path, skip: Path | None = None) -> Iterator[tuple[Path, str, list[str]]]:
    """(folder, folder relative to ``root``, sorted file names) in the scan's walk order;
    the folder ``skip`` (a build's output inside its DICOM tree) is not entered."""
    if root.is_file():
        yield root.parent, "", [root.name]
        return
    skip_real = os.path.realpath(skip) if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if skip_real is not None:
            dirnames[:] = [
                d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) != skip_real
            ]
        rel = os.path.relpath(dirpath, root)
        yield Path(dirpath), "" if rel == "." else rel.replace(os.sep, "/"), sorted(filenames)


def stat_key(path: str | os.PathLike[str]) -> tuple[int, int] | None:
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


#: files per chunk sent to a worker process, and staged rows per insert
_CHUNK, _STAGE_BATCH = 256, 4096

_Pending = list[tuple[int, str, str, "tuple[int, int] | None", Path]]


class _ChunkParser:
    """Parse chunks of files on ``executor`` and, when it is busy, on this thread.

    A feeder thread hands chunks to the executor, a few at a time (``submit`` blocks
    while a fresh process pool starts: ~0.5 s for its server to import the conversion
    stack); when more than that many wait, this thread parses the newest itself. Finished
    chunks are collected by :meth:`ready` and :meth:`finish`, in any order; the parser
    holds only the chunks waiting or running.
    """

    def __init__(self, executor: Executor | None) -> None:
        import collections
        import threading

        self._executor = executor
        self._done: collections.deque[tuple[_Pending, list[_FileKeys | str]]] = collections.deque()
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._running: dict[Any, _Pending] = {}  # future -> its chunk
        self._failed: list[BaseException] = []
        self._limit = 2 * (os.cpu_count() or 1)  # chunks queued or running at once
        self._slots = threading.BoundedSemaphore(self._limit)
        self._wake = threading.Condition()
        self._closed = False
        self._feeder: threading.Thread | None = None
        if executor is not None:
            self._feeder = threading.Thread(
                target=self._feed, name="petcorpus-scan-feeder", daemon=True
            )
            self._feeder.start()

    def _parse_here(self, chunk: _Pending) -> None:
        self._done.append((chunk, _read_headers([c[4] for c in chunk])))

    def submit(self, chunk: _Pending) -> None:
        if self._executor is None:
            self._parse_here(chunk)
            return
        with self._wake:
            self._waiting.append(chunk)
            busy = len(self._waiting) > self._limit
            mine = self._waiting.pop() if busy else None
            self._wake.notify()
        if mine is not None:
            self._parse_here(mine)

    def _feed(self) -> None:
        try:
            while True:
                self._slots.acquire()
                with self._wake:
                    while not self._waiting and not self._closed:
                        self._wake.wait()
                    if not self._waiting:
                        self._slots.release()
                        return
                    chunk = self._waiting.popleft()
                assert self._executor is not None
                fut = self._executor.submit(_read_headers, [c[4] for c in chunk])
                with self._wake:
                    self._running[fut] = chunk
                fut.add_done_callback(lambda _f: self._slots.release())
        except BaseException as exc:  # e.g. a broken pool: re-raised on this thread
            self._failed.append(exc)

    def ready(self) -> Iterator[tuple[_Pending, list[_FileKeys | str]]]:
        """Chunks parsed since the last call (a worker's error is raised here)."""
        while self._done:
            yield self._done.popleft()
        with self._wake:
            finished = [fut for fut in self._running if fut.done()]
            chunks = [self._running.pop(fut) for fut in finished]
        for fut, chunk in zip(finished, chunks, strict=True):
            yield chunk, fut.result()

    def finish(self) -> Iterator[tuple[_Pending, list[_FileKeys | str]]]:
        """Every chunk left: this thread parses what no worker has taken yet."""
        if self._feeder is not None:
            while True:
                with self._wake:
                    mine = self._waiting.pop() if self._waiting else None
                if mine is None:
                    break
                self._parse_here(mine)
                yield from self.ready()
            with self._wake:
                self._closed = True
                self._wake.notify_all()
            self._feeder.join()
            if self._failed:
                raise self._failed[0]
            from concurrent.futures import wait

            wait(list(self._running))
        yield from self.ready()


def _staged_row(
    ordinal: int, rel: str, name: str, stat: tuple[int, int] | None, h: _FileKeys | str
) -> tuple[Any, ...]:
    """The staged row of a file this scan parsed (see ScanStore.stage)."""
    size, mtime = stat if stat is not None else (None, None)
    if isinstance(h, str):
        return (ordinal, rel, name, size, mtime, *(None,) * 8, h, 1, 1)
    pos = h.position or (None, None, None)
    ok = cacheable(*pos, h.instance, *(h.orientation or ()))
    orientation = None if h.orientation is None else json.dumps(list(h.orientation))
    return (
        ordinal,
        rel,
        name,
        size,
        mtime,
        h.study_uid,
        h.series_uid,
        *pos,
        orientation,
        h.instance,
        h.acquisition,
        None,
        1,
        int(ok),
    )


def _cached_row(ordinal: int, rel: str, name: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The staged row of a file taken from the cache."""
    if row[10] is None and (row[2] is None or row[3] is None):
        row = (*row[:10], "no StudyInstanceUID/SeriesInstanceUID")
    return (ordinal, rel, name, *row, 0, 1)


def stage_tree(
    root: Path, store: Any, executor: Executor | None, skip: Path | None = None
) -> None:
    """Write a row for every file under ``root`` (walk order; not under ``skip``) into
    ``store`` (a :class:`~petcorpus.dicom.scan_store.ScanStore`): from the cache when the
    file's size and mtime match, else from its header, parsed on ``executor`` (or this
    thread)."""
    known = store.cached_folders()
    parser = _ChunkParser(executor)
    rows: list[tuple[Any, ...]] = []
    pending: _Pending = []
    ordinal = 0

    def take(done: Iterator[tuple[_Pending, list[_FileKeys | str]]]) -> None:
        for chunk, headers in done:
            rows.extend(
                _staged_row(o, rel, name, stat, h)
                for (o, rel, name, stat, _), h in zip(chunk, headers, strict=True)
            )

    with gc_paused():
        for folder, rel, names in walk_folders(root, skip):
            cached = store.cached_files(rel) if rel in known else {}  # one folder at a time
            base = str(folder)
            for name in names:
                path = os.path.join(base, name)
                stat = stat_key(path)
                row = cached.get(name)
                if row is not None and stat is not None and tuple(row[:2]) == stat:
                    rows.append(_cached_row(ordinal, rel, name, row))
                else:
                    pending.append((ordinal, rel, name, stat, Path(path)))
                    if len(pending) == _CHUNK:
                        parser.submit(pending)
                        pending = []
                ordinal += 1
            take(parser.ready())
            if len(rows) >= _STAGE_BATCH:
                store.stage(rows)
                rows.clear()
        if pending:
            parser.submit(pending)
        take(parser.finish())
        store.stage(rows)
