"""Atomic files and folders: a killed run leaves either the old result or the new one.

Every writer in petcorpus goes through these helpers:

- :func:`atomic_write` writes a file through a temporary sibling (``.tmp-<name>-<random>``),
  flushes and fsyncs it, then ``os.replace``-s it over the final name.
- :func:`atomic_dir` builds a whole folder (one study) as ``<parent>/.tmp-<name>-<random>``
  and renames it into place; an existing folder is renamed aside first and deleted after.
- :func:`remove_stale_temps` deletes what a killed run left behind (the ``.tmp-`` siblings).

Temporary names start with :data:`TEMP_PREFIX` so readers and scanners can skip them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_PREFIX", "atomic_dir", "atomic_write", "fsync_dir", "remove_stale_temps"]

log = logging.getLogger(__name__)

#: Prefix of every temporary file or folder these helpers create.
TEMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def _temp_sibling(path: Path, prefix: str = TEMP_PREFIX) -> Path:
    return path.with_name(f"{prefix}{path.name}-{secrets.token_hex(4)}")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, drop_cache: bool = False
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    The data are flushed and fsynced before ``os.replace`` (atomic on POSIX and Windows
    within one file system). On an exception the temporary file is removed and ``path`` is
    left as it was.

    Parameters
    ----------
    path : path-like
        The final file. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text (UTF-8) writing.
    drop_cache : bool
        After the fsync, tell the kernel the file's pages need not stay cached
        (``POSIX_FADV_DONTNEED``; a no-op where unsupported). For batch writers that do not
        read their outputs back: on the project VM, writes into an ever-growing page cache
        ran at 290-370 MB/s (each new page is memory the hypervisor must first provide),
        and at 1.3 GB/s, fsync included, with the written pages dropped and reused.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('hello', ['a.txt'])
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    final = Path(path)
    tmp = _temp_sibling(final)
    f: IO[Any] = open(tmp, mode) if mode == "wb" else open(tmp, mode, encoding="utf-8")  # noqa: SIM115
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if drop_cache and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_dir(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes ``final_dir`` when the block succeeds.

    The temporary folder is ``<parent>/.tmp-<name>-<random>`` (same file system, so the
    final step is a rename). If ``final_dir`` already exists it is renamed aside to
    ``<parent>/.old-<name>-<random>``, the new folder is renamed in, and the old one is
    deleted: readers see the old or the new study, never a mix, and only for the instant
    between the two renames do they see none. On an exception the temporary folder is
    deleted and ``final_dir`` is untouched.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "study") as tmp:
    ...     _ = (tmp / "CT.nii.gz").write_bytes(b"x")
    >>> sorted(p.name for p in (root / "study").iterdir())
    ['CT.nii.gz']
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.iterdir():  # files written by other code may not be fsynced yet
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if final.exists():
            old = _temp_sibling(final, _OLD_PREFIX)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)  # put the previous result back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.tmp-*`` / ``.old-*`` files and folders anywhere under ``root``.

    Call it at the start of a run, when no other writer works in ``root``. Returns what was
    removed.
    """
    removed: list[Path] = []
    base = Path(root)
    if not base.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        for name in list(dirnames):
            if name.startswith((TEMP_PREFIX, _OLD_PREFIX)):
                shutil.rmtree(here / name, ignore_errors=True)
                removed.append(here / name)
                dirnames.remove(name)
        for name in filenames:
            if name.startswith((TEMP_PREFIX, _OLD_PREFIX)):
                with contextlib.suppress(FileNotFoundError):
                    (here / name).unlink()
                removed.append(here / name)
    for p in removed:
        log.info("removed stale temporary %s", p)
    return sorted(removed)
