"""``petcorpus evaluate`` and ``petcorpus lesions``: numbers from segmentations."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_file


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4g}")
    return str(v)


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    gt: Path = typer.Option(..., "--gt", help="Ground-truth folder (autoPET or flat layout)."),
    pred: Path = typer.Option(..., "--pred", help="Prediction folder (same case ids)."),
    metrics: str = typer.Option("autopet", "--metrics", help="autopet, organs or all."),
    edition: str = typer.Option("III", "--edition", help="autoPET edition: I, III or IV."),
    out: Path = typer.Option(Path("metrics.csv"), "--out", help="Per-case CSV (+ .json)."),
    resample: bool = typer.Option(
        False, "--resample", help="Resample predictions on another grid (nearest neighbour)."
    ),
    tolerance: float = typer.Option(2.0, "--tolerance", help="NSD tolerance in mm."),
    workers: int = typer.Option(
        None, "--workers", min=1, help="Threads for organ metrics (default: all cores)."
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

    if metrics not in ("autopet", "organs", "all"):
        raise typer.BadParameter("must be autopet, organs or all", param_hint="--metrics")
    if edition not in ("I", "III", "IV"):
        raise typer.BadParameter("must be I, III or IV", param_hint="--edition")
    check_output_file(out, what="metrics file")
    result = evaluate_folders(
        gt_dir=gt,
        pred_dir=pred,
        metrics=metrics,  # type: ignore[arg-type]
        edition=edition,  # type: ignore[arg-type]
        resample=resample,
        tolerance_mm=tolerance,
        workers=workers,
        only_predicted=only_predicted,
    )
    written = write_evaluation(result, out)
    if not result.autopet.empty:
        table = Table(title=f"autoPET {edition} metrics")
        cols = ["case", "dice", "fp_volume_ml", "fn_volume_ml", "lesion_tp", "lesion_fp"]
        cols += ["lesion_fn", "lesion_f1"]
        for c in cols:
            table.add_column(c, justify="left" if c == "case" else "right")
        for row in result.autopet[cols].itertuples(index=False):
            table.add_row(*(_fmt(v) for v in row))
        agg = result.summary["autopet"]
        assert isinstance(agg, dict)
        table.add_row("nan-mean", *(_fmt(agg[c]) for c in cols[1:]), style="bold")
        console.print(table)
    if not result.organs.empty:
        table = Table(title=f"organ metrics (mean over cases, NSD at {tolerance:g} mm)")
        for c in ("label", "dice", "iou", "assd", "hd95", "nsd"):
            table.add_column(c, justify="right")
        organs = result.summary["organs"]
        assert isinstance(organs, dict)
        for lab, vals in organs["per_label"].items():
            table.add_row(lab, *(_fmt(vals[c]) for c in ("dice", "iou", "assd", "hd95", "nsd")))
        console.print(table)
    console.print("wrote " + ", ".join(str(p) for p in written), markup=False)


@app.command("lesions")
@handle_errors
def lesions_cmd(
    corpus: Path = typer.Argument(..., help="Corpus in autoPET layout (SUV.nii.gz + SEG.nii.gz)."),
    out: Path = typer.Option(Path("lesions.csv"), "--out", help="Per-lesion CSV."),
) -> None:
    """Per-lesion SUVmax/mean/peak, MTV, TLG, centroid; per-study count, MTV, TLG, Dmax."""
    from petcorpus.metrics.evaluate import lesion_tables

    check_output_file(out, what="lesion table")
    lesions, studies = lesion_tables(corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    lesions.to_csv(out, index=False)
    studies_path = out.with_name(f"{out.stem}_studies.csv")
    studies.to_csv(studies_path, index=False)
    table = Table(title="lesions per study")
    cols = ["subject", "study", "lesion_count", "total_mtv_ml", "total_tlg", "dmax_mm"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("subject", "study") else "right")
    for row in studies[cols].itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    console.print(table)
    console.print(f"wrote {out} ({len(lesions)} lesions) and {studies_path}", markup=False)
