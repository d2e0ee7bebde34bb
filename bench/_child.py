"""Run a callable in a fresh child process and measure its wall time and peak memory.

Each contender runs in its own process so peak RSS (``ru_maxrss`` from ``wait4``) is its
own, not the sum of everything the benchmark imported before.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any


def _target(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    t0 = time.perf_counter()
    fn(*args)
    queue.put(time.perf_counter() - t0)


def measure(fn: Callable[..., Any], *args: Any) -> tuple[float, float]:
    """(seconds inside the child for ``fn(*args)``, peak RSS of the child in MiB)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_target, args=(fn, args, queue))
    proc.start()
    seconds = queue.get()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{fn.__name__} failed in the child process")
    return seconds, usage.ru_maxrss / 1024.0


def measure_command(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of an external command."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed")
    return seconds, usage.ru_maxrss / 1024.0
