"""``petcorpus deidentify``: de-identify a DICOM tree (PS3.15, keeping SUV and SEG intact)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir, check_output_file
from petcorpus.cli._progress import NO_PROGRESS, progress_bar


def _date_shift(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter("auto or a whole number of days") from None


@app.command("deidentify")
@handle_errors
def deidentify_cmd(
    src: Path = typer.Argument(..., help="A DICOM tree (any layout) or one file."),
    out: Path = typer.Argument(..., help="Folder for the de-identified tree."),
    key: Path = typer.Option(..., "--key", metavar="KEYFILE", help="File holding the secret key."),
    date_shift: str = typer.Option(
        "auto",
        "--date-shift",
        metavar="auto|DAYS",
        help="Days added to every date; auto: a keyed shift per patient, 1-10 years back.",
    ),
    id_map: Path | None = typer.Option(
        None, "--id-map", metavar="CSV", help="New PatientIDs: PatientID,NewPatientID rows."
    ),
    write_map: Path | None = typer.Option(
        None, "--write-map", metavar="FILE", help="Write the ID map here (never inside OUT)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N", help="Processes."),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """De-identify the DICOM files under SRC into OUT (PS3.15 Basic Profile + options)."""
    from petcorpus.deid.deidentify import deidentify, read_id_map, write_id_map
    from petcorpus.deid.uids import load_key
    from petcorpus.errors import OutputPathError

    shift = _date_shift(date_shift)
    secret = load_key(key)
    mapping = read_id_map(id_map) if id_map is not None else None
    dest = check_output_dir(out)
    if write_map is not None:
        target = check_output_file(write_map).resolve()
        if dest.resolve() in target.parents:
            raise OutputPathError("the ID map must not be written inside OUT", path=write_map)
    bar = progress_bar(console, enabled=not no_progress)
    task_id = bar.add_task("de-identifying", total=None)
    with bar:
        report = deidentify(
            src,
            dest,
            key=secret,
            date_shift=shift,
            id_map=mapping,
            workers=workers,
            on_outcome=lambda _: bar.advance(task_id),
        )
    if write_map is not None:
        write_id_map(write_map, report.id_map)
    console.print(
        f"{len(report.written)} files written, {report.resumed} already done, "
        f"{len(report.skipped)} not DICOM (not copied), {len(report.failed)} failed",
        markup=False,
    )
    for series, reason in sorted(report.burned_in.items()):
        console.print(
            f"[yellow]warning[/yellow] {escape(series)}: may hold burned-in annotations "
            f"({escape(reason)}); check the pixels"
        )
    for o in report.failed:
        assert o.failed is not None
        console.print(f"[red]failed[/red] [{o.failed.reason}] {escape(str(o.failed))}")
    if not report.ok:
        raise typer.Exit(code=1)
