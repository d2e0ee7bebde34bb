"""``petcorpus datalist``: a MONAI / Auto3DSeg datalist of a split corpus."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors


@app.command("datalist")
@handle_errors
def datalist_cmd(
    corpus: Path = typer.Argument(
        ...,
        exists=True,
        file_okay=False,
        metavar="CORPUS",
        help="Corpus folder (with splits.json).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="FILE", help="Datalist (default: CORPUS/datalist.json)."
    ),
    absolute: bool = typer.Option(
        False, "--absolute", help="Absolute paths (default: relative to CORPUS)."
    ),
    input_yaml: bool = typer.Option(
        True, "--input-yaml/--no-input-yaml", help="Also write Auto3DSeg's input.yaml beside it."
    ),
) -> None:
    """Write CORPUS's MONAI datalist: training cases with their fold, test cases.

    Channels: image = CTres, image2 = SUV, label = SEG; folds from CORPUS/splits.json
    (run `petcorpus split` first).
    """
    from petcorpus.datalists import write_datalist

    path, yaml_path = write_datalist(corpus, out, input_yaml=input_yaml, absolute=absolute)
    console.print(f"written: {escape(str(path))}")
    if yaml_path is not None:
        console.print(f"written: {escape(str(yaml_path))}")
