"""``petcorpus convert``: DICOM study (or a folder of studies) → autoPET NIfTI layout."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._outputs import check_output_dir


@app.command("convert")
@handle_errors
def convert_cmd(
    dicom_dir: Path = typer.Argument(..., exists=True, help="A study folder or a tree of them."),
    out: Path = typer.Argument(..., help="Output root: <out>/<subject>/<study>/*.nii.gz"),
    compat: str = typer.Option(
        None, "--compat", help="'autopet': reproduce the published files (dtypes, orientation)."
    ),
    compat_flavor: str = typer.Option(
        "published", "--compat-flavor", help="published (dicom2nifti 2.3 dtypes) or current."
    ),
    suv_time: str = typer.Option("qiba", "--suv-time", help="qiba (default) or autopet."),
    suv: str = typer.Option("bw", "--suv", help="What SUV.nii.gz holds: bw, lbm or bsa."),
    workers: int = typer.Option(None, "--workers", "-j", help="Threads (default: all cores)."),
    pet_series: str = typer.Option(
        None, "--pet-series", metavar="UID", help="Convert this PT series (not the rule's)."
    ),
    ct_series: str = typer.Option(
        None, "--ct-series", metavar="UID", help="Convert this CT series (not the rule's)."
    ),
    seg: bool = typer.Option(
        True, "--seg/--no-seg", help="--no-seg: images only (for a study whose SEG is broken)."
    ),
) -> None:
    """Convert PET/CT studies to CT, PET (Bq/ml), SUV, CTres and SEG NIfTI, one at a time.

    For a whole corpus with resume, a catalog and parallel workers, use `petcorpus build`.
    """
    from petcorpus.convert import ConversionOptions, convert_to_layout, find_studies
    from petcorpus.errors import PetcorpusError
    from petcorpus.naming import name_studies
    from petcorpus.pipeline import skipped_summary

    try:
        options = ConversionOptions(
            compat=compat,  # type: ignore[arg-type]
            compat_flavor=compat_flavor,  # type: ignore[arg-type]
            suv_time=suv_time,  # type: ignore[arg-type]
            suv=suv,  # type: ignore[arg-type]
            workers=workers,
            pet_series=pet_series,
            ct_series=ct_series,
            seg=seg,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    check_output_dir(out)
    studies, scanned = find_studies(dicom_dir, workers=workers)
    if scanned.skipped:
        console.print(skipped_summary(scanned.skipped, dicom_dir), markup=False)
    if not studies:
        err_console.print(f"[red]error[/red]: {escape(str(dicom_dir))}: no DICOM study found")
        raise typer.Exit(code=1)
    names = name_studies(studies)
    table = Table("study", "result", "output")
    failed = 0
    for study in studies:
        try:
            paths = convert_to_layout(study, out, options, name=names[str(study.study_uid)])
        except PetcorpusError as exc:
            failed += 1
            table.add_row(
                study.study_uid[-12:], f"[red]failed[/red] [{exc.reason}]", escape(str(exc))
            )
            continue
        table.add_row(
            study.study_uid[-12:],
            "[green]done[/green]",
            escape(str(paths["SUV"].parent.relative_to(out))),
        )
    console.print(table)
    console.print(f"{len(studies) - failed} converted, {failed} failed")
    if failed:
        raise typer.Exit(code=1)
