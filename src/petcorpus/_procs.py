"""The processes petcorpus starts: they end with their driver and import only what it does.

Every local process pool goes through :func:`process_pool` (a ``forkserver`` pool):

- **They die with the driver, however it dies** (``kill -9``, the OOM killer, a scheduler's
  time limit). On Linux the forkserver and each worker ask the kernel for a parent-death
  signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): the driver's end kills the forkserver,
  whose end kills the workers. The resource tracker is not killed: it exits by itself
  once the last of them has (it reads a pipe they all hold) and first removes the named
  semaphores a killed pool leaves in ``/dev/shm``. Elsewhere (macOS) each worker runs a
  thread that waits on its driver's sentinel pipe and exits when it closes; the forkserver
  and the tracker then follow for the same reason.
- **They never import from the user's folders.** The forkserver is ``python -c ...``, whose
  ``sys.path`` starts with ``''`` (the current directory), and each worker receives the
  driver's ``sys.path`` (with the current directory under ``python -m``, the script's
  folder under a script). An empty folder ``dl`` there turned gdcm's ``import dl`` into a
  namespace package and broke pydicom's import. The forkserver starts with
  ``PYTHONSAFEPATH`` (no ``''``), its first preload (:mod:`petcorpus._forkserver`) and each
  worker's initialiser remove these entries before the conversion stack is imported,
  unless petcorpus itself was imported from there.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so the forkserver
is started from the main thread, or from a daemon thread that lives as long as the process.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import site
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

__all__ = ["drop_unsafe_path", "process_pool", "unsafe_path_entries"]

#: How a worker learns that its driver is gone.
Watch = Literal["pdeathsig", "sentinel"]

#: Hands the driver's pid, the folders to drop and the watch to the forkserver it starts
#: (read and removed by :mod:`petcorpus._forkserver`).
FORKSERVER_ENV = "_PETCORPUS_FORKSERVER"
#: The forkserver's first preload: it prepares the server before anything else is imported.
FORKSERVER_START = "petcorpus._forkserver"

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

#: In a worker: the pid of the forkserver that forked it (set by the forkserver's preload).
_server_pid: int | None = None


def default_watch() -> Watch:
    """The kernel's parent-death signal on Linux, a sentinel-watching thread elsewhere."""
    return "pdeathsig" if sys.platform.startswith("linux") else "sentinel"


def unsafe_path_entries() -> tuple[str, ...]:
    """Folders a worker must not import from: the current one, the one Python started in
    and the main script's, resolved; except where petcorpus or the site packages live."""
    folders = {os.getcwd(), getattr(multiprocessing.process, "ORIGINAL_DIR", None) or "."}
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        folders.add(os.path.dirname(os.path.abspath(main_file)))
    keep = {str(Path(__file__).resolve().parents[1]), *site.getsitepackages()}
    with contextlib.suppress(AttributeError):  # absent in some virtualenvs' site module
        keep.add(site.getusersitepackages())
    keep = {os.path.realpath(k) for k in keep}
    return tuple(sorted({os.path.realpath(f) for f in folders} - keep))


def drop_unsafe_path(unsafe: Iterable[str]) -> list[str]:
    """Remove from ``sys.path`` (in place) ``''`` and each entry that resolves into ``unsafe``.

    ``''`` means the current directory, so it goes when that is unsafe. Returns the entries
    removed.
    """
    unsafe_set = set(unsafe)
    removed = [e for e in sys.path if os.path.realpath(e or os.getcwd()) in unsafe_set]
    if removed:
        sys.path[:] = [e for e in sys.path if e not in removed]
    return removed


def die_with_parent(expected_parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent ends (Linux; False elsewhere).

    If the parent has already ended (it is no longer ``expected_parent``, or changed while
    the signal was being set), exit at once: the signal would never come.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    before = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return False
    if os.getppid() != (before if expected_parent is None else expected_parent):
        os._exit(1)
    return True


def _exit_with_driver() -> None:
    """Exit this worker as soon as its driver's sentinel pipe closes (the driver ended)."""
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - not a multiprocessing child
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="petcorpus-driver-watch", daemon=True).start()


