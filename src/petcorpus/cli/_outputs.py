"""Up-front checks of the files and folders a command is about to write.

A command calls these first, before it creates anything (and before it connects to a Dask
scheduler or reads any input), so that a wrong OUT ends in one line and leaves nothing
behind. They only look: nothing is created here. A write can still fail later (the disk
fills up, a network file system refuses); the CLI reports that as one line too
(:func:`petcorpus.cli._app.fail`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from petcorpus.errors import OutputPathError

__all__ = ["check_output_dir", "check_output_file", "check_table_file", "write_table"]


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    if path.is_symlink():
        raise OutputPathError(
            f"the {what} is a symbolic link to a missing target; remove it or give another path",
            path=path,
        )
    ancestor = path.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(
            f"cannot create the {what}: {ancestor} is a file, not a folder", path=path
        )
    if not _writable(ancestor):
        raise OutputPathError(
            f"cannot create the {what}: {ancestor} is not writable "
            "(no permission, or a read-only file system)",
            path=path,
        )


def check_output_dir(path: str | os.PathLike[str], *, what: str = "output folder") -> Path:
    """Check that ``path`` is a writable folder, or can be created as one.

    Parameters
    ----------
    path : path-like
        The folder the command writes into (OUT).
    what : str
        How the message names it ("output folder", "destination folder", ...).

    Returns
    -------
    Path
        ``path``, unchanged.

    Raises
    ------
    OutputPathError
        ``path`` is an existing file, is not writable, or cannot be created (a part of it is
        a file, or its nearest existing folder is not writable).
    """
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise OutputPathError(
                f"the {what} exists and is a file, not a folder; give a folder", path=p
            )
        if not _writable(p):
            raise OutputPathError(
                f"the {what} is not writable (no permission, or a read-only file system)",
                path=p,
            )
        return p
    _check_creatable(p, what)
    return p


def check_output_file(path: str | os.PathLike[str], *, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written: not a folder, its folder writable or
    creatable (the command creates missing parent folders when it writes).

    Raises
    ------
    OutputPathError
        ``path`` is a folder, or its folder cannot be written or created.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"the {what} is a folder; give a file name", path=p)
    check_output_dir(p.absolute().parent, what=f"folder of the {what}")
    return p


def check_table_file(path: Path) -> Path:
    """:func:`check_output_file`, and a ``.parquet`` name needs pyarrow (one clear line)."""
    from petcorpus._optional import import_optional

    check_output_file(path)
    if path.suffix == ".parquet":
        import_optional("pyarrow", extra="parquet", purpose="a .parquet table")
    return path


def write_table(table: Any, path: Path) -> None:
    """Write a DataFrame as CSV (or Parquet, by the suffix), atomically."""
    from petcorpus.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        with atomic_write(path) as fh:
            table.to_parquet(fh, index=False)
    else:
        with atomic_write(path, "w") as fh:
            table.to_csv(fh, index=False)
