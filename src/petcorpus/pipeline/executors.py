"""Where per-item tasks run: the driver, a local process pool, or a Dask cluster.

:class:`Runner` is the one executor of petcorpus's batch commands (``build``, ``organs``):
the same picklable function runs on the driver (one worker), in forkserver processes that
start warm and end with the driver (:mod:`petcorpus._procs`), or on a Dask cluster (a
``dask.distributed.Client`` the caller owns, or one connected to ``scheduler``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from petcorpus._memory import keep_freed_memory

__all__ = ["Runner"]

T = TypeVar("T")
R = TypeVar("R")

#: Items handed out per worker before the first finishes: enough that no worker waits
#: for its next item, few enough that the driver holds only these.
AHEAD = 2

#: Threads that run tasks inside a Dask worker (see :func:`_dask_worker_plugin`).
_task_threads: ThreadPoolExecutor | None = None


class Runner:
    """Run one function over many items on the driver, local processes or Dask.

    Use as a context manager: the processes (or the client made from ``scheduler``) end
    with the block; a ``client`` passed in is the caller's and is left open.

    Parameters
    ----------
    workers : int, optional
        Local processes (default: the number of cores); 1 runs every item on the driver.
        Ignored with Dask.
    client : dask.distributed.Client, optional
        Run on this cluster.
    scheduler : str, optional
        Or connect to this scheduler address (``tcp://HOST:PORT``).
    preload : sequence of str
        Modules the workers import before their first item (warm start).
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        client: Any = None,
        scheduler: str | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.preload = tuple(preload)
        self._client = client
        self._scheduler = scheduler
        self._stack = contextlib.ExitStack()
        self._pool: Executor | None = None
        self._prepared: ThreadPoolExecutor | None = None
        self._preparing: Future[Any] | None = None
        self.executor: Executor | None = None

    @property
    def dask(self) -> Any:
        """The Dask client, or None for local work."""
        return self._client

    def __enter__(self) -> Runner:
        stack = self._stack.__enter__()
        try:
            if self._client is None and self._scheduler is not None:
                self._client = _dask_client(self._scheduler)
                stack.callback(self._client.close)
            if self._client is not None:
                # The workers import the conversion stack (~1.2 s) while the driver scans:
                # the registration is awaited before the first task, not here.
                plugin = _dask_worker_plugin(self.preload)
                self._prepared = ThreadPoolExecutor(1, thread_name_prefix="petcorpus-plugin")
                stack.callback(self._prepared.shutdown)
                self._preparing = self._prepared.submit(
                    self._client.register_plugin, plugin, name="petcorpus-prepare-workers"
                )
                self.executor = self._client.get_executor(pure=False)
            elif self.workers > 1:
                from petcorpus._procs import process_pool

                # forkserver: workers start from a clean process, not a fork of a threaded
                # driver; the server imports the preload once, so each worker starts in
                # milliseconds. The processes end with the driver and never import from
                # the current folder (petcorpus._procs).
                self._pool = self.executor = stack.enter_context(
                    process_pool(self.workers, preload=self.preload, initializer=keep_freed_memory)
                )
            else:  # the driver works: the same memory habit, undone after
                keep_freed_memory()
                stack.callback(keep_freed_memory, False)
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # type: ignore[arg-type]

    def threads_per_task(self) -> int | None:
        """Threads each local task may use (the cores shared out); None on Dask."""
        if self._client is not None:
            return None
        return max(1, (os.cpu_count() or 1) // self.workers)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(item)`` for every item, yielded as each finishes (``fn`` must not raise).

        Items are taken from ``items`` as work is handed out, a few per worker ahead of the
        workers (:data:`AHEAD`), never all at once: a plan that reads its tasks back one at a
        time (:class:`~petcorpus.pipeline.plan.PlannedTasks`) then never holds them all.
        """
        pending = iter(items)
        if self._client is not None:
            yield from self._map_dask(fn, pending)
            return
        if self._pool is None:
            for item in pending:
                yield fn(item)
            return
        running: set[Future[R]] = set()
        for item in itertools.islice(pending, AHEAD * self.workers):
            running.add(self._pool.submit(fn, item))
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                for item in itertools.islice(pending, 1):
                    running.add(self._pool.submit(fn, item))
                yield fut.result()

    def _map_dask(self, fn: Callable[[T], R], pending: Iterator[T]) -> Iterator[R]:
        from dask.distributed import as_completed as dask_completed

        if self._preparing is not None:
            self._preparing.result()  # every worker prepared (or the error raised)
        # Each item travels as the bytes we pickled once: Dask passes bytes through its
        # scheduler as they are, where a StudyTask (hundreds of Paths) would be pickled,
        # unpickled on the scheduler and pickled again (~16 ms per study).
        on_worker = functools.partial(_on_task_threads, fn)
        n_workers = max(1, len(self._client.scheduler_info().get("workers", {})))

        def submit(item: T) -> Any:
            blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            return self._client.submit(on_worker, blob, pure=False)

        first = [submit(item) for item in itertools.islice(pending, AHEAD * n_workers)]
        if not first:
            return
        futures = dask_completed(first)
        for fut in futures:
            for item in itertools.islice(pending, 1):
                futures.add(submit(item))
            yield fut.result()


def _dask_client(scheduler: str) -> Any:
    from petcorpus._optional import import_optional

    distributed = import_optional("dask.distributed", extra="dask", purpose="a Dask scheduler")
    return distributed.Client(scheduler)


def _on_task_threads(fn: Callable[[T], R], blob: bytes) -> R:
    """``fn(item)`` of a pickled item, on the worker's task threads (the Dask thread only
    waits)."""
    item = pickle.loads(blob)
    threads = _task_threads
    if threads is None:
        return fn(item)
    return threads.submit(fn, item).result()


def _dask_worker_plugin(preload: Sequence[str]) -> Any:
    from dask.distributed import WorkerPlugin

    class PrepareWorkers(WorkerPlugin):  # type: ignore[misc]
        """Prepare every worker (also those that join later) like a local pool's process.

        Dask runs tasks on a thread pool whose threads have their own malloc arenas, and
        those map every whole-body volume afresh: faulting ~220 MB in again per study cost
        0.5-1 s here. So the worker keeps freed memory, threads started from now on use
        the main heap, and :func:`_on_task_threads` runs each task on one of them.

        Dask's statistical profiler is stopped on the worker: every 10 ms it walks every
        thread's stack while holding the GIL, which cost a two-worker build ~5 % of its
        conversion time (docs/benchmarks.md); the dashboard's profile page stays empty.
        """

        def setup(self, worker: Any) -> None:
            import importlib

            from petcorpus import _memory
            from petcorpus.pipeline import executors

            for name in ("profile", "profile-cycle"):
                callback = worker.periodic_callbacks.pop(name, None)
                if callback is not None:
                    callback.stop()
            _memory.keep_freed_memory()
            _memory.share_main_arena()
            for name in preload:
                importlib.import_module(name)
            # The task threads live as long as the worker: every build registers this
            # plugin again (Dask tears the old one down first), and a thread started
            # then may be given one of Dask's own malloc arenas rather than the main heap
            # (glibc reuses arenas once M_ARENA_MAX is reached): that worker's next
            # builds faulted their volumes in afresh (369k page faults per build instead
            # of 42k, +15 % time; bench/dask_rebuilds.py). So no teardown stops them.
            if executors._task_threads is None:
                executors._task_threads = ThreadPoolExecutor(
                    max_workers=max(1, int(worker.state.nthreads)),
                    thread_name_prefix="petcorpus-task",
                )

    return PrepareWorkers()
