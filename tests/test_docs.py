"""Every ```bash example in docs/*.md runs and exits 0, so the docs cannot rot.

Blocks of one page run in order, in one fresh folder, so later examples may use what
earlier ones made. A block fenced as ```bash no-test is shown to users but not run (for
commands that need the internet); each such command must be tested elsewhere.

Several pages start from the same phantom data (``petcorpus phantom dicom --subjects 4 …``).
A block whose first line is such a command, written identically on more than one page, has
that line run once per test session, exactly as written, in a folder of its own; each page
then gets a copy of what it made instead of running it again. The other lines, and every
command that is not repeated, run as written.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```", re.M | re.S)
# A command that only writes phantom data into one new folder (no shell syntax in it).
_GENERATE = re.compile(
    r"petcorpus (?:enhance )?phantom (?P<out>[\w-]+)(?: --?[\w-]+(?: [\w-]+)?)*"
)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if _BLOCK.search(p.read_text()))


def _blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


def _first_line(block: str) -> str:
    return block.split("\n", 1)[0].strip()


def _shared_lines() -> set[str]:
    """Phantom commands that open a block on more than one page."""
    lines = Counter(
        line
        for page in _pages()
        for line in {_first_line(b) for b in _blocks(page)}
        if _GENERATE.fullmatch(line)
    )
    return {line for line, pages in lines.items() if pages > 1}


SHARED = _shared_lines()


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="120")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if env.get("PYTHONPATH"):  # `PYTHONPATH=src pytest`: the examples run in other folders
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p
        )
    return env


def _run(block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _failure(page: Path, block: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{page.name} example failed:\n{block}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Path], Path]:
    """``generated(line, page)``: the folder in which ``line`` ran, once per session.

    The folder is shared by pytest-xdist's workers (the run's temporary root); a lock
    makes the first worker that needs it run the command while the others wait.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "doc-phantoms"
    root.mkdir(exist_ok=True)

    def made(line: str, page: Path) -> Path:
        folder = root / hashlib.sha256(line.encode()).hexdigest()[:16]
        with open(root / f"{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not folder.is_dir():
                work = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=root))
                result = _run(line, work)
                assert result.returncode == 0, _failure(page, line, result)
                work.rename(folder)
        return folder

    return made


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_doc_examples_run(
    page: Path, tmp_path: Path, generated: Callable[[str, Path], Path]
) -> None:
    if shutil.which("petcorpus") is None:
        pytest.skip("the petcorpus console script is not installed (pip install -e .)")
    for block in _blocks(page):
        line = _first_line(block)
        if line in SHARED:
            out = _GENERATE.fullmatch(line)["out"]  # type: ignore[index]
            shutil.copytree(generated(line, page) / out, tmp_path / out)
            block = block.split("\n", 1)[1]
        result = _run(block, tmp_path)
        assert result.returncode == 0, _failure(page, block, result)


def test_shared_phantom_commands_are_found() -> None:
    """The pages that start from identical phantom data are recognised (see the top)."""
    assert "petcorpus phantom dicom --subjects 4 --vendor mixed" in SHARED
    assert not _GENERATE.fullmatch("petcorpus phantom dicom --subjects 2 && rm -r dicom")


def test_readme_has_exactly_two_setup_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = _BLOCK.findall(setup)
    assert len(commands) == 2
    assert "petcorpus demo" in commands[0] and "pytest" in commands[1]
    ci = (DOCS.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
