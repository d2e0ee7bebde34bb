"""``petcorpus status|verify|query|export|clinical``: the catalog of a corpus folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._outputs import check_output_dir


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


@app.command("status")
@handle_errors
def status_cmd(
    out: Path = typer.Argument(..., help="Corpus folder (holds catalog.sqlite)."),
    failures: bool = typer.Option(
        False, "--failures", help="Also list every file the last build skipped."
    ),
) -> None:
    """Summarise a corpus: subjects, studies by status, series, artifacts, failures."""
    from petcorpus.catalog import Catalog

    with Catalog.open(out, readonly=True) as cat:
        s = cat.summary()
        failed = cat.failed_studies()
        skipped = cat.skipped_files()
    table = Table(
        title=f"{escape(str(out))} (catalog schema {s['schema_version']})", show_header=False
    )
    table.add_row("subjects", str(s["subjects"]))
    studies = s["studies"]
    table.add_row(
        "studies",
        f"{sum(studies.values())} (" + ", ".join(f"{k} {v}" for k, v in studies.items()) + ")"
        if studies
        else "0",
    )
    table.add_row("series", ", ".join(f"{k} {v}" for k, v in s["series"].items()) or "0")
    table.add_row("artifacts", f"{s['artifacts']} ({_human_bytes(s['artifact_bytes'])})")
    if s["last_run"]:
        run = s["last_run"]
        counts = json.loads(run["counts"]) if run["counts"] else {}
        table.add_row(
            "last run",
            f"#{run['run_id']} {run['started']} → {run['finished'] or 'unfinished'} "
            + " ".join(f"{k}={v}" for k, v in counts.items()),
        )
    if len(skipped):
        table.add_row("skipped files", f"{len(skipped)} in the last run (--failures lists them)")
    console.print(table)
    if len(failed):
        ft = Table(title="failed studies")
        for col in failed.columns:
            ft.add_column(col, overflow="fold")
        for row in failed.itertuples(index=False):
            ft.add_row(*(escape("" if v is None else str(v)) for v in row))
        console.print(ft)
    if failures and len(skipped):
        st = Table(title="files skipped by the last build")
        for col in skipped.columns:
            st.add_column(col, overflow="fold")
        for row in skipped.itertuples(index=False):
            st.add_row(*(escape(str(v)) for v in row))
        console.print(st)


@app.command("verify")
@handle_errors
def verify_cmd(
    out: Path = typer.Argument(..., help="Corpus folder (holds catalog.sqlite)."),
    quick: bool = typer.Option(False, "--quick", help="Compare sizes only, do not re-hash."),
) -> None:
    """Re-hash every catalogued artifact; exit 1 if any file is missing or changed."""
    from petcorpus.catalog import verify

    report = verify(out, rehash=not quick)
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


@app.command("query")
@handle_errors
def query_cmd(
    out: Path = typer.Argument(..., help="Corpus folder (holds catalog.sqlite)."),
    sql: str = typer.Argument(..., help='SQL, e.g. "SELECT * FROM studies" (read-only).'),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Run a read-only SQL query on the catalog and print the rows."""
    from petcorpus.catalog import Catalog

    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("format must be table, csv or json", param_hint="--format")
    with Catalog.open(out, readonly=True) as cat:
        df = cat.query(sql)
    if fmt == "csv":
        console.print(df.to_csv(index=False), end="", markup=False)
    elif fmt == "json":
        console.print(df.to_json(orient="records"), markup=False)
    else:
        table = Table()
        for col in df.columns:
            table.add_column(str(col))
        for row in df.itertuples(index=False):
            table.add_row(*("" if v is None else escape(str(v)) for v in row))
        console.print(table)


@app.command("export")
@handle_errors
def export_cmd(
    out: Path = typer.Argument(..., help="Corpus folder (holds catalog.sqlite)."),
    fmt: list[str] = typer.Option(
        None, "--format", "-f", help="csv, xlsx or parquet (repeatable); default: the set."
    ),
    to: Path = typer.Option(None, "--to", help="Destination folder (default OUT/tables)."),
) -> None:
    """Write clinical, CT-details and PT-details tables (CSV, ENHANCE-style xlsx, Parquet).

    Without pyarrow the default set skips the Parquet files (and says so); an explicit
    ``-f parquet`` is then an error.
    """
    from petcorpus.catalog import Catalog
    from petcorpus.tables import export_tables

    dest = check_output_dir(to or out / "tables", what="destination folder")

    def skipped(note: str) -> None:
        err_console.print(f"[yellow]note[/yellow]: {escape(note)}")

    with Catalog.open(out, readonly=True) as cat:
        paths = export_tables(cat, dest, formats=fmt or None, on_skip=skipped)
    for p in paths:
        console.print(str(p), markup=False)


@app.command("clinical")
@handle_errors
def clinical_cmd(
    out: Path = typer.Argument(..., help="Corpus folder (the catalog is created if absent)."),
    csv: Path = typer.Argument(..., help="TCIA 'Clinical Metadata FDG PET_CT Lesions.csv'."),
    site: str = typer.Option(None, "--site", help="Data source, e.g. autoPET."),
    licence: str = typer.Option(None, "--licence", help="e.g. 'CC BY-NC 4.0'."),
) -> None:
    """Read a TCIA-style clinical CSV (diagnosis, age, sex) into the catalog."""
    from petcorpus.catalog import Catalog
    from petcorpus.tables import ingest_clinical

    check_output_dir(out, what="corpus folder")
    with Catalog.open(out) as cat:
        n = ingest_clinical(cat, csv, site=site, licence=licence)
    console.print(f"recorded {n} studies from {csv.name}", markup=False)