def start_worker(
    unsafe: Sequence[str], watch: Watch, then: Callable[[], Any] | None = None
) -> None:
    """A pool worker's initialiser: clean ``sys.path``, tie the worker to its driver, ``then``."""
    drop_unsafe_path(unsafe)
    if watch == "pdeathsig":
        die_with_parent(_server_pid)  # the parent is the forkserver (see _forkserver.py)
    else:
        _exit_with_driver()
    if then is not None:
        then()


def prepare_forkserver() -> None:
    """Run in the forkserver by its first preload (before any other import)."""
    global _server_pid
    raw = os.environ.pop(FORKSERVER_ENV, None)
    if raw is None:  # not started by forkserver_context: leave it as it is
        return
    conf = json.loads(raw)
    if conf["safepath"] is None:  # the workers get the driver's environment
        os.environ.pop("PYTHONSAFEPATH", None)
    else:
        os.environ["PYTHONSAFEPATH"] = conf["safepath"]
    drop_unsafe_path(conf["unsafe"])
    _server_pid = os.getpid()
    if conf["watch"] == "pdeathsig":
        # Should the driver end before this, the forkserver still ends: multiprocessing's
        # own "alive" pipe closes, and it exits once the preloads are imported.
        die_with_parent(conf["driver"])


class _Keeper:
    """A daemon thread that lives as long as the process, to start the forkserver from."""

    def __init__(self) -> None:
        import queue

        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="petcorpus-forkserver", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fn()
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)

    def call(self, fn: Callable[[], None]) -> None:
        fut: Future[None] = Future()
        self._jobs.put((fn, fut))
        fut.result()


_keeper: _Keeper | None = None
_keeper_lock = threading.Lock()
_start_lock = threading.Lock()


def _start_forkserver(unsafe: Sequence[str], watch: Watch) -> None:
    from multiprocessing import forkserver

    def start() -> None:
        # Read by the forkserver started here, if none runs yet; PYTHONSAFEPATH keeps the
        # current directory off its `python -c` sys.path while `import petcorpus` (nibabel,
        # pydicom, gdcm...) runs, before _forkserver can clean it.
        with _start_lock:
            safepath = os.environ.get("PYTHONSAFEPATH")
            conf = {"driver": os.getpid(), "unsafe": list(unsafe), "watch": watch}
            os.environ[FORKSERVER_ENV] = json.dumps({**conf, "safepath": safepath})
            os.environ["PYTHONSAFEPATH"] = "1"
            try:
                forkserver.ensure_running()
            finally:
                os.environ.pop(FORKSERVER_ENV, None)
                if safepath is None:
                    os.environ.pop("PYTHONSAFEPATH", None)
                else:
                    os.environ["PYTHONSAFEPATH"] = safepath

    if threading.current_thread() is threading.main_thread():
        start()
        return
    global _keeper
    with _keeper_lock:
        if _keeper is None:
            _keeper = _Keeper()
    _keeper.call(start)


@contextlib.contextmanager
def process_pool(
    workers: int,
    *,
    preload: Sequence[str] = (),
    initializer: Callable[[], Any] | None = None,
    watch: Watch | None = None,
) -> Iterator[ProcessPoolExecutor]:
    """A ``forkserver`` process pool whose processes end with this one (see the module doc).

    Parameters
    ----------
    workers : int
        Worker processes.
    preload : sequence of str
        Modules the forkserver imports once, so that workers start warm. Only the first
        pool of a process starts the forkserver; later pools reuse it as it is.
    initializer : callable, optional
        Run in each worker after it is prepared (picklable: a module-level function).
    watch : {"pdeathsig", "sentinel"}, optional
        How workers notice their driver's end (default: :func:`default_watch`).
    """
    import functools

    watch = watch or default_watch()
    unsafe = unsafe_path_entries()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([FORKSERVER_START, *preload])
    _start_forkserver(unsafe, watch)
    init = functools.partial(start_worker, unsafe, watch, initializer)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init) as pool:
        yield pool
