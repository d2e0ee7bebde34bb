"""The memory habits of long conversions: the paused collector, glibc's thresholds."""

from __future__ import annotations

import gc
import sys

import pytest

from petcorpus._memory import gc_paused


def test_gc_paused_restores_the_previous_state():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # re-entrant
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")
def test_keep_freed_memory_reuses_a_freed_volume_without_page_faults():
    import subprocess

    # In a child: the thresholds are process-wide and this test must not change ours.
    code = """
import resource, numpy as np
from petcorpus._memory import keep_freed_memory
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def touch():
    a = np.empty(100_000_000, np.uint8); a[:] = 1; del a
touch(); before = faults(); touch(); default = faults() - before
assert keep_freed_memory()
touch(); before = faults(); touch(); kept = faults() - before
assert keep_freed_memory(False)
print(default, kept)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    default, kept = map(int, out.stdout.split())
    assert default > 40  # 100 MB freed to the kernel and faulted in again
    assert kept < default / 4  # the freed block was reused from the heap


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")
def test_threads_started_after_share_main_arena_reuse_freed_volumes():
    import subprocess

    # Each case in a fresh child: an arena, once made, lives as long as the process.
    code = """
import resource, sys, threading, numpy as np
from petcorpus._memory import keep_freed_memory, share_main_arena
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def touch():
    a = np.empty(100_000_000, np.uint8); a[:] = 1; del a
def second_touch(out):
    touch(); before = faults(); touch(); out.append(faults() - before)
assert keep_freed_memory()
if sys.argv[1] == "shared":
    assert share_main_arena()
out = []
t = threading.Thread(target=second_touch, args=(out,)); t.start(); t.join()
print(out[0])
"""

    def second_touch_faults(case: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", code, case], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    own_arena = second_touch_faults("own")  # a thread arena maps the 100 MB afresh
    shared = second_touch_faults("shared")
    assert own_arena > 40
    assert shared < own_arena / 4
