"""``petcorpus mip`` and ``petcorpus report``: pictures and the HTML quality-control report."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_file


@app.command("mip")
@handle_errors
def mip_cmd(
    study_dir: Path = typer.Argument(..., help="A study folder: <out>/<subject>/<study>/."),
    output: Path = typer.Option(Path("mip.png"), "--output", "-o", help="PNG to write."),
    views: str = typer.Option(
        "coronal,sagittal", "--views", help="Comma-separated: coronal, sagittal, axial."
    ),
    vmax: float = typer.Option(10.0, "--vmax", min=0.01, help="SUV shown black (window 0..vmax)."),
    with_ct: bool = typer.Option(False, "--with-ct", help="Add a CT MIP (CTres.nii.gz or CT)."),
    pred: Path | None = typer.Option(
        None, "--pred", help="Predicted mask (NIfTI, PET grid): truth vs prediction, FP/FN."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Organ label map (NIfTI, PET grid) drawn as outlines."
    ),
    pixel_mm: float = typer.Option(2.0, "--pixel-mm", min=0.1, help="Display pixel size (mm)."),
) -> None:
    """Write PET maximum-intensity projections of a study with its lesions in colour."""
    from petcorpus.viz import png_bytes, read_study_dir, study_figure
    from petcorpus.volume import Volume

    check_output_file(output, what="PNG file")
    view_list = [v.strip() for v in views.split(",") if v.strip()]
    images = read_study_dir(study_dir, with_ct=with_ct)
    pred_vol = Volume.from_nifti(pred) if pred is not None else None
    label_vol = Volume.from_nifti(labels) if labels is not None else None
    fig = study_figure(
        images.suv,  # type: ignore[arg-type]
        images.seg,
        pred=pred_vol,
        ct=images.ct,
        labels=label_vol,
        views=view_list,
        vmax=vmax,
        pixel_mm=pixel_mm,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(png_bytes(fig))
    console.print(f"wrote {output} ({fig.width}x{fig.height})", markup=False)


@app.command("report")
@handle_errors
def report_cmd(
    out: Path = typer.Argument(..., help="Corpus folder in the autoPET layout."),
    metrics: Path | None = typer.Option(
        None, "--metrics", help="Per-case metrics CSV from `petcorpus evaluate`."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="HTML file (default <out>/report.html)."
    ),
    with_ct: bool = typer.Option(False, "--with-ct", help="Add CT MIPs to the study pages."),
    pred: Path | None = typer.Option(
        None, "--pred", help="Folder of predicted masks: truth vs prediction per study."
    ),
    external_images: bool = typer.Option(
        False, "--external-images", help="Write PNGs beside the HTML instead of embedding."
    ),
    vmax: float = typer.Option(10.0, "--vmax", min=0.01, help="SUV window upper end."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel processes."),
    timestamp: bool = typer.Option(
        False, "--timestamp", help="Write the build date and time into the page."
    ),
) -> None:
    """Write an offline HTML quality-control report (summary, failures, MIPs, metrics)."""
    from rich.progress import track

    from petcorpus.report import write_report

    check_output_file(output or out / "report.html", what="report")
    path = write_report(
        out,
        metrics=metrics,
        output=output,
        embed=not external_images,
        vmax=vmax,
        with_ct=with_ct,
        predictions=pred,
        workers=workers,
        progress=lambda it: track(list(it), description="studies", console=console),
        timestamp=timestamp,
    )
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", markup=False)
