"""``petcorpus lesions``: per-lesion and per-study numbers of a corpus."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._format import number, table
from petcorpus.cli._outputs import check_output_file


@app.command("lesions")
@handle_errors
def lesions_cmd(
    corpus: Path = typer.Argument(..., help="Corpus in autoPET layout (SUV.nii.gz + SEG.nii.gz)."),
    out: Path = typer.Option(
        Path("lesions.csv"), "--out", "-o", metavar="FILE", help="Per-lesion CSV."
    ),
) -> None:
    """Per-lesion SUVmax/mean/peak, MTV, TLG, centroid; per-study count, MTV, TLG, Dmax."""
    from petcorpus.metrics.evaluate import lesion_tables

    check_output_file(out, what="lesion table")
    lesions, studies = lesion_tables(corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    lesions.to_csv(out, index=False)
    studies_path = out.with_name(f"{out.stem}_studies.csv")
    studies.to_csv(studies_path, index=False)
    cols = ["subject", "study", "lesion_count", "total_mtv_ml", "total_tlg", "dmax_mm"]
    cells = [[number(v) for v in row] for row in studies[cols].itertuples(index=False)]
    console.print(table(*cols, rows=cells, title="lesions per study", right=tuple(cols[2:])))
    console.print(f"wrote {out} ({len(lesions)} lesions) and {studies_path}", markup=False)
