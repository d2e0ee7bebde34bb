"""docs/design.md's repository layout is the tree: every path it lists exists, and every
module and folder of the package is listed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "petcorpus"


def _listing() -> list[str]:
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layout of the repository", 1)[1]
    return section.split("```", 2)[1].splitlines()


def _listed() -> set[str]:
    """Paths relative to src/petcorpus/ (``dicom/io.py``, ``dicom/``, ``volume.py``)."""
    listed: set[str] = set()
    folder = ""
    for line in _listing():
        if not line.startswith("  ") or not line.strip():
            continue
        if not line.startswith("   "):  # an entry: "  name   description"
            name = line.split()[0]
            listed.add(name)
            folder = name if name.endswith("/") else ""
        if folder:  # a folder's files are named in its description (and continuations)
            for module in re.findall(r"\b(_?[a-z0-9_.]+\.(?:py|json|j2))\b", line):
                listed.add(folder + module)
    return listed


def test_every_listed_path_exists() -> None:
    missing = sorted(p for p in _listed() if not (PACKAGE / p).exists())
    assert missing == [], f"docs/design.md lists paths that do not exist: {missing}"


def test_every_module_and_folder_is_listed() -> None:
    present = set()
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts or path.name in ("__init__.py", "py.typed"):
            continue
        present.add(rel.as_posix() + ("/" if path.is_dir() else ""))
    unlisted = sorted(present - _listed())
    assert unlisted == [], f"docs/design.md does not list: {unlisted}"
