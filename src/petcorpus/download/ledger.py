"""The download ledger: a small JSON file in DEST that records what is complete.

One entry per finished file (keyed by its path relative to DEST) with the URL, size and
checksums, plus free-form entries for higher-level steps (an unpacked TCIA series, an
unpacked ENHANCE zip). A re-run consults it to skip finished work without touching the
network. Writes are atomic (temporary file + rename) and serialised by a lock, so threads
may record concurrently and a killed run never leaves a truncated ledger.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from petcorpus.errors import CorruptFileError

__all__ = ["LEDGER_NAME", "Ledger"]

LEDGER_NAME = ".petcorpus-download.json"
_SCHEMA_VERSION = 1


class Ledger:
    """Thread-safe record of completed downloads in ``<root>/.petcorpus-download.json``.

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
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self._entries = dict(data["entries"])
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptFileError(
                    f"unreadable download ledger ({exc}); delete it to start afresh",
                    path=self.path,
                ) from exc

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
        """Record (or replace) the entry ``key`` and write the ledger atomically."""
        with self._lock:
            self._entries[key] = {
                **fields,
                "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self._write()

    def forget(self, key: str) -> None:
        """Drop the entry ``key`` (no error if absent)."""
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        payload = {"schema_version": _SCHEMA_VERSION, "entries": self._entries}
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
