"""Every ```bash example in docs/*.md runs and exits 0, so the docs cannot rot.

Blocks of one page run in order, in one fresh folder, so later examples may use what
earlier ones made. A block fenced as ```bash no-test is shown to users but not run (for
commands that need the internet); each such command must be tested elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```", re.M | re.S)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if _BLOCK.search(p.read_text()))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_doc_examples_run(page: Path, tmp_path: Path) -> None:
    if shutil.which("petcorpus") is None:
        pytest.skip("the petcorpus console script is not installed (pip install -e .)")
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="120")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for block in _BLOCK.findall(page.read_text()):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"{page.name} example failed:\n{block}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}"
        )


def test_readme_has_exactly_two_setup_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = _BLOCK.findall(setup)
    assert len(commands) == 2
    assert "petcorpus demo" in commands[0] and "pytest" in commands[1]
    ci = (DOCS.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
