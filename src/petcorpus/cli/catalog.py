"""``petcorpus catalog status|verify|query|export|clinical``: the catalog of a corpus folder.

The short forms of earlier versions (``petcorpus status CORPUS``...) still run; they are
hidden from ``--help``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._format import human_bytes, table
from petcorpus.cli._help import _Group
from petcorpus.cli._outputs import check_output_dir
from petcorpus.cli._params import QueryFormat, TableFormat

catalog_app = typer.Typer(
    help="The catalog of a corpus (catalog.sqlite): status, verify, query, export, clinical.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(catalog_app, name="catalog")


def _command(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command as ``petcorpus catalog NAME`` and, hidden, as ``petcorpus NAME``."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name, hidden=True)(func)
        return catalog_app.command(name)(func)

    return register


_CORPUS = typer.Argument(..., metavar="CORPUS", help="Corpus folder (holds catalog.sqlite).")


@_command("status")
@handle_errors
def status_cmd(
    corpus: Path = _CORPUS,
    failures: bool = typer.Option(
        False, "--failures", help="Also list every file the last build skipped."
    ),
) -> None:
    """Summarise a corpus: subjects, studies by status, series, artifacts, failures, QC flags."""
    from petcorpus.catalog import Catalog

    with Catalog.open(corpus, readonly=True) as cat:
        s = cat.summary()
        failed = cat.failed_studies()
        skipped = cat.skipped_files()
        qc = cat.qc_summary()
        qc_flags = cat.qc_flags() if qc and qc["flagged"] else []
    summary = Table(
        title=f"{escape(str(corpus))} (catalog schema {s['schema_version']})", show_header=False
    )
    summary.add_column(overflow="fold")
    summary.add_column(overflow="fold")
    summary.add_row("subjects", str(s["subjects"]))
    studies = s["studies"]
    summary.add_row(
        "studies",
        f"{sum(studies.values())} (" + ", ".join(f"{k} {v}" for k, v in studies.items()) + ")"
        if studies
        else "0",
    )
    summary.add_row("series", ", ".join(f"{k} {v}" for k, v in s["series"].items()) or "0")
    summary.add_row("artifacts", f"{s['artifacts']} ({human_bytes(s['artifact_bytes'])})")
    if s["last_run"]:
        run = s["last_run"]
        counts = json.loads(run["counts"]) if run["counts"] else {}
        summary.add_row(
            "last run",
            f"#{run['run_id']} {run['started']} → {run['finished'] or 'unfinished'} "
            + " ".join(f"{k}={v}" for k, v in counts.items()),
        )
    if qc is not None:
        reasons = ", ".join(f"{k} {v}" for k, v in qc["reasons"].items())
        summary.add_row(
            "quality control",
            f"{qc['checked']} studies checked, {qc['flagged']} flagged"
            + (f" ({reasons})" if reasons else ""),
        )
    if len(skipped):
        summary.add_row("skipped files", f"{len(skipped)} in the last run (--failures lists them)")
    console.print(summary)
    if len(failed):
        ft = table(*map(str, failed.columns), title="failed studies")
        for row in failed.itertuples(index=False):
            ft.add_row(*(escape("" if v is None else str(v)) for v in row))
        console.print(ft)
    if qc_flags:
        qt = table("study", "reason", "finding", title="flagged by qc (petcorpus qc)")
        for f in qc_flags:
            qt.add_row(*(escape(str(f[k])) for k in ("case_key", "reason", "message")))
        console.print(qt)
    if failures and len(skipped):
        st = table(*map(str, skipped.columns), title="files skipped by the last build")
        for row in skipped.itertuples(index=False):
            st.add_row(*(escape(str(v)) for v in row))
        console.print(st)


@_command("verify")
@handle_errors
def verify_cmd(
    corpus: Path = _CORPUS,
    quick: bool = typer.Option(False, "--quick", help="Compare sizes only, do not re-hash."),
) -> None:
    """Re-hash every catalogued artifact; exit 1 if any file is missing or changed."""
    from petcorpus.catalog import verify

    report = verify(corpus, rehash=not quick)
    for issue in report.issues:
        detail = (
            ""
            if issue.problem == "missing"
            else f" (catalog {issue.expected[:12]}…, " + (f"file {issue.actual[:12]}…)")
        )
        err_console.print(f"[red]{issue.problem}[/red] {escape(issue.path + detail)}")
    if report.ok:
        console.print(f"verified {report.checked} artifacts: all present and unchanged")
        return
    err_console.print(
        f"{len(report.issues)} of {report.checked} artifacts failed: "
        f"{len(report.missing)} missing, {len(report.mismatched)} changed"
    )
    raise typer.Exit(code=1)


@_command("query")
@handle_errors
def query_cmd(
    corpus: Path = _CORPUS,
    sql: str = typer.Argument(
        ..., metavar="SQL", help='e.g. "SELECT * FROM studies" (read-only).'
    ),
    fmt: QueryFormat = typer.Option(QueryFormat.TABLE, "--format", "-f", help="How to print."),
) -> None:
    """Run a read-only SQL query on the catalog and print the rows."""
    from petcorpus.catalog import Catalog

    with Catalog.open(corpus, readonly=True) as cat:
        df = cat.query(sql)
    if fmt is QueryFormat.CSV:
        console.print(df.to_csv(index=False), end="", markup=False)
    elif fmt is QueryFormat.JSON:
        console.print(df.to_json(orient="records"), markup=False)
    else:
        rows = table(*map(str, df.columns))
        for row in df.itertuples(index=False):
            rows.add_row(*("" if v is None else escape(str(v)) for v in row))
        console.print(rows)


@_command("export")
@handle_errors
def export_cmd(
    corpus: Path = _CORPUS,
    fmt: list[TableFormat] = typer.Option(
        None, "--format", "-f", help="A format to write (repeatable); default: all three."
    ),
    dest: Path | None = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Destination folder (default CORPUS/tables)."
    ),
    to: Path | None = typer.Option(None, "--to", hidden=True, help="Old name of --out."),
) -> None:
    """Write clinical, CT-details and PT-details tables (CSV, ENHANCE-style xlsx, Parquet).

    Without pyarrow the default set skips the Parquet files (and says so); an explicit
    -f parquet is then an error.
    """
    from petcorpus.catalog import Catalog
    from petcorpus.tables import export_tables

    if dest is not None and to is not None:
        raise typer.BadParameter("give --out only (--to is its old name)", param_hint="--to")
    folder = check_output_dir(dest or to or corpus / "tables", what="destination folder")

    def skipped(note: str) -> None:
        err_console.print(f"[yellow]note[/yellow]: {escape(note)}")

    with Catalog.open(corpus, readonly=True) as cat:
        formats = [f.value for f in fmt] if fmt else None
        paths = export_tables(cat, folder, formats=formats, on_skip=skipped)
    for p in paths:
        console.print(str(p), markup=False)


@_command("clinical")
@handle_errors
def clinical_cmd(
    corpus: Path = typer.Argument(
        ..., metavar="CORPUS", help="Corpus folder (the catalog is created if absent)."
    ),
    csv: Path = typer.Argument(..., help="TCIA 'Clinical Metadata FDG PET_CT Lesions.csv'."),
    site: str = typer.Option(None, "--site", metavar="NAME", help="Data source: autoPET..."),
    licence: str = typer.Option(None, "--licence", metavar="NAME", help="e.g. 'CC BY-NC 4.0'."),
) -> None:
    """Read a TCIA-style clinical CSV (diagnosis, age, sex) into the catalog."""
    from petcorpus.catalog import Catalog
    from petcorpus.tables import ingest_clinical

    check_output_dir(corpus, what="corpus folder")
    with Catalog.open(corpus) as cat:
        n = ingest_clinical(cat, csv, site=site, licence=licence)
    console.print(f"recorded {n} studies from {csv.name}", markup=False)
