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


def proc_status_mib(field: str) -> float:
    """A memory line of this process's /proc/self/status (``VmHWM``, ``VmRSS``) in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _vm_hwm_mib() -> float:
    """Peak resident memory of this process since its exec (Linux VmHWM)."""
    return proc_status_mib("VmHWM")


def _target(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    t0 = time.perf_counter()
    fn(*args)
    queue.put((time.perf_counter() - t0, _vm_hwm_mib()))


def measure(fn: Callable[..., Any], *args: Any) -> tuple[float, float]:
    """(seconds inside the child for ``fn(*args)``, peak RSS of the child in MiB)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_target, args=(fn, args, queue))
    proc.start()
    seconds, peak = queue.get()
    _, status, _usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{fn.__name__} failed in the child process")
    # Not ru_maxrss: Linux carries it across exec, so a child would report the parent's peak.
    return seconds, peak


def measure_command(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of an external command, polled from /proc (10 ms)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024.0)
        except OSError:
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed")
    return seconds, peak
