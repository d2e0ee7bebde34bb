"""``petcorpus build``: a whole corpus, in parallel, resumable, catalogued."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._format import table as fold_table
from petcorpus.cli._outputs import check_output_dir, check_output_file
from petcorpus.cli._params import (
    CT_SERIES,
    NO_SEG,
    PET_SERIES,
    Compat,
    Hdf5Layout,
    Source,
    Suv,
    SuvTime,
    value,
)
from petcorpus.cli._progress import NO_PROGRESS, progress_bar


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


#: Options each --from source uses besides DICOM/OUT; any other given is refused, not ignored.
_USED_BY = {
    Source.DICOM: None,  # all except --copy
    Source.ENHANCE: frozenset(),
    Source.NNUNET_RELEASE: frozenset({"copy", "site", "licence"}),
}
_ALWAYS = frozenset({"dicom_root", "out", "source", "no_progress"})


def _refuse_unused(ctx: typer.Context, source: Source) -> None:
    """A usage error naming the options ``--from SOURCE`` would ignore (none is ignored
    silently)."""
    used = _USED_BY[source]
    # Compared by name: typer may bring its own copy of click's ParameterSource.
    given = [
        p
        for p in ctx.command.params
        if p.name not in _ALWAYS
        and getattr(ctx.get_parameter_source(p.name or ""), "name", "DEFAULT") != "DEFAULT"
    ]
    unused = [p for p in given if (p.name == "copy" if used is None else p.name not in used)]
    if unused:
        flags = ", ".join(p.opts[0] for p in unused if p.param_type_name == "option")
        raise typer.BadParameter(f"{flags}: not used with --from {source.value}")


@app.command("build")
@handle_errors
def build_cmd(
    ctx: typer.Context,
    dicom_root: Path = typer.Argument(
        ...,
        exists=True,
        file_okay=False,
        metavar="DICOM",
        help="DICOM tree (or an ENHANCE.PET corpus with --from enhance).",
    ),
    out: Path = typer.Argument(..., help="Corpus folder (NIfTI layout + catalog.sqlite)."),
    clinical: Path = typer.Option(
        None, "--clinical", exists=True, metavar="CSV", help="TCIA clinical CSV."
    ),
    workers: int = typer.Option(None, "--workers", "-j", min=1, metavar="N", help="Processes."),
    scheduler: str = typer.Option(
        None, "--scheduler", metavar="URL", help="Dask scheduler, tcp://HOST:PORT."
    ),
    connect_timeout: float = typer.Option(
        10.0, "--connect-timeout", min=0.1, metavar="SECONDS", help="Wait for --scheduler."
    ),
    hdf5: Path = typer.Option(
        None, "--hdf5", metavar="FILE", help="Also write the corpus as one HDF5 file."
    ),
    hdf5_layout: Hdf5Layout = typer.Option(
        Hdf5Layout.CHUNKED,
        "--hdf5-layout",
        help="chunked (32³, Blosc-LZ4; small) or contiguous (uncompressed, memory-mapped "
        "patch reads; ~5x larger).",
    ),
    compat: Compat = typer.Option(None, "--compat", help="autopet: the published files."),
    suv_time: SuvTime = typer.Option(SuvTime.QIBA, "--suv-time", help="SUV time reference."),
    suv: Suv = typer.Option(Suv.BW, "--suv", help="What SUV.nii.gz holds."),
    site: str = typer.Option(None, "--site", metavar="NAME", help="Site of every subject."),
    licence: str = typer.Option(
        None, "--licence", metavar="NAME", help="Licence of every subject."
    ),
    no_progress: bool = NO_PROGRESS,
    source: Source = typer.Option(
        Source.DICOM,
        "--from",
        help="What DICOM holds (see above).",
    ),
    pet_series: str = PET_SERIES,
    ct_series: str = CT_SERIES,
    no_seg: bool = NO_SEG,
    names_from_folders: bool = typer.Option(
        False,
        "--names-from-folders",
        help="Name outputs <subject>/<study> after the two folders above each series "
        "(default: from DICOM; folder names may hold patient names).",
    ),
    copy: bool = typer.Option(
        False, "--copy", help="--from nnunet: copy the files instead of linking them."
    ),
) -> None:
    """Convert every study under DICOM into OUT, with a catalog; re-runs resume.

    DICOM is a DICOM tree (--from dicom, the default). With --from enhance, an
    ENHANCE.PET corpus (either release, folders or zips) is catalogued in place: cases,
    sites, licences and the xlsx metadata. With --from nnunet, an autoPET challenge
    release (nnU-Net format) is linked into the autoPET layout.
    """
    _refuse_unused(ctx, source)
    if source is Source.ENHANCE:
        from petcorpus.pipeline import import_enhance

        check_output_dir(out)
        imported = import_enhance(dicom_root, out, command=["petcorpus", *sys.argv[1:]])
        console.print(
            f"ENHANCE.PET {imported.release}: {imported.cases} cases catalogued, "
            f"{len(imported.incomplete)} incomplete"
        )
        for case in imported.incomplete:
            console.print(
                f"[yellow]incomplete[/yellow] case {case} (see `petcorpus catalog status`)"
            )
        return
    if source is Source.NNUNET_RELEASE:
        from petcorpus.cli.export import report_release_import

        check_output_dir(out)
        report_release_import(dicom_root, out, copy=copy, site=site, licence=licence)
        return
    if hdf5_layout is Hdf5Layout.CONTIGUOUS and compat is Compat.AUTOPET:
        raise typer.BadParameter(
            "a contiguous HDF5 does not apply to --compat autopet (float64 + gzip)",
            param_hint="--hdf5-layout",
        )
    from petcorpus.convert import ConversionOptions
    from petcorpus.pipeline import StudyOutcome, build, skipped_summary

    try:
        options = ConversionOptions(
            compat=value(compat),  # type: ignore[arg-type]
            suv_time=suv_time.value,  # type: ignore[arg-type]
            suv=suv.value,  # type: ignore[arg-type]
            pet_series=pet_series,
            ct_series=ct_series,
            seg=not no_seg,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # Everything that can be refused is refused before OUT is created.
    check_output_dir(out)
    if hdf5 is not None:
        check_output_file(hdf5, what="HDF5 file")
    client = _connect(scheduler, connect_timeout) if scheduler is not None else None

    bar = progress_bar(console, enabled=not no_progress)
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
            hdf5_contiguous=hdf5_layout is Hdf5Layout.CONTIGUOUS,
            site=site,
            licence=licence,
            command=["petcorpus", *sys.argv[1:]],
            on_planned=planned,
            on_outcome=one,
            naming="folders" if names_from_folders else "dicom",
        )
    table = fold_table("done", "skipped", "failed", "seconds", title="petcorpus build")
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
            + " (all listed by `petcorpus catalog status --failures`)",
            markup=False,
        )
    if report.hdf5:
        console.print(f"HDF5: {report.hdf5}")
    if not report.ok:
        raise typer.Exit(code=1)
