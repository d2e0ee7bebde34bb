"""``petcorpus report``: the offline HTML quality-control report of a corpus."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_file
from petcorpus.cli._progress import NO_PROGRESS, progress_bar

T = TypeVar("T")


@app.command("report")
@handle_errors
def report_cmd(
    corpus: Path = typer.Argument(..., help="Corpus folder in the autoPET layout."),
    metrics: Path | None = typer.Option(
        None, "--metrics", metavar="CSV", help="Per-case metrics from `petcorpus evaluate`."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="FILE", help="HTML file (default CORPUS/report.html)."
    ),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old name of --out."),
    with_ct: bool = typer.Option(False, "--with-ct", help="Add CT MIPs to the study pages."),
    pred: Path | None = typer.Option(
        None, "--pred", metavar="DIR", help="Predicted masks: truth vs prediction per study."
    ),
    external_images: bool = typer.Option(
        False, "--external-images", help="Write PNGs beside the HTML instead of embedding."
    ),
    vmax: float = typer.Option(10.0, "--vmax", min=0.01, metavar="SUV", help="SUV window top."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N", help="Processes."),
    no_progress: bool = NO_PROGRESS,
    timestamp: bool = typer.Option(
        False, "--timestamp", help="Write the build date and time into the page."
    ),
) -> None:
    """Write an offline HTML quality-control report (summary, failures, MIPs, metrics)."""
    from petcorpus.report import write_report

    html = out or output
    check_output_file(html or corpus / "report.html", what="report")
    bar = progress_bar(console, enabled=not no_progress)

    def track(items: Iterable[T]) -> Iterator[T]:
        items = list(items)
        yield from bar.track(items, total=len(items), description="studies")

    with bar:
        path = write_report(
            corpus,
            metrics=metrics,
            output=html,
            embed=not external_images,
            vmax=vmax,
            with_ct=with_ct,
            predictions=pred,
            workers=workers,
            progress=track,
            timestamp=timestamp,
        )
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", markup=False)
