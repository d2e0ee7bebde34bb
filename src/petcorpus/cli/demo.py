"""``petcorpus demo``: run the whole flow on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors


@app.command("demo")
@handle_errors
def demo_cmd(
    out: Path = typer.Argument(
        Path("petcorpus-demo"), help="Folder for everything the demo makes."
    ),
    subjects: int = typer.Option(4, "--subjects", "-n", min=1, help="Number of phantom studies."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Make phantom studies and run petcorpus on them (no download needed)."""
    from petcorpus.demo import run_demo

    result = run_demo(out, subjects=subjects, seed=seed)
    for line in result.checks:
        console.print(line)
    console.print(f"[green]demo done[/green]: {result.studies} studies under {out}")
