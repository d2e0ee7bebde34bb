"""The transfer engine shared by the ENHANCE.PET and TCIA downloaders.

Standard library HTTP only (``urllib``): streaming to ``<name>.part``, HTTP Range resume,
bounded retries with exponential backoff (honouring ``Retry-After``) on connection errors,
timeouts, 429 and 5xx, verification by size and checksum (SHA-256 always recorded; MD5 or
SHA-256 checked when the source gives one), an atomic rename to the final name only after
verification, a ledger so re-runs skip finished files, N concurrent transfers (threads) and
an optional rich progress bar (bytes, speed, ETA).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from petcorpus.download.ledger import Ledger
from petcorpus.errors import ChecksumError, DownloadError, PetcorpusError

__all__ = [
    "FileSpec",
    "RetryPolicy",
    "TransferReport",
    "fetch_all",
    "fetch_file",
    "file_digest",
    "http_get_bytes",
    "probe_size",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "petcorpus-download/1 (+https://github.com/petcorpus)"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try.

    Parameters
    ----------
    attempts : int
        Total tries per file (first try included).
    backoff : float
        Delay in seconds before the second try; multiplied by ``factor`` each time.
    factor : float
        Growth of the delay between tries.
    max_delay : float
        Cap on one delay, also on a server's ``Retry-After``.
    timeout : float
        Socket timeout in seconds (connect and each read).
    sleep : callable
        ``sleep(seconds)``; injectable so tests do not wait.
    """

    attempts: int = 5
    backoff: float = 2.0
    factor: float = 2.0
    max_delay: float = 120.0
    timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        base = self.backoff * self.factor**attempt
        return min(self.max_delay, base * (1.0 + 0.1 * random.random()))


@dataclass(frozen=True)
class FileSpec:
    """One remote file and where it goes.

    Parameters
    ----------
    url : str
        Where to fetch it (http, https or file).
    relpath : str
        Destination relative to DEST, POSIX separators; must stay inside DEST.
    size : int, optional
        Expected size in bytes, if known.
    sha256, md5 : str, optional
        Expected checksums (hex), if the source publishes them.
    """

    url: str
    relpath: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        p = PurePosixPath(self.relpath)
        if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in self.relpath:
            raise ValueError(f"relpath must be a relative path inside DEST: {self.relpath!r}")


