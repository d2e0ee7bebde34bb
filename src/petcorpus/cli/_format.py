"""How numbers, sizes and tables print: the same in every command, and within 80 columns.

A table's columns fold a long cell onto more lines instead of cutting it (a header, a UID, a
path), so that ``COLUMNS=80 petcorpus ...`` shows every character; a header named after a
data column (``fp_volume_ml``) is printed with spaces (``fp volume ml``), so that it folds
between words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rich import box
from rich.table import Table
from rich.text import Text

__all__ = ["human_bytes", "number", "table"]


def human_bytes(n: int | None) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units); None → ``"unknown size"``."""
    if n is None:
        return "unknown size"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def number(v: object) -> str:
    """A metric as printed in a table: 4 significant digits, ``nan``, ``inf``."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4g}")
    return str(v)


def table(
    *columns: str,
    rows: Iterable[Sequence[str]] = (),
    title: str | None = None,
    right: tuple[str, ...] = (),
) -> Table:
    """A rich Table whose columns fold (never truncate), holding ``rows`` (more may be added).

    ``right`` names the right-justified (number) columns: each is as narrow as its widest
    cell or header word, so that the text columns get the rest of the terminal.
    """
    rows = [list(r) for r in rows]
    t = Table(title=title, box=box.SIMPLE_HEAD)
    for i, c in enumerate(columns):
        header = c.replace("_", " ")
        width = None
        if c in right:
            cells = [Text.from_markup(r[i]).cell_len for r in rows]
            width = max([*cells, *(len(w) for w in header.split())])
        t.add_column(
            header,
            overflow="fold",
            justify="right" if c in right else "left",
            max_width=width,
        )
    for r in rows:
        t.add_row(*r)
    return t
