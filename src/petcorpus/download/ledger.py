"""The download ledger: a small journal in DEST that records what is complete.

One entry per finished file (keyed by its path relative to DEST) with the URL, size and
checksums, plus entries for higher-level steps (an unpacked TCIA series, an unpacked
ENHANCE zip). A re-run consults it to skip finished work without touching the network.

The ledger is a JSON-lines journal (``.petcorpus-download.jsonl``): each record appends one
line, so recording is O(1) even for the 14,000 files of a per-case release. Each record
starts on a fresh line (a newline is written first if the file does not end with one), so a
line cut by a killed run loses only itself: the reader skips it, counts it (``torn``) and
logs a warning, and the records appended after it are kept. Later lines override
earlier ones; the journal is compacted (rewritten atomically) when it is opened and holds
many superseded lines. Appends are serialised by a lock, so threads may record at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LEDGER_NAME", "Ledger"]

LEDGER_NAME = ".petcorpus-download.jsonl"

log = logging.getLogger(__name__)
_RECORD_START = b'{"key": '


class Ledger:
    """Thread-safe record of completed downloads in ``<root>/.petcorpus-download.jsonl``.

    Parameters
    ----------
    root : str or PathLike
        The download folder (DEST); created if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / LEDGER_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        #: lines skipped on reading because a killed run cut them
        self.torn = 0
        lines = 0
        if self.path.exists():
            with self.path.open("rb") as fh:
                for line in fh:
                    lines += 1
                    if line.strip():
                        self._read_line(line)
        if self.torn:
            log.warning(
                "%s: skipped %d torn line(s) left by an interrupted run", self.path, self.torn
            )
        if self.torn or lines > 2 * len(self._entries) + 100:
            self._compact()

    def _read_line(self, line: bytes) -> None:
        rec = _parse(line)
        if rec is None:
            self.torn += 1
            # a ledger written before records started on a fresh line: the record appended
            # after a torn one sits at the end of the same line
            at = line.rfind(_RECORD_START)
            rec = _parse(line[at:]) if at > 0 else None
            if rec is None:
                return
        key, fields = rec
        if fields is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = fields

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry recorded under ``key`` (a copy), or None."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else dict(entry)

    def keys(self) -> list[str]:
        """All recorded keys, sorted."""
        with self._lock:
            return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def record(self, key: str, **fields: Any) -> None:
        """Record (or replace) the entry ``key``."""
        fields["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            self._entries[key] = fields
            self._append(key, fields)

    def forget(self, key: str) -> None:
        """Drop the entry ``key`` (no error if absent)."""
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._append(key, None)

    def _append(self, key: str, fields: dict[str, Any] | None) -> None:
        line = json.dumps({"key": key, "entry": fields}, sort_keys=True).encode() + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # the last line was cut: start on a fresh one
            while line:
                line = line[os.write(fd, line) :]
        finally:
            os.close(fd)

    def _compact(self) -> None:
        from petcorpus.atomic import atomic_write

        with atomic_write(self.path, "w") as fh:
            for key in sorted(self._entries):
                fh.write(json.dumps({"key": key, "entry": self._entries[key]}, sort_keys=True))
                fh.write("\n")


def _parse(line: bytes) -> tuple[str, dict[str, Any] | None] | None:
    """``(key, entry)`` of one journal line, or None if the line is not a whole record."""
    try:
        rec = json.loads(line)
        key, fields = rec["key"], rec["entry"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(key, str) or not (fields is None or isinstance(fields, dict)):
        return None
    return key, fields
