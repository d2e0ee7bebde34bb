"""Memory habits of long conversions: the cyclic GC and glibc's return of freed blocks."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block (re-entrant).

    Parsing DICOM headers makes ~10^5 long-lived container objects per study (datasets,
    data elements, tags); each automatic collection re-walks them and every imported
    module's objects. That cost 5-20 % of a scan or a conversion here. Reference counting
    still frees everything; the collector resumes (and catches any cycles) afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def _mallopt(param: int, value: int) -> bool:
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave malloc alone
        return False


def keep_freed_memory(keep: bool = True) -> bool:
    """Let the process reuse freed whole-volume buffers instead of returning them.

    glibc hands every block above its mmap threshold (at most 32 MiB by default; each
    whole-body volume is 100-400 MB) back to the kernel when freed, so the next volume
    gets fresh pages that the kernel must zero: ~7 % of a study's time here, and more when
    two workers fault at once. Raising the mmap and trim thresholds keeps freed blocks in
    the heap for the next study. ``keep=False`` restores glibc's default thresholds.
    Returns whether malloc accepted it (False off glibc: a no-op).
    """
    if keep:
        return _mallopt(_M_MMAP_THRESHOLD, 1 << 30) and _mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return _mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD) and _mallopt(
        _M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD
    )


def share_main_arena() -> bool:
    """Make threads started from now on allocate from the main heap (glibc ``M_ARENA_MAX=1``).

    A thread's own malloc arena maps every block above 64 MB afresh and unmaps it on free,
    whatever :func:`keep_freed_memory` says, so a conversion running on a pool thread
    (a Dask task) faults its volumes in again for every study. Threads that already
    allocated keep their arena, and once a process has several, glibc may give a new
    thread one of them: call it early. Returns whether malloc accepted it (False off
    glibc).
    """
    return _mallopt(_M_ARENA_MAX, 1)
