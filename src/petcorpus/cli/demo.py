"""``petcorpus demo``: run the whole flow on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir
from petcorpus.cli._progress import NO_PROGRESS, spinner


@app.command("demo")
@handle_errors
def demo_cmd(
    out: Path = typer.Argument(Path("petcorpus-demo"), help="Folder for everything it makes."),
    subjects: int = typer.Option(4, "--subjects", "-n", min=1, metavar="N", help="Studies."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed."),
    workers: int = typer.Option(2, "--workers", "-j", min=1, metavar="N", help="Processes."),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Phantom DICOM → corpus (NIfTI, catalog, HDF5) → metrics → HTML report, offline."""
    from petcorpus.demo import run_demo

    check_output_dir(out)
    with spinner(console, enabled=not no_progress) as bar:
        bar.add_task("demo: phantom DICOM → corpus → metrics → report", total=None)
        r = run_demo(out, subjects=subjects, seed=seed, workers=workers)
    console.print(f"DICOM:       {r.dicom_root}")
    console.print(f"corpus:      {r.corpus} ({r.studies} studies, {r.failed} failed)")
    console.print(f"predictions: {r.predictions}")
    console.print(
        f"metrics:     {r.metrics_csv}  " + "  ".join(f"{k}={v:.3g}" for k, v in r.summary.items())
    )
    console.print(f"[green]demo done[/green] — report: {r.report}")
