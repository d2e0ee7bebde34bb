"""``petcorpus build``: a whole corpus, in parallel, resumable, catalogued."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir, check_output_file


def _connect(scheduler: str, timeout: float) -> Any:
    """A Dask client of ``scheduler``, or one clear error (dask missing, bad or unreachable
    address) — called before OUT is created."""
    from petcorpus._optional import import_optional
    from petcorpus.errors import PetcorpusError, Reason

    distributed = import_optional("dask.distributed", extra="dask", purpose="--scheduler")
    try:
        return distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise PetcorpusError(
            f"cannot connect to the Dask scheduler ({detail}); "
            "check the address (tcp://HOST:PORT) and that the scheduler is running",
            path=scheduler,
            reason=Reason.SCHEDULER,
        ) from exc


@app.command("build")
@handle_errors
def build_cmd(
    dicom_root: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="DICOM tree (or ENHANCE.PET root with --from)."
    ),
    out: Path = typer.Argument(..., help="Corpus folder (NIfTI layout + catalog.sqlite)."),
    clinical: Path = typer.Option(None, "--clinical", exists=True, help="TCIA clinical CSV."),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Local processes."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler, tcp://HOST:PORT."),
    connect_timeout: float = typer.Option(
        10.0, "--connect-timeout", min=0.1, help="Seconds to wait for the --scheduler."
    ),
    hdf5: Path = typer.Option(None, "--hdf5", help="Also write the corpus as one HDF5 file."),
    hdf5_layout: str = typer.Option(
        "chunked",
        "--hdf5-layout",
        help="chunked (32³, Blosc-LZ4; small) or contiguous (uncompressed, memory-mapped "
        "patch reads; ~5x larger).",
    ),
    compat: str = typer.Option(None, "--compat", help="'autopet': the published files."),
    suv_time: str = typer.Option("qiba", "--suv-time", help="qiba (default) or autopet."),
    suv: str = typer.Option("bw", "--suv", help="bw, lbm or bsa."),
    site: str = typer.Option(None, "--site", help="Site recorded on every subject."),
    licence: str = typer.Option(None, "--licence", help="Licence recorded on every subject."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    source: str = typer.Option(
        "dicom",
        "--from",
        help="dicom (convert a DICOM tree), enhance (catalogue in place) or nnunet-release "
        "(an autoPET challenge release, linked into the autoPET layout).",
    ),
    copy: bool = typer.Option(
        False, "--copy", help="--from nnunet-release: copy the files instead of linking them."
    ),
    pet_series: str = typer.Option(
        None, "--pet-series", metavar="UID", help="Convert this PT series (not the rule's)."
    ),
    ct_series: str = typer.Option(
        None, "--ct-series", metavar="UID", help="Convert this CT series (not the rule's)."
    ),
    seg: bool = typer.Option(
        True, "--seg/--no-seg", help="--no-seg: images only (for a study whose SEG is broken)."
    ),
    names_from_folders: bool = typer.Option(
        False,
        "--names-from-folders",
        help="Name outputs <subject>/<study> after the two folders above each series "
        "(default: from DICOM; folder names may hold patient names).",
    ),
) -> None:
    """Convert every study under DICOM_ROOT into OUT, with a catalog; re-runs resume.

    With --from enhance, an ENHANCE.PET corpus (either release, folders or zips) is
    catalogued in place: cases, sites, licences and the xlsx metadata.
    """
    if source == "enhance":
        from petcorpus.pipeline import import_enhance

        check_output_dir(out)
        imported = import_enhance(dicom_root, out, command=["petcorpus", *sys.argv[1:]])
        console.print(
            f"ENHANCE.PET {imported.release}: {imported.cases} cases catalogued, "
            f"{len(imported.incomplete)} incomplete"
        )
        for case in imported.incomplete:
            console.print(f"[yellow]incomplete[/yellow] case {case} (see `petcorpus status`)")
        return
    if source == "nnunet-release":
        from petcorpus.cli.export import report_release_import

        check_output_dir(out)
        report_release_import(dicom_root, out, copy=copy, site=site, licence=licence)
        return
    if source != "dicom":
        raise typer.BadParameter(
            "--from must be dicom, enhance or nnunet-release", param_hint="--from"
        )
    if hdf5_layout not in ("chunked", "contiguous"):
        raise typer.BadParameter(
            "--hdf5-layout must be chunked or contiguous", param_hint="--hdf5-layout"
        )
    if hdf5_layout == "contiguous" and compat == "autopet":
        raise typer.BadParameter(
            "a contiguous HDF5 does not apply to --compat autopet (float64 + gzip)",
            param_hint="--hdf5-layout",
        )
    from petcorpus.convert import ConversionOptions
    from petcorpus.pipeline import StudyOutcome, build, skipped_summary

    try:
        options = ConversionOptions(
            compat=compat,  # type: ignore[arg-type]
            suv_time=suv_time,  # type: ignore[arg-type]
            suv=suv,  # type: ignore[arg-type]
            pet_series=pet_series,
            ct_series=ct_series,
            seg=seg,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # Everything that can be refused is refused before OUT is created.
    check_output_dir(out)
    if hdf5 is not None:
        check_output_file(hdf5, what="HDF5 file")
    client = _connect(scheduler, connect_timeout) if scheduler is not None else None

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    task_id = bar.add_task("converting", total=None)

    def planned(n: int, skipped: int) -> None:
        bar.update(task_id, total=n)
        if skipped:
            console.print(f"{skipped} studies already complete (checksums match): skipped")

    def one(outcome: StudyOutcome) -> None:
        bar.advance(task_id)

    with bar, client or contextlib.nullcontext():
        report = build(
            dicom_root,
            out,
            clinical=clinical,
            options=options,
            workers=workers,
            client=client,
            hdf5=hdf5,
            hdf5_contiguous=hdf5_layout == "contiguous",
            site=site,
            licence=licence,
            command=["petcorpus", *sys.argv[1:]],
            on_planned=planned,
            on_outcome=one,
            naming="folders" if names_from_folders else "dicom",
        )
    table = Table("done", "skipped", "failed", "seconds", title="petcorpus build")
    table.add_row(
        str(len(report.done)),
        str(len(report.skipped)),
        str(len(report.failed)),
        f"{report.seconds:.1f}",
    )
    console.print(table)
    for o in report.failed:
        f = o.failure
        assert f is not None
        where = f" {f.path}:" if f.path else ""
        console.print(
            f"[red]failed[/red] {escape(o.subject)}/{escape(o.study)} [{f.reason}]"
            f"{escape(where)} {escape(f.message)}"
        )
    for o in report.done:
        for warning in o.warnings:
            console.print(
                f"[yellow]note[/yellow] {escape(o.subject)}/{escape(o.study)}: {escape(warning)}"
            )
    if report.skipped_files:
        console.print(
            skipped_summary(report.skipped_files, dicom_root)
            + " (all listed by `petcorpus status --failures`)",
            markup=False,
        )
    if report.hdf5:
        console.print(f"HDF5: {report.hdf5}")
    if not report.ok:
        raise typer.Exit(code=1)
