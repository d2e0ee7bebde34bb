"""``petcorpus qc``: quality control of a corpus, stored in its catalog."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._format import table
from petcorpus.cli._progress import NO_PROGRESS, progress_bar

T = TypeVar("T")


@app.command("qc")
@handle_errors
def qc_cmd(
    corpus: Path = typer.Argument(
        ..., metavar="CORPUS", help="Corpus (any layout; its catalog is updated)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any study is flagged."),
    shift_mm: float = typer.Option(
        6.0, "--shift-mm", min=0.0, metavar="MM", help="Flag a PET/CT shift above this."
    ),
    no_pictures: bool = typer.Option(
        False, "--no-pictures", help="Do not draw a picture for each flag."
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N", help="Processes."),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Check every study: PET/CT misalignment, implausible SUV, label contradictions,
    acquisition outliers against the corpus; with organ masks (ENHANCE.PET), hot-organ
    activity outside its mask. Results go to the catalog (catalog status, report)."""
    from petcorpus.qc import QcOptions, run_qc

    bar = progress_bar(console, enabled=not no_progress)

    def track(items: Iterable[T]) -> Iterator[T]:
        items = list(items)
        yield from bar.track(items, total=len(items), description="studies")

    options = QcOptions(shift_mm=shift_mm, pictures=not no_pictures)
    with bar:
        report = run_qc(corpus, options=options, progress=track, workers=workers)
    flagged = report.flagged
    if flagged:
        t = table("study", "check", "reason", "finding", title="flagged studies")
        for s in flagged:
            for f in s.flags:
                t.add_row(escape(s.key), f.check, str(f.reason), escape(f.message))
        console.print(t)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    console.print(
        f"checked {len(report.studies)} studies: {len(flagged)} flagged "
        f"(stored in {corpus / 'catalog.sqlite'})",
        markup=False,
    )
    if strict and flagged:
        raise typer.Exit(code=1)
