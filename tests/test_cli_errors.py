"""A user's mistake ends in one line on stderr, a non-zero exit and no traceback.

Each case checks the exit code, that no "Traceback" is printed, that stderr holds exactly
one (non-blank) line naming the path, and that nothing was created or partly written.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.cli._app import os_error_line
from petcorpus.errors import MissingDependencyError, OutputPathError, Reason
from petcorpus.phantom import write_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One small phantom study as DICOM, and the corpus built from it (read-only here)."""
    from petcorpus.pipeline import build

    root = tmp_path_factory.mktemp("inputs")
    dicom = root / "DICOM"
    write_corpus(dicom, subjects=1, size="small")
    corpus = root / "corpus"
    report = build(dicom, corpus, workers=1)
    assert report.ok
    return SimpleNamespace(dicom=dicom, corpus=corpus, csv=next(dicom.glob("*.csv")))


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(result: object, *named: str) -> str:
    """The result failed with exit 1 and exactly one stderr line naming ``named``."""
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert isinstance(result.exception, SystemExit), result.exception  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    lines = error_lines(result.stderr)  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("error"), lines[0]
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


# -- OUT: a file where a folder must be, or a folder below a file -----------------------------
# Every command that writes a folder: (name, argv with OUT).
def _dir_commands(i: SimpleNamespace, out: str, missing: str) -> dict[str, list[str]]:
    return {
        "build": ["build", str(i.dicom), out, "--no-progress"],
        "build --from enhance": ["build", str(i.dicom), out, "--from", "enhance"],
        "convert": ["convert", str(i.dicom), out],
        "phantom": ["phantom", out],
        "demo": ["demo", out],
        "export": ["export", str(i.corpus), "--to", out],
        "clinical": ["clinical", out, str(i.csv)],
        "download enhance": ["download", "enhance", out, "--no-progress"],
        "download autopet": ["download", "autopet", out, "--series-list", missing],
        "enhance phantom": ["enhance", "phantom", out],
        "labels split": ["labels", "split", missing, out],
        "labels export": ["labels", "export", missing, "1", out],
    }


# Every command that writes a file.
def _file_commands(i: SimpleNamespace, out: str, missing: str) -> dict[str, list[str]]:
    masks = ["--lesions", missing, "--organs", missing]
    return {
        "build --hdf5": ["build", str(i.dicom), f"{out}-corpus", "--hdf5", out],
        "mip": ["mip", missing, "--output", out],
        "report": ["report", str(i.corpus), "--output", out],
        "evaluate": ["evaluate", "--gt", missing, "--pred", missing, "--out", out],
        "lesions": ["lesions", missing, "--out", out],
        "labels merge": ["labels", "merge", missing, "1", "--out", out],
        "organs stats": ["organs", "stats", missing, "--out", out],
        "organs lesions": ["organs", "lesions", *masks, "--out", out],
        "enhance cases": ["enhance", "cases", missing, "--out", out],
    }


DIR_COMMANDS = list(_dir_commands(SimpleNamespace(dicom="", corpus="", csv=""), "", ""))
FILE_COMMANDS = list(_file_commands(SimpleNamespace(dicom="", corpus="", csv=""), "", ""))


@pytest.mark.parametrize("mistake", ["out is a file", "out below a file"])
@pytest.mark.parametrize("command", DIR_COMMANDS)
def test_output_folder_mistakes(inputs, tmp_path, command, mistake) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = afile if mistake == "out is a file" else afile / "sub"
    argv = _dir_commands(inputs, str(out), str(tmp_path / "missing"))[command]
    before = tree(tmp_path)
    line = assert_one_line(runner.invoke(app, argv), str(out), f"[{Reason.OUTPUT_PATH}]")
    assert ("is a file" in line) if mistake == "out is a file" else (str(afile) in line)
    assert tree(tmp_path) == before
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("mistake", ["out is a folder", "out below a file"])
@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_output_file_mistakes(inputs, tmp_path, command, mistake) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    if mistake == "out is a folder":
        out = tmp_path / "afolder"
        out.mkdir()
    else:
        out = afile / "x.out"
    argv = _file_commands(inputs, str(out), str(tmp_path / "missing"))[command]
    before = tree(tmp_path)
    named = str(out) if mistake == "out is a folder" else str(afile)
    assert_one_line(runner.invoke(app, argv), named, f"[{Reason.OUTPUT_PATH}]")
    assert tree(tmp_path) == before
    assert afile.read_text() == "keep me"


# -- OUT not writable ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["build", "convert", "phantom", "export"])
def test_output_folder_not_writable(inputs, tmp_path, monkeypatch, command) -> None:
    """The up-front check refuses a folder the user cannot write (os.access says so; as
    root, which can write anywhere, the refusal is simulated)."""
    parent = tmp_path / "locked"
    parent.mkdir()
    out = parent / "out"
    if os.geteuid() == 0:
        import petcorpus.cli._outputs as outputs

        real = outputs._writable
        monkeypatch.setattr(outputs, "_writable", lambda p: p != parent and real(p))
    else:
        parent.chmod(0o555)
    try:
        argv = _dir_commands(inputs, str(out), str(tmp_path / "missing"))[command]
        line = assert_one_line(runner.invoke(app, argv), str(out), str(parent))
        assert "not writable" in line
        assert not out.exists()
    finally:
        parent.chmod(0o755)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux sysfs")
