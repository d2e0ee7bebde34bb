"""``petcorpus evaluate``: score predicted masks against ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._format import number, table
from petcorpus.cli._outputs import check_output_file
from petcorpus.cli._params import Edition, MetricSet


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    gt: Path = typer.Option(
        ..., "--gt", metavar="DIR", help="Ground-truth folder (autoPET or flat layout)."
    ),
    pred: Path = typer.Option(..., "--pred", metavar="DIR", help="Predictions (same case ids)."),
    metrics: MetricSet = typer.Option(MetricSet.AUTOPET, "--metrics", help="Which metrics."),
    edition: Edition = typer.Option(Edition.III, "--edition", help="autoPET edition."),
    out: Path = typer.Option(
        Path("metrics.csv"), "--out", "-o", metavar="FILE", help="Per-case CSV (+ .json)."
    ),
    resample: bool = typer.Option(
        False, "--resample", help="Resample predictions on another grid (nearest neighbour)."
    ),
    tolerance: float = typer.Option(2.0, "--tolerance", metavar="MM", help="NSD tolerance."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, metavar="N", help="Threads for organ metrics."
    ),
    only_predicted: bool = typer.Option(
        False,
        "--only-predicted",
        help="Score only the cases that have a prediction (an nnU-Net fold or test set).",
    ),
) -> None:
    """Score predicted masks against ground truth: the official autoPET metrics and/or
    per-label organ metrics (Dice, IoU, ASSD, HD, HD95, NSD)."""
    from petcorpus.metrics.evaluate import evaluate_folders, write_evaluation

    check_output_file(out, what="metrics file")
    result = evaluate_folders(
        gt_dir=gt,
        pred_dir=pred,
        metrics=metrics.value,  # type: ignore[arg-type]
        edition=edition.value,  # type: ignore[arg-type]
        resample=resample,
        tolerance_mm=tolerance,
        workers=workers,
        only_predicted=only_predicted,
    )
    written = write_evaluation(result, out)
    if not result.autopet.empty:
        cols = ["case", "dice", "fp_volume_ml", "fn_volume_ml", "lesion_tp", "lesion_fp"]
        cols += ["lesion_fn", "lesion_f1"]
        agg = result.summary["autopet"]
        assert isinstance(agg, dict)
        cells = [[number(v) for v in row] for row in result.autopet[cols].itertuples(index=False)]
        cells.append(
            ["[bold]nan-mean[/bold]", *(f"[bold]{number(agg[c])}[/bold]" for c in cols[1:])]
        )
        title = f"autoPET {edition.value} metrics"
        console.print(table(*cols, rows=cells, title=title, right=tuple(cols[1:])))
    if not result.organs.empty:
        names = ("dice", "iou", "assd", "hd95", "nsd")
        organs = result.summary["organs"]
        assert isinstance(organs, dict)
        cells = [
            [str(lab), *(number(vals[c]) for c in names)]
            for lab, vals in organs["per_label"].items()
        ]
        title = f"organ metrics (mean over cases, NSD at {tolerance:g} mm)"
        console.print(table("label", *names, rows=cells, title=title, right=("label", *names)))
    console.print("wrote " + ", ".join(str(p) for p in written), markup=False)
