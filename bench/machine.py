"""What a second core gives on this machine, with no petcorpus code involved.

    python bench/machine.py [--repeat 3]

Each workload runs in one process, then in two processes at once (the same work in each);
a process that runs as fast beside a second one as alone means the second core doubles
throughput. Also: the first touch of fresh memory against touching it again, which on a VM
whose free memory is returned to the host costs far more the first time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def python_loop(n: int | None = None) -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(n or 20_000_000):
        total += i
    return time.perf_counter() - t0


def in_cache_multiply(_: object = None) -> float:
    a = np.ones(200_000, np.float32)  # 0.8 MB: stays in the core's L2
    b = np.empty_like(a)
    t0 = time.perf_counter()
    for _ in range(20_000):
        np.multiply(a, 1.5, out=b)
    return time.perf_counter() - t0


def memory_copy(_: object = None) -> float:
    a = np.ones(50_000_000, np.float32)  # 200 MB: streams through memory
    b = np.empty_like(a)
    np.copyto(b, a)  # the first touch of b is not what this measures (see first_touch)
    t0 = time.perf_counter()
    for _ in range(20):
        np.copyto(b, a)
    return time.perf_counter() - t0


def first_touch(_: object = None) -> float:
    """Seconds to fill 500 MB of fresh memory, over seconds to fill it once more."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        a = np.ones(500 * 2**20 // 8)
        times.append(time.perf_counter() - t0)
        del a
    return times[0] / times[1]


WORKLOADS: dict[str, Callable[[Any], float]] = {
    "pure-Python loop": python_loop,
    "numpy multiply in cache": in_cache_multiply,
    "numpy copy 200 MB": memory_copy,
}


def _timed_share(
    barrier: Any,
    done: Any,
    setup: Callable[[], object] | None,
    work: Callable[[Any], object],
    share: Any,
) -> None:
    if setup is not None:
        setup()
    barrier.wait()
    t0 = time.perf_counter()
    try:
        result = work(share)
    except Exception as exc:  # reported, so the parent does not wait forever
        done.put((f"{type(exc).__name__}: {exc}", 0.0, None))
        return
    done.put((None, time.perf_counter() - t0, result))


def run_together(
    work: Callable[[Any], object],
    shares: list[Any],
    *,
    preload: Sequence[str] = (),
    setup: Callable[[], object] | None = None,
) -> tuple[float, list[float], list[Any]]:
    """One process per share doing ``work(share)``, all started (and their ``preload``
    modules imported, ``setup()`` run) before the clock starts.

    Returns the wall seconds until the last one finished, each process's own seconds (in
    the order they finished) and what ``work`` returned.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    barrier = ctx.Barrier(len(shares) + 1)
    done = ctx.Queue()
    procs = [
        ctx.Process(target=_timed_share, args=(barrier, done, setup, work, s)) for s in shares
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    t0 = time.perf_counter()
    reports = [done.get() for _ in procs]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    errors = [error for error, _, _ in reports if error is not None]
    if errors:
        raise RuntimeError(f"a process failed: {errors[0]}")
    return wall, [sec for _, sec, _ in reports], [result for _, _, result in reports]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'workload':26s} {'alone s':>8s} {'2 at once s':>14s} {'2-core speed-up':>16s}")
    for name, fn in WORKLOADS.items():
        for _ in range(args.repeat):
            alone = run_together(fn, [None])[2][0]
            pair = run_together(fn, [None, None])[2]  # each one's timed loop, run at once
            speedup = 2 * alone / max(pair)
            print(f"{name:26s} {alone:8.3f} {pair[0]:6.3f} {pair[1]:6.3f} {speedup:16.2f}")
    for _ in range(args.repeat):
        ratio = run_together(first_touch, [None])[2][0]
        print(f"first touch of 500 MB: {ratio:.1f}x the time of touching it again")
    print("\n2-core speed-up = 2 x alone / the slower of the pair (2.00 = a full second core);")
    print("every process is started before the clock starts, so the pair runs at once.")


if __name__ == "__main__":
    main()