@dataclass
class TransferReport:
    """What :func:`fetch_all` did: files fetched, skipped (already complete), failed."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, PetcorpusError] = field(default_factory=dict)
    bytes_transferred: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _open(url: str, timeout: float, headers: dict[str, str] | None = None, method: str = "GET"):
    req = urllib.request.Request(
        url, headers={"User-Agent": _USER_AGENT, **(headers or {})}, method=method
    )
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or 500 <= exc.code < 600:
            exc.close()
            after = _retry_after(exc.headers.get("Retry-After"))
            raise _RetryableError(f"HTTP {exc.code} {exc.reason}", after) from exc
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _RetryableError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc


def _with_retries(url: str, policy: RetryPolicy, action: Callable[[], Any]) -> Any:
    last: str = ""
    for attempt in range(policy.attempts):
        try:
            return action()
        except _RetryableError as exc:
            last = str(exc)
            if attempt + 1 < policy.attempts:
                wait = policy.delay(attempt, exc.retry_after)
                log.info("%s: %s; retry %d in %.1f s", url, last, attempt + 1, wait)
                policy.sleep(wait)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"HTTP {exc.code} {exc.reason}", path=url) from exc
    raise DownloadError(f"gave up after {policy.attempts} attempts; last error: {last}", path=url)


def http_get_bytes(url: str, policy: RetryPolicy | None = None) -> bytes:
    """GET a small resource (a JSON listing) into memory, with the same retries."""
    policy = policy or RetryPolicy()

    def action() -> bytes:
        with _open(url, policy.timeout) as resp:
            try:
                return resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc

    return _with_retries(url, policy, action)


def probe_size(url: str, policy: RetryPolicy | None = None) -> int | None:
    """The size a server announces for ``url`` (HEAD, Content-Length), or None."""
    policy = policy or RetryPolicy()

    def action() -> int | None:
        with _open(url, policy.timeout, method="HEAD") as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    try:
        return _with_retries(url, policy, action)
    except DownloadError:
        return None


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file (:func:`hashlib.file_digest`)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _stream(
    spec: FileSpec,
    part: Path,
    policy: RetryPolicy,
    on_bytes: Callable[[int], None],
    hashers: dict[str, Any],
) -> int:
    """One try: resume ``part`` from its current size. Returns bytes received."""
    offset = part.stat().st_size if part.exists() else 0
    if spec.size is not None and offset > spec.size:
        part.unlink()
        offset = 0
    # If-Range: resume only if the remote file is unchanged, else the server sends it whole
    validator = part.with_name(part.name + ".validator")
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and validator.exists():
        headers["If-Range"] = validator.read_text()
    try:
        resp = _open(spec.url, policy.timeout, headers)
    except urllib.error.HTTPError as exc:
        total = exc.headers.get("Content-Range", "").rpartition("/")[2]
        remote = int(total) if total.isdigit() else spec.size
        if exc.code == 416 and offset and remote in (None, offset):
            _rehash(part, hashers)
            return 0  # already complete; verification decides
        if exc.code == 416:
            part.unlink(missing_ok=True)
            raise _RetryableError("HTTP 416 for a partial file; restarting") from exc
        raise
    received = 0
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)
                raise _RetryableError(f"unexpected Content-Range {content_range!r}; restarting")
            mode = "ab"
            _rehash(part, hashers)
        else:  # 200: the server sent the whole file (no or ignored Range, or it changed)
            offset, mode = 0, "wb"
            for name in hashers:
                hashers[name] = hashlib.new(name)
            tag = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            if tag and not tag.startswith("W/"):  # weak ETags are not valid in If-Range
                validator.write_text(tag)
            else:
                validator.unlink(missing_ok=True)
        length = resp.headers.get("Content-Length")
        expected_end = offset + int(length) if length and length.isdigit() else None
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    where = offset + received
                    raise _RetryableError(f"{type(exc).__name__} after {where} bytes") from exc
                if not chunk:
                    break
                fh.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                received += len(chunk)
                on_bytes(len(chunk))
        if expected_end is not None and offset + received < expected_end:
            got = offset + received
            raise _RetryableError(f"connection closed at byte {got} of {expected_end}")
    return received


def _rehash(part: Path, hashers: dict[str, Any]) -> None:
    """Hash what ``part`` already holds (the transfer then goes on updating the hashers)."""
    for name in hashers:
        with open(part, "rb") as fh:
            hashers[name] = hashlib.file_digest(fh, name)


def _verify(spec: FileSpec, part: Path, digests: dict[str, str]) -> None:
    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        raise ChecksumError(f"size {size} differs from the expected {spec.size}", path=spec.url)
    for name, expected in (("sha256", spec.sha256), ("md5", spec.md5)):
        if expected and digests[name].lower() != expected.lower():
            raise ChecksumError(
                f"{name} {digests[name]} differs from the expected {expected.lower()}",
                path=spec.url,
            )


def fetch_file(
    spec: FileSpec,
    dest: str | os.PathLike[str],
    *,
    policy: RetryPolicy | None = None,
    ledger: Ledger | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Fetch one file into ``dest/spec.relpath``, resuming, retrying and verifying.

    The data goes to ``<name>.part`` and is renamed to ``<name>`` only after the size and
    checksums verify, so the final name never holds a partial or wrong file. A checksum
    mismatch discards the partial file and counts as a failed try.

    Returns
    -------
    Path
        The final file.

    Raises
    ------
    DownloadError
        The transfer failed after ``policy.attempts`` tries, or the server refused (4xx).
    ChecksumError
        Every try delivered a file of the wrong size or checksum.
    """
    policy = policy or RetryPolicy()
    ledger = ledger if ledger is not None else Ledger(dest)
    final = Path(dest) / spec.relpath
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    cb = on_bytes or (lambda n: None)
    last_checksum: ChecksumError | None = None
    last = ""
    for attempt in range(policy.attempts):
        hashers: dict[str, Any] = {"sha256": hashlib.sha256()}
        if spec.md5:
            hashers["md5"] = hashlib.md5()
        retry_after = None
        try:
            _stream(spec, part, policy, cb, hashers)
            digests = {k: h.hexdigest() for k, h in hashers.items()}
            _verify(spec, part, digests)
        except _RetryableError as exc:
            last, retry_after = str(exc), exc.retry_after
        except ChecksumError as exc:
            last_checksum, last = exc, str(exc)
            part.unlink(missing_ok=True)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"HTTP {exc.code} {exc.reason}", path=spec.url) from exc
        else:
            size = part.stat().st_size
            os.replace(part, final)
            part.with_name(part.name + ".validator").unlink(missing_ok=True)
            ledger.record(
                spec.relpath,
                url=spec.url,
                size=size,
                sha256=digests["sha256"],
                md5=digests.get("md5"),
            )
            return final
        log.info("%s: try %d of %d failed: %s", spec.url, attempt + 1, policy.attempts, last)
        if attempt + 1 < policy.attempts:
            policy.sleep(policy.delay(attempt, retry_after))
    if last_checksum is not None and last == str(last_checksum):
        raise ChecksumError(
            f"{last_checksum.message} (after {policy.attempts} attempts)", path=spec.url
        )
    raise DownloadError(
        f"gave up after {policy.attempts} attempts; last error: {last}", path=spec.url
    )


