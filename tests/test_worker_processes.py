"""The build's processes end with their driver and never import from the current folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import petcorpus
from petcorpus import _procs
from petcorpus.catalog import hash_file
from petcorpus.phantom import write_corpus

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="walks /proc; PR_SET_PDEATHSIG is Linux's"
    ),
]

SRC = str(Path(petcorpus.__file__).resolve().parents[1])


def _env() -> dict[str, str]:
    """This checkout's petcorpus for the subprocesses, whatever their current folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSAFEPATH", None)
    return env


def _checksums(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hash_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and (p.suffix == ".gz" or p.name == "petcorpus.json")
    }


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[tuple[int, int], str]:
    """Every process under ``root``: (pid, start time) → command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            st = _stat(pid)
            if st is None:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[(pid, st[2])] = cmd
            todo.append(pid)
    return found


def _alive(procs: dict[tuple[int, int], str]) -> list[str]:
    """The recorded processes still running (same pid and start time, not a zombie)."""
    alive = []
    for pid, start in procs:
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            alive.append(procs[(pid, start)])
    return alive


@pytest.fixture(scope="module")
def dicom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workers") / "dicom"
    write_corpus(root, subjects=4, seed=23, vendor="mixed")
    return root


@pytest.fixture(scope="module")
def reference(dicom, tmp_path_factory) -> dict[str, str]:
    """A clean build's outputs, built from a plain folder."""
    plain = tmp_path_factory.mktemp("plain")
    out = plain / "out"
    cmd = [sys.executable, "-m", "petcorpus.cli", "build", str(dicom), str(out), "-j", "2"]
    done = subprocess.run(
        [*cmd, "--no-progress"], cwd=plain, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return _checksums(out)


_SENTINEL_DRIVER = (
    "import sys; from petcorpus import _procs, cli; "
    "_procs.default_watch = lambda: 'sentinel'; cli.main(sys.argv[1:])"
)


@pytest.mark.slow
@pytest.mark.parametrize("watch", ["pdeathsig", "sentinel"])
def test_killed_driver_leaves_no_process(dicom, reference, tmp_path, watch):
    """SIGKILL to the driver alone (not its group) mid-conversion: every process it started
    ends too (the "sentinel" run is the macOS mechanism, tried here), and a re-run equals a
    clean build."""
    out = tmp_path / "out"
    driver = ["-m", "petcorpus.cli"] if watch == "pdeathsig" else ["-c", _SENTINEL_DRIVER]
    cmd = [sys.executable, *driver, "build", str(dicom), str(out), "-j", "2", "--no-progress"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        started: dict[tuple[int, int], str] = {}
        while proc.poll() is None and time.monotonic() < deadline:
            converting = out.is_dir() and any(
                p.name.startswith(".tmp-") or p.name == "petcorpus.json" for p in out.rglob("*")
            )
            started = _descendants(proc.pid)
            if converting and len(started) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the build ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    cmdlines = list(started.values())
    assert any("multiprocessing.forkserver" in c for c in cmdlines), cmdlines
    assert any("multiprocessing.resource_tracker" in c for c in cmdlines), cmdlines
    assert len(cmdlines) >= 3  # and at least one worker

    deadline = time.monotonic() + 10
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(started) == []

    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _checksums(out) == reference


@pytest.mark.slow
@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_folders_named_like_modules_change_nothing(dicom, reference, tmp_path, how):
    """Empty folders `dl` (gdcm runs `import dl`), `numpy`, `pydicom`, `test` and an empty
    `dl.py` in the current folder: the build is the same as anywhere, whether started by
    the console script or by `python -m` (which puts the current folder on sys.path)."""
    if how == "console script":
        script = shutil.which("petcorpus")
        if script is None:
            pytest.skip("the petcorpus console script is not installed")
        start = [script]
    else:
        start = [sys.executable, "-m", "petcorpus.cli"]
    for name in ("dl", "numpy", "pydicom", "test"):
        (tmp_path / name).mkdir()
    (tmp_path / "dl.py").write_text("")
    out = tmp_path / "out"
    cmd = [*start, "build", str(dicom), str(out), "-j", "2", "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _checksums(out) == reference


def test_drop_unsafe_path_removes_only_the_unsafe_folders(tmp_path, monkeypatch):
    kept = [SRC, str(tmp_path / "elsewhere")]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), *kept, f"{tmp_path}/."])
    assert str(tmp_path.resolve()) in _procs.unsafe_path_entries()
    removed = _procs.drop_unsafe_path(_procs.unsafe_path_entries())
    assert removed == ["", str(tmp_path), f"{tmp_path}/."]
    assert sys.path == kept


def test_the_folder_petcorpus_is_imported_from_stays(monkeypatch):
    """Run from a source tree (`cd src; python -m petcorpus.cli`): that folder is needed."""
    monkeypatch.chdir(SRC)
    assert os.path.realpath(SRC) not in _procs.unsafe_path_entries()


_THREAD_DRIVER = """
import os, threading
from multiprocessing import forkserver
from petcorpus._procs import process_pool

def use_pool():
    with process_pool(1) as pool:
        print(pool.submit(eval, "__import__('sys').path").result())

t = threading.Thread(target=use_pool)
t.start()
t.join()  # the thread that asked for the forkserver is gone; the forkserver is not
pid = forkserver._forkserver._forkserver_pid
print(os.waitpid(pid, os.WNOHANG) == (0, 0))
with process_pool(1) as pool:
    pool.submit(os.getpid).result()
print(forkserver._forkserver._forkserver_pid == pid)
"""


@pytest.mark.slow
def test_pool_from_a_thread_that_ends(tmp_path):
    """PR_SET_PDEATHSIG follows the thread that started the forkserver: one started for a
    thread that then ends must live on (it is started from a thread that lives as long as
    the process), and the worker's sys.path has neither '' nor the current folder."""
    (tmp_path / "dl").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _THREAD_DRIVER],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    worker_path, alive, same = done.stdout.splitlines()
    assert "''" not in worker_path and f"'{tmp_path}'" not in worker_path
    assert SRC in worker_path
    assert (alive, same) == ("True", "True")
