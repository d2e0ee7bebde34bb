"""``petcorpus split``: patient-level, stratified cross-validation folds of a corpus."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from petcorpus.cli._app import app, console, handle_errors


@app.command("split")
@handle_errors
def split_cmd(
    out: Path = typer.Argument(
        ..., exists=True, file_okay=False, metavar="CORPUS", help="Corpus folder (catalog)."
    ),
    folds: int = typer.Option(5, "--folds", "-k", min=2, metavar="N", help="Number of folds."),
    stratify: str = typer.Option(
        "diagnosis",
        "--stratify",
        metavar="KEYS",
        help="Comma-separated subject attributes: diagnosis, tracer, site ('' for none).",
    ),
    seed: int = typer.Option(
        0, "--seed", metavar="N", help="Seed: the same seed, the same split."
    ),
    test_fraction: float = typer.Option(
        0.0,
        "--test-fraction",
        min=0.0,
        max=0.95,
        metavar="F",
        help="Share of each class held out as a test set first.",
    ),
) -> None:
    """Split CORPUS's subjects into folds (a subject's studies stay together).

    Stored in the catalog and written as CORPUS/splits.json.
    """
    from petcorpus.splits import split_corpus

    keys = tuple(k.strip() for k in stratify.split(",") if k.strip())
    try:
        split, path = split_corpus(
            out, folds=folds, stratify=keys, seed=seed, test_fraction=test_fraction
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--stratify") from exc
    table = Table("fold", "subjects", title=f"{len(split.fold_of())} subjects, seed {seed}")
    for k, fold in enumerate(split.folds):
        table.add_row(str(k), str(len(fold)))
    if split.test:
        table.add_row("test", str(len(split.test)))
    console.print(table)
    console.print(f"written: {escape(str(path))}")
