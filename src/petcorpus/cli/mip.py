"""``petcorpus mip``: PET maximum-intensity projections of a study."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_file
from petcorpus.cli._params import View, parse_views


@app.command("mip")
@handle_errors
def mip_cmd(
    study_dir: Path = typer.Argument(
        ..., metavar="STUDY", help="A study folder: CORPUS/<subject>/<study>/."
    ),
    out: Path = typer.Option(Path("mip.png"), "--out", "-o", metavar="FILE", help="PNG to write."),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old name of --out."),
    views: str = typer.Option(
        "coronal,sagittal",
        "--views",
        metavar="VIEWS",
        help="Comma-separated, from: " + ", ".join(v.value for v in View) + ".",
    ),
    vmax: float = typer.Option(
        10.0, "--vmax", min=0.01, metavar="SUV", help="SUV shown black (window 0..SUV)."
    ),
    with_ct: bool = typer.Option(False, "--with-ct", help="Add a CT MIP (CTres.nii.gz or CT)."),
    pred: Path | None = typer.Option(
        None,
        "--pred",
        metavar="FILE",
        help="Predicted mask (NIfTI, PET grid): truth vs prediction, FP/FN.",
    ),
    organs: Path | None = typer.Option(
        None, "--organs", metavar="FILE", help="Organ label map (NIfTI, PET grid): outlines."
    ),
    labels: Path | None = typer.Option(None, "--labels", hidden=True, help="Old --organs."),
    pixel_mm: float = typer.Option(
        2.0, "--pixel-mm", min=0.1, metavar="MM", help="Display pixel size."
    ),
) -> None:
    """Write PET maximum-intensity projections of a study with its lesions in colour."""
    from petcorpus.viz import png_bytes, read_study_dir, study_figure
    from petcorpus.volume import Volume

    png = output or out
    view_list = parse_views(views)
    check_output_file(png, what="PNG file")
    images = read_study_dir(study_dir, with_ct=with_ct)
    pred_vol = Volume.from_nifti(pred) if pred is not None else None
    organ_map = organs or labels
    label_vol = Volume.from_nifti(organ_map) if organ_map is not None else None
    fig = study_figure(
        images.suv,  # type: ignore[arg-type]
        images.seg,
        pred=pred_vol,
        ct=images.ct,
        labels=label_vol,
        views=view_list,  # type: ignore[arg-type]
        vmax=vmax,
        pixel_mm=pixel_mm,
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(png_bytes(fig))
    console.print(f"wrote {png} ({fig.width}x{fig.height})", markup=False)
