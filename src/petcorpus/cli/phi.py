"""``petcorpus phi-check``: look for patient identifiers in a corpus or a DICOM tree."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors


@app.command("phi-check")
@handle_errors
def phi_check_cmd(
    path: Path = typer.Argument(..., help="Folder (or file) to check."),
    source: Path | None = typer.Option(
        None, "--source", metavar="DICOM_TREE", help="Take the identifiers from this tree."
    ),
    identifiers: Path | None = typer.Option(
        None, "--identifiers", metavar="FILE", help="Or from this list, one per line."
    ),
) -> None:
    """Report every identifier of the source found under PATH; exit 1 on any hit."""
    from petcorpus.deid.phi import identifiers_from_list, identifiers_from_source, phi_check

    if (source is None) == (identifiers is None):
        raise typer.BadParameter("give one of --source or --identifiers")
    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file or folder")
    found = (
        identifiers_from_source(source)
        if source is not None
        else identifiers_from_list(identifiers)  # type: ignore[arg-type]
    )
    if not found:
        console.print("no identifiers to look for (nothing found in the source)")
        raise typer.Exit(code=1)
    hits, errors = phi_check(path, found)
    for hit in hits:
        console.print(f"[red]hit[/red] {escape(str(hit))}")
    for line in errors:
        console.print(f"[red]unreadable[/red] {escape(line)}")
    console.print(
        f"{len(hits)} hits of {len(found)} identifiers" if hits else "no identifiers found",
        markup=False,
    )
    if hits or errors:
        raise typer.Exit(code=1)