def is_complete(
    spec: FileSpec, dest: str | os.PathLike[str], ledger: Ledger, verify: bool = False
) -> bool:
    """True when ``spec`` is recorded complete and its file is still intact.

    Checks the ledger entry against the file's size (and, with ``verify``, its SHA-256) and
    against any size or checksum ``spec`` expects. A file present without a ledger entry is
    adopted when ``spec`` carries a checksum it matches.
    """
    final = Path(dest) / spec.relpath
    if not final.is_file():
        return False
    size = final.stat().st_size
    entry = ledger.get(spec.relpath)
    if entry is None:
        if spec.sha256 and (spec.size is None or spec.size == size):
            digest = file_digest(final)
            if digest == spec.sha256.lower():
                ledger.record(spec.relpath, url=spec.url, size=size, sha256=digest, md5=None)
                return True
        return False
    if entry.get("size") != size or (spec.size is not None and spec.size != size):
        return False
    if spec.sha256 and entry.get("sha256", "").lower() != spec.sha256.lower():
        return False
    if spec.md5 and (entry.get("md5") or "").lower() != spec.md5.lower():
        return False
    return not (verify and file_digest(final) != entry.get("sha256"))


def fetch_all(
    specs: Iterable[FileSpec],
    dest: str | os.PathLike[str],
    *,
    workers: int = 4,
    policy: RetryPolicy | None = None,
    ledger: Ledger | None = None,
    verify: bool = False,
    progress: bool = False,
    on_done: Callable[[FileSpec, Path], None] | None = None,
) -> TransferReport:
    """Fetch many files concurrently; skip the complete ones; never raise per file.

    Parameters
    ----------
    specs : iterable of FileSpec
        What to fetch.
    dest : str or PathLike
        DEST; holds the files and the ledger.
    workers : int
        Concurrent transfers (threads).
    policy : RetryPolicy, optional
        Retries, backoff and timeout.
    ledger : Ledger, optional
        Defaults to the ledger in ``dest``.
    verify : bool
        Re-hash files the ledger calls complete (catches on-disk corruption) and fetch
        again those that differ.
    progress : bool
        Show a rich progress bar (bytes, speed, ETA) on stderr.
    on_done : callable, optional
        ``on_done(spec, path)`` after each verified file (in the worker thread); an
        exception it raises marks the file failed.

    Returns
    -------
    TransferReport
    """
    specs = list(specs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    policy = policy or RetryPolicy()
    ledger = ledger if ledger is not None else Ledger(dest)
    report = TransferReport()
    todo: list[FileSpec] = []
    for spec in specs:
        if is_complete(spec, dest, ledger, verify=verify):
            report.skipped.append(spec.relpath)
        else:
            todo.append(spec)
    if not todo:
        return report
    bar = _Progress(todo, enabled=progress)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_one, s, dest, policy, ledger, bar, on_done): s for s in todo}
        for fut in as_completed(futures):
            spec = futures[fut]
            exc = fut.exception()
            if exc is None:
                report.done.append(spec.relpath)
            elif isinstance(exc, PetcorpusError):
                report.failed[spec.relpath] = exc
            else:
                raise exc
    report.bytes_transferred = bar.transferred
    report.done.sort()
    return report


def _one(spec: FileSpec, dest, policy, ledger, bar: _Progress, on_done) -> None:
    task = bar.start(spec)
    try:
        path = fetch_file(
            spec, dest, policy=policy, ledger=ledger, on_bytes=lambda n: bar.advance(task, n)
        )
        if on_done is not None:
            on_done(spec, path)
    except PetcorpusError:
        raise
    except OSError as exc:  # local disk full, permissions: fail this file, go on
        raise DownloadError(f"local I/O error: {exc}", path=spec.url) from exc
    finally:
        bar.stop(task)


class _Progress:
    """A rich progress bar (overall + one line per active file), or a byte counter."""

    def __init__(self, specs: Sequence[FileSpec], enabled: bool) -> None:
        import threading

        self._lock = threading.Lock()
        self.transferred = 0
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            known = [s.size for s in specs]
            total = sum(k for k in known if k is not None) if all(known) else None
            self._overall = self._progress.add_task(f"{len(specs)} files", total=total)

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, spec: FileSpec) -> Any:
        if self._progress is None:
            return None
        name = PurePosixPath(spec.relpath).name
        return self._progress.add_task(name[:40], total=spec.size)

    def advance(self, task: Any, n: int) -> None:
        with self._lock:
            self.transferred += n
        if self._progress is not None:
            self._progress.advance(task, n)
            self._progress.advance(self._overall, n)

    def stop(self, task: Any) -> None:
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)
