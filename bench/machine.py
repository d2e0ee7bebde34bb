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
from collections.abc import Callable

import numpy as np


def python_loop() -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(20_000_000):
        total += i
    return time.perf_counter() - t0


def in_cache_multiply() -> float:
    a = np.ones(200_000, np.float32)  # 0.8 MB: stays in the core's L2
    b = np.empty_like(a)
    t0 = time.perf_counter()
    for _ in range(20_000):
        np.multiply(a, 1.5, out=b)
    return time.perf_counter() - t0


def memory_copy() -> float:
    a = np.ones(50_000_000, np.float32)  # 200 MB: streams through memory
    b = np.empty_like(a)
    np.copyto(b, a)
    t0 = time.perf_counter()
    for _ in range(20):
        np.copyto(b, a)
    return time.perf_counter() - t0


def first_touch() -> float:
    """Seconds to fill 500 MB of fresh memory, over seconds to fill it once more."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        a = np.ones(500 * 2**20 // 8)
        times.append(time.perf_counter() - t0)
        del a
    return times[0] / times[1]


WORKLOADS: dict[str, Callable[[], float]] = {
    "pure-Python loop": python_loop,
    "numpy multiply in cache": in_cache_multiply,
    "numpy copy 200 MB": memory_copy,
}


def _call(fn: Callable[[], float]) -> float:
    return fn()


def run(fn: Callable[[], float], processes: int) -> list[float]:
    with mp.get_context("spawn").Pool(processes) as pool:
        return pool.map(_call, [fn] * processes, chunksize=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'workload':26s} {'alone s':>8s} {'2 at once s':>14s} {'2-core speed-up':>16s}")
    for name, fn in WORKLOADS.items():
        for _ in range(args.repeat):
            alone = run(fn, 1)[0]
            pair = run(fn, 2)
            speedup = 2 * alone / max(pair)
            print(f"{name:26s} {alone:8.3f} {pair[0]:6.3f} {pair[1]:6.3f} {speedup:16.2f}")
    for _ in range(args.repeat):
        ratio = run(first_touch, 1)[0]
        print(f"first touch of 500 MB: {ratio:.1f}x the time of touching it again")
    print("\n2-core speed-up = 2 x alone / the slower of the pair (2.00 = a full second core)")


if __name__ == "__main__":
    main()
