"""``petcorpus convert``: DICOM study (or a folder of studies) → autoPET NIfTI layout."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._format import table
from petcorpus.cli._outputs import check_output_dir
from petcorpus.cli._params import (
    CT_SERIES,
    NO_SEG,
    PET_SERIES,
    Compat,
    CompatFlavor,
    Suv,
    SuvTime,
    value,
)
from petcorpus.cli._progress import NO_PROGRESS, progress_bar


@app.command("convert")
@handle_errors
def convert_cmd(
    dicom_dir: Path = typer.Argument(
        ..., exists=True, metavar="DICOM", help="A study folder or a tree of them."
    ),
    out: Path = typer.Argument(..., help="Output root: OUT/<subject>/<study>/*.nii.gz"),
    compat: Compat = typer.Option(
        None, "--compat", help="autopet: reproduce the published files (dtypes, orientation)."
    ),
    compat_flavor: CompatFlavor = typer.Option(
        CompatFlavor.PUBLISHED,
        "--compat-flavor",
        help="With --compat: dicom2nifti 2.3 dtypes (published) or >= 2.4 (current).",
    ),
    suv_time: SuvTime = typer.Option(SuvTime.QIBA, "--suv-time", help="SUV time reference."),
    suv: Suv = typer.Option(Suv.BW, "--suv", help="What SUV.nii.gz holds."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, metavar="N", help="Threads (default: all cores)."
    ),
    pet_series: str = PET_SERIES,
    ct_series: str = CT_SERIES,
    no_seg: bool = NO_SEG,
    no_progress: bool = NO_PROGRESS,
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
            compat=value(compat),  # type: ignore[arg-type]
            compat_flavor=compat_flavor.value,  # type: ignore[arg-type]
            suv_time=suv_time.value,  # type: ignore[arg-type]
            suv=suv.value,  # type: ignore[arg-type]
            workers=workers,
            pet_series=pet_series,
            ct_series=ct_series,
            seg=not no_seg,
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
    results = table("study", "result", "output")
    failed = 0
    with progress_bar(console, enabled=not no_progress) as bar:
        task = bar.add_task("converting", total=len(studies))
        for study in studies:
            try:
                paths = convert_to_layout(study, out, options, name=names[str(study.study_uid)])
            except PetcorpusError as exc:
                failed += 1
                results.add_row(
                    study.study_uid[-12:], f"[red]failed[/red] [{exc.reason}]", escape(str(exc))
                )
                continue
            finally:
                bar.advance(task)
            results.add_row(
                study.study_uid[-12:],
                "[green]done[/green]",
                escape(str(paths["SUV"].parent.relative_to(out))),
            )
    console.print(results)
    console.print(f"{len(studies) - failed} converted, {failed} failed")
    if failed:
        raise typer.Exit(code=1)