@pytest.mark.parametrize("command", ["build", "convert", "phantom"])
def test_output_folder_on_a_file_system_that_refuses(inputs, command) -> None:
    """/sys refuses new folders even to root: the library's mkdir fails with EPERM (or the
    up-front check refuses it for other users); either way one line naming the path."""
    out = Path("/sys/petcorpus-test-out")
    assert not out.exists()
    argv = _dir_commands(inputs, str(out), "/nonexistent")[command]
    assert_one_line(runner.invoke(app, argv), str(out))
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_catalog_in_a_read_only_folder(inputs, tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    corpus.chmod(0o555)
    try:
        line = assert_one_line(runner.invoke(app, ["clinical", str(corpus), str(inputs.csv)]))
        assert str(corpus) in line
        assert tree(corpus) == []
    finally:
        corpus.chmod(0o755)


# -- the catalog: SQLite errors name the file -----------------------------------------------
@pytest.mark.parametrize("broken", ["a folder", "not a database"])
@pytest.mark.parametrize("command", ["status", "export", "clinical", "verify"])
def test_catalog_that_cannot_be_opened(inputs, tmp_path, command, broken) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    db = corpus / "catalog.sqlite"
    if broken == "a folder":
        db.mkdir()
    else:
        db.write_bytes(b"this is not SQLite\n" * 10)
    argv = {
        "status": ["status", str(corpus)],
        "export": ["export", str(corpus)],
        "clinical": ["clinical", str(corpus), str(inputs.csv)],
        "verify": ["verify", str(corpus)],
    }[command]
    before = tree(tmp_path)
    line = assert_one_line(runner.invoke(app, argv), str(db))
    assert "cannot open the catalog" in line
    assert tree(tmp_path) == before


# -- disk full while writing ------------------------------------------------------------------
def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (as on a full disk).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow
def test_convert_disk_full_is_one_line_and_leaves_no_file(inputs, tmp_path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "XDG_STATE_HOME": str(tmp_path / "s")}
    proc = subprocess.run(
        [sys.executable, "-m", "petcorpus.cli", "convert", str(inputs.dicom), str(out)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "disk full" in lines[0] and str(out) in lines[0]
    assert ".nii.gz" in lines[0]  # the file being written, under its final name
    assert [p for p in out.rglob("*") if not p.is_dir()] == []  # nothing partial
    assert not (tmp_path / "s").exists()  # a user's mistake, not a bug: no log


@pytest.mark.parametrize(
    ("sqlite_says", "hint"),
    [("database or disk is full", "SQLITE_TMPDIR"), ("database is locked", "another petcorpus")],
)
def test_build_whose_staged_scan_fails_is_one_line(
    inputs, tmp_path, monkeypatch, sqlite_says, hint
):
    """The scan stages its rows in SQLite (spilling to the temp folder): SQLite's error is
    one line naming the catalog with what to do, and the refused build leaves no folder."""
    import sqlite3

    from petcorpus.dicom.scan_store import ScanStore

    def fails(self, rows):
        raise sqlite3.OperationalError(sqlite_says)

    monkeypatch.setattr(ScanStore, "stage", fails)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", str(inputs.dicom), str(out), "-j", "1"])
    line = assert_one_line(result, "catalog.sqlite")
    assert sqlite_says in line and hint in line
    assert not out.exists()


# -- Dask: missing, unreachable, bad address; OUT is not created --------------------------------
def test_scheduler_without_dask(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    out = tmp_path / "out"
    argv = ["build", str(inputs.dicom), str(out), "--scheduler", "tcp://127.0.0.1:8786"]
    line = assert_one_line(runner.invoke(app, argv), "pip install 'petcorpus[dask]'")
    assert f"[{Reason.MISSING_DEPENDENCY}]" in line
    assert not out.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("address", ["unreachable", "no port"])
def test_scheduler_unreachable_fails_fast(inputs, tmp_path, address) -> None:
    pytest.importorskip("dask.distributed")
    scheduler = f"tcp://127.0.0.1:{_closed_port()}" if address == "unreachable" else "nohost"
    out = tmp_path / "out"
    argv = ["build", str(inputs.dicom), str(out), "--scheduler", scheduler]
    line = assert_one_line(runner.invoke(app, [*argv, "--connect-timeout", "0.5"]), scheduler)
    assert f"[{Reason.SCHEDULER}]" in line
    assert not out.exists()


# -- export without pyarrow ---------------------------------------------------------------------
_NO_PYARROW = "import sys; sys.modules['pyarrow'] = None; from petcorpus.cli import main; main()"


def _export_without_pyarrow(*args: str) -> subprocess.CompletedProcess[str]:
    """``petcorpus export`` in a fresh interpreter where pyarrow cannot be imported (as on
    the base install: pandas too runs without it)."""
    return subprocess.run(
        [sys.executable, "-c", _NO_PYARROW, "export", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_export_without_pyarrow_writes_csv_and_xlsx(inputs, tmp_path) -> None:
    dest = tmp_path / "tables"
    proc = _export_without_pyarrow(str(inputs.corpus), "--to", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "CT-details.xlsx",
        "PT-details.xlsx",
        "clinical.csv",
    ]
    notes = error_lines(proc.stderr)
    assert len(notes) == 1, proc.stderr
    assert "Parquet files skipped" in notes[0]
    assert "pip install 'petcorpus[parquet]'" in notes[0]  # the extra survives rich markup


@pytest.mark.slow
def test_export_parquet_asked_without_pyarrow_writes_nothing(inputs, tmp_path) -> None:
    dest = tmp_path / "tables"
    formats = ["-f", "csv", "-f", "parquet"]
    proc = _export_without_pyarrow(str(inputs.corpus), "--to", str(dest), *formats)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "pip install 'petcorpus[parquet]'" in lines[0], proc.stderr
    assert not dest.exists()


def test_export_with_pyarrow_writes_parquet_too(inputs, tmp_path) -> None:
    pytest.importorskip("pyarrow")
    result = runner.invoke(app, ["export", str(inputs.corpus), "--to", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 3


# -- usage errors: exit 2, nothing created ------------------------------------------------------
def test_usage_error_exits_2_before_creating_out(inputs, tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["build", str(inputs.dicom), str(out), "--hdf5", str(tmp_path / "c.h5")]
    result = runner.invoke(app, [*argv, "--hdf5-layout", "contiguous", "--compat", "autopet"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert tree(tmp_path) == []


# -- the top-level guard: an unexpected exception ----------------------------------------------
def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom [red]not markup[/red]")


def test_unexpected_error_is_one_line_and_a_log(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("petcorpus.convert.find_studies", _boom)
    out = tmp_path / "out"
    line = assert_one_line(runner.invoke(app, ["convert", str(inputs.dicom), str(out)]))
    assert line.startswith("error: RuntimeError: boom [red]not markup[/red] (full traceback in ")
    logs = list((tmp_path / "state" / "petcorpus" / "logs").glob("petcorpus-*.log"))
    assert len(logs) == 1
    assert str(logs[0]) in line
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: boom" in text and "_boom" in text


def test_debug_shows_the_traceback_instead(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("petcorpus.convert.find_studies", _boom)
    argv = ["--debug", "convert", str(inputs.dicom), str(tmp_path / "out")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "in _boom" in result.stderr
    assert error_lines(result.stderr)[-1].startswith("error: RuntimeError: boom")
    assert not (tmp_path / "state").exists()


def test_petcorpus_error_names_reason_and_path(tmp_path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path)])
    line = assert_one_line(result, str(tmp_path / "catalog.sqlite"))
    assert line.startswith(f"error [{Reason.INVALID_VALUE}]: ")


# -- the helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "disk full"),
        (errno.EFBIG, "disk full / file too large"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system"),
        (errno.ENOTDIR, "is a file, not a folder"),
    ],
)
def test_os_error_line_names_path_and_cause(code, cause) -> None:
    line = os_error_line(OSError(code, os.strerror(code), "/data/out/CT.nii.gz"))
    assert line.startswith("/data/out/CT.nii.gz: ") and cause in line


def test_import_optional_names_the_extra() -> None:
    from petcorpus._optional import import_optional

    with pytest.raises(MissingDependencyError, match=r"pip install 'petcorpus\[dask\]'") as e:
        import_optional("petcorpus_no_such_module", extra="dask", purpose="--scheduler")
    assert isinstance(e.value, ImportError)
    assert e.value.reason is Reason.MISSING_DEPENDENCY


def test_import_optional_refuses_an_old_version(monkeypatch) -> None:
    pytest.importorskip("pyarrow")
    import importlib.metadata

    from petcorpus import _optional

    if "pyarrow" not in _optional._extra_requirements("parquet"):
        pytest.skip("petcorpus is not installed with its metadata")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0")
    with pytest.raises(MissingDependencyError, match=r"found 1\.0: pip install --upgrade"):
        _optional.import_optional("pyarrow", extra="parquet")


def test_output_path_error_is_an_os_error() -> None:
    exc = OutputPathError("the output folder exists and is a file", path="/x")
    assert isinstance(exc, OSError)
    assert str(exc) == "/x: the output folder exists and is a file"


def test_build_from_enhance_refuses_the_options_it_would_ignore(tmp_path):
    """`--from enhance` uses none of the conversion options: given ones are refused."""
    from typer.testing import CliRunner

    from petcorpus.cli import app

    result = CliRunner().invoke(
        app,
        ["build", str(tmp_path), str(tmp_path / "o"), "--from", "enhance", "--suv", "lbm"],
    )
    assert result.exit_code == 2
    assert "--suv" in result.output and "--from enhance" in result.output
    assert not (tmp_path / "o").exists()
