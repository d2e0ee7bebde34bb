"""``petcorpus download``: fetch autoPET and PSMA (TCIA or IDC) and ENHANCE.PET, verified."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._format import human_bytes as _human
from petcorpus.cli._help import _Group
from petcorpus.cli._outputs import check_output_dir
from petcorpus.cli._params import Release
from petcorpus.cli._progress import NO_PROGRESS, on_terminal

download_app = typer.Typer(
    help="Download the corpora (autoPET, PSMA from TCIA or IDC; ENHANCE.PET): resumable, safe.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(download_app, name="download")


def _policy(retries: int, timeout: float, backoff: float):
    from petcorpus.download import RetryPolicy

    return RetryPolicy(attempts=retries, timeout=timeout, backoff=backoff)


def _finish(report) -> None:
    console.print(
        f"done {len(report.done)}, skipped (already complete) {len(report.skipped)}, "
        f"failed {len(report.failed)}; {_human(report.bytes_transferred)} transferred"
    )
    for rel, exc in sorted(report.failed.items()):
        err_console.print(f"[red]failed[/red] [{exc.reason}] {escape(f'{rel}: {exc}')}")
    if report.failed:
        raise typer.Exit(code=1)


_WORKERS = typer.Option(4, "--workers", "-j", min=1, metavar="N", help="Concurrent transfers.")
_RETRIES = typer.Option(5, "--retries", min=1, metavar="N", help="Tries per file.")
_TIMEOUT = typer.Option(60.0, "--timeout", min=0.1, metavar="SECONDS", help="Socket timeout.")
_BACKOFF = typer.Option(
    2.0, "--backoff", min=0.0, metavar="SECONDS", help="First retry delay, doubling."
)
_DRY = typer.Option(False, "--dry-run", help="List what would be fetched and the total size.")
_VERIFY = typer.Option(False, "--verify", help="Re-hash complete files; fetch changed ones.")
_ALLOW_LINKS = typer.Option(
    False,
    "--allow-links",
    help="Unpack archives holding links that stay inside their folder (refused by default).",
)
_MAX_RATIO = typer.Option(
    None,
    "--max-ratio",
    min=1.0,
    metavar="X",
    help="Largest expanded/archive size ratio accepted when unpacking, the zip-bomb cap "
    "(default 200; docs/download.md).",
)


class Source(enum.StrEnum):
    """Where the DICOM comes from."""

    tcia = "tcia"
    idc = "idc"


_SOURCE = typer.Option(
    Source.tcia,
    "--source",
    help="tcia: NBIA REST API; idc: Imaging Data Commons (its official index, offline, and "
    "public bucket; needs the idc extra of petcorpus).",
)
_MODALITY = typer.Option(
    [], "--modality", metavar="CT|PT|SEG", help="Only this Modality (repeatable)."
)
_IDC_ENDPOINT = typer.Option(
    None,
    "--idc-endpoint",
    envvar="PETCORPUS_IDC_ENDPOINT",
    metavar="URL",
    help="S3 endpoint of IDC's bucket (default https://s3.amazonaws.com).",
)
# Options that `download autopet` and `download psma` share (one definition each).
_SUBJECT = typer.Option([], "--subject", metavar="ID", help="Only this PatientID (repeatable).")
_LIMIT = typer.Option(None, "--limit", min=1, metavar="N", help="The first N series only.")
_NBIA_URL = typer.Option(
    None, "--nbia-url", envvar="PETCORPUS_NBIA_URL", metavar="URL", help="NBIA REST API base URL."
)
_IDC_INDEX = typer.Option(
    None,
    "--idc-index",
    envvar="PETCORPUS_IDC_INDEX",
    metavar="FILE",
    help="IDC index parquet (default: the one the idc-index-data package installs).",
)


def _limits(max_ratio: float | None):
    from petcorpus.download import UnpackLimits

    return UnpackLimits() if max_ratio is None else UnpackLimits(max_ratio=max_ratio)


@download_app.command("enhance")
@handle_errors
def enhance_cmd(
    dest: Path = typer.Argument(..., help="Target folder (created)."),
    release: Release = typer.Option(Release.V2, "--release", help="v2: current, 13 files."),
    only: list[str] = typer.Option(
        [],
        "--only",
        metavar="PART",
        help="metadata, labels, images or a group (Organs, Ribs, ...); repeat.",
    ),
    unpack: bool = typer.Option(False, "--unpack", help="Unpack the zips (safely)."),
    delete_zips: bool = typer.Option(False, "--delete-zips", help="Delete them once unpacked."),
    table: Path | None = typer.Option(
        None,
        "--table",
        envvar="PETCORPUS_ENHANCE_TABLE",
        metavar="JSON",
        help="File table (overrides the built-in one).",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        envvar="PETCORPUS_ENHANCE_URL",
        metavar="URL",
        help="Host replacing the table's.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, metavar="N", help="Per-case layout: the first N cases only."
    ),
    cases: int | None = typer.Option(None, "--cases", min=1, hidden=True, help="Old --limit."),
    workers: int = _WORKERS,
    retries: int = _RETRIES,
    timeout: float = _TIMEOUT,
    backoff: float = _BACKOFF,
    dry_run: bool = _DRY,
    verify: bool = _VERIFY,
    no_progress: bool = NO_PROGRESS,
    allow_links: bool = _ALLOW_LINKS,
    max_ratio: float | None = _MAX_RATIO,
) -> None:
    """Download ENHANCE.PET (metadata, label zips, image zips) under their real names."""
    from petcorpus.download import (
        check_counts,
        download_enhance,
        enhance_specs,
        load_table,
        probe_size,
    )
    from petcorpus.download.transfer import is_complete

    check_output_dir(dest, what="destination folder")
    cases = limit or cases
    policy = _policy(retries, timeout, backoff)
    if dry_run:
        from petcorpus.download import Ledger

        tbl = load_table(table, release=release.value, base_url=base_url)
        specs = enhance_specs(tbl, only=only, cases=cases)
        ledger = Ledger(dest)
        total, unknown = 0, 0
        for spec in specs:
            if ledger.get(f"unpacked:{spec.relpath}") or is_complete(spec, dest, ledger):
                console.print(f"complete  {spec.relpath}", markup=False)
                continue
            size = spec.size if spec.size is not None else probe_size(spec.url, policy)
            if size is None:
                unknown += 1
            else:
                total += size
            console.print(f"fetch     {spec.relpath}  {_human(size)}  {spec.url}", markup=False)
        tail = f" (+{unknown} of unknown size)" if unknown else ""
        console.print(f"would fetch {_human(total)}{tail}")
        return
    report = download_enhance(
        dest,
        release=release.value,
        only=only,
        table=table,
        base_url=base_url,
        cases=cases,
        unpack=unpack,
        keep_zips=not delete_zips,
        workers=workers,
        policy=policy,
        verify=verify,
        progress=on_terminal(not no_progress, err_console),
        limits=_limits(max_ratio),
        allow_links=allow_links,
    )
    if unpack and not report.failed:
        counts = check_counts(dest)
        for group, n in counts.groups.items():
            miss, extra = counts.missing[group], counts.extra[group]
            flag = "ok" if not miss and not extra else "[yellow]MISMATCH[/yellow]"
            console.print(
                f"{group:17s} {n:5d} masks / {counts.cases} cases  {flag}"
                + (f"  missing {miss[:5]}" if miss else "")
                + (f"  extra {extra[:5]}" if extra else "")
            )
    _finish(report)


@download_app.command("enhance-table")
@handle_errors
def enhance_table_cmd(
    release: Release = typer.Option(Release.V2, "--release", help="ENHANCE.PET release."),
) -> None:
    """Print the built-in ENHANCE.PET file table as JSON (edit it, pass it with --table)."""
    from petcorpus.download import builtin_table

    console.print_json(json.dumps(builtin_table(release.value)))


@download_app.command("autopet")
@handle_errors
def autopet_cmd(
    dest: Path = typer.Argument(..., help="Target folder for the TCIA-style DICOM tree."),
    series_list: Path | None = typer.Option(
        None, "--series-list", metavar="JSON", help="Saved getSeries JSON instead of NBIA's."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", metavar="FILE", help="A .tcia manifest file."
    ),
    subjects: list[str] = _SUBJECT,
    subjects_old: list[str] = typer.Option([], "--subjects", hidden=True, help="Old --subject."),
    collection: str = typer.Option(
        "FDG-PET-CT-Lesions", "--collection", metavar="NAME", help="NBIA collection."
    ),
    modality: list[str] = _MODALITY,
    source: Source = _SOURCE,
    idc_endpoint: str | None = _IDC_ENDPOINT,
    idc_index: Path | None = _IDC_INDEX,
    nbia_url: str | None = _NBIA_URL,
    clinical_url: str | None = typer.Option(
        None,
        "--clinical-url",
        envvar="PETCORPUS_TCIA_CLINICAL_URL",
        metavar="URL",
        help="URL of the clinical metadata CSV (default: TCIA's).",
    ),
    no_clinical: bool = typer.Option(False, "--no-clinical", help="Skip the clinical CSV."),
    no_md5: bool = typer.Option(
        False, "--no-md5", help="Use getImage, not getImageWithMD5Hash (no MD5 check)."
    ),
    limit: int | None = _LIMIT,
    keep_zips: bool = typer.Option(False, "--keep-zips", help="Keep series zips."),
    workers: int = _WORKERS,
    retries: int = _RETRIES,
    timeout: float = _TIMEOUT,
    backoff: float = _BACKOFF,
    dry_run: bool = _DRY,
    verify: bool = _VERIFY,
    no_progress: bool = NO_PROGRESS,
    allow_links: bool = _ALLOW_LINKS,
    max_ratio: float | None = _MAX_RATIO,
) -> None:
    """Download autoPET (FDG-PET-CT-Lesions) from TCIA or IDC into a TCIA-style DICOM tree."""
    from petcorpus.download import download_autopet, plan_autopet
    from petcorpus.download.tcia import CLINICAL_CSV_URL

    if series_list is not None and manifest is not None:
        raise typer.BadParameter("give --series-list or --manifest, not both")
    if manifest is not None and modality:
        raise typer.BadParameter("a .tcia manifest carries no Modality", param_hint="--modality")
    check_output_dir(dest, what="destination folder")
    if source is Source.idc:
        if series_list is not None or manifest is not None:
            raise typer.BadParameter("--series-list and --manifest are TCIA's; IDC uses its index")
        _idc_cmd(
            "autopet",
            dest,
            subjects=[*subjects, *subjects_old],
            modalities=modality,
            limit=limit,
            index=idc_index,
            endpoint=idc_endpoint,
            workers=workers,
            policy=_policy(retries, timeout, backoff),
            dry_run=dry_run,
            verify=verify,
            progress=on_terminal(not no_progress, err_console),
        )
        return
    url = None if no_clinical else (clinical_url or CLINICAL_CSV_URL)
    policy = _policy(retries, timeout, backoff)
    kwargs = {
        "series_list": series_list,
        "manifest": manifest,
        "subjects": [*subjects, *subjects_old],
        "modalities": modality,
        "collection": collection,
        "nbia_url": nbia_url,
        "clinical_url": url,
        "md5": not no_md5,
        "limit": limit,
        "policy": policy,
    }
    if dry_run:
        plan = plan_autopet(dest, **kwargs)  # type: ignore[arg-type]
        done = set(plan.done_series)
        for uid, size in plan.series.items():
            state = "complete" if uid in done else "fetch   "
            console.print(f"{state}  {uid}  {_human(size)}")
        todo = len(plan.series) - len(done)
        console.print(
            f"would fetch {todo} series of {len(plan.series)}, about "
            f"{_human(plan.estimated_bytes)} of DICOM" + (" + the clinical CSV" if url else "")
        )
        return
    report = download_autopet(
        dest,
        workers=workers,
        verify=verify,
        keep_zips=keep_zips,
        progress=on_terminal(not no_progress, err_console),
        limits=_limits(max_ratio),
        allow_links=allow_links,
        **kwargs,  # type: ignore[arg-type]
    )
    _finish(report)


PSMA_COLLECTION = "PSMA-PET-CT-Lesions"


@download_app.command("psma")
@handle_errors
def psma_cmd(
    dest: Path = typer.Argument(..., help="Target folder for the TCIA-style DICOM tree."),
    source: Source = _SOURCE,
    subjects: list[str] = _SUBJECT,
    modality: list[str] = _MODALITY,
    limit: int | None = _LIMIT,
    idc_endpoint: str | None = _IDC_ENDPOINT,
    idc_index: Path | None = _IDC_INDEX,
    nbia_url: str | None = _NBIA_URL,
    workers: int = _WORKERS,
    retries: int = _RETRIES,
    timeout: float = _TIMEOUT,
    backoff: float = _BACKOFF,
    dry_run: bool = _DRY,
    verify: bool = _VERIFY,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Download PSMA-PET-CT-Lesions (597 PSMA PET/CT studies) into a TCIA-style DICOM tree."""
    check_output_dir(dest, what="destination folder")
    policy = _policy(retries, timeout, backoff)
    if source is Source.idc:
        _idc_cmd(
            "psma",
            dest,
            subjects=subjects,
            modalities=modality,
            limit=limit,
            index=idc_index,
            endpoint=idc_endpoint,
            workers=workers,
            policy=policy,
            dry_run=dry_run,
            verify=verify,
            progress=on_terminal(not no_progress, err_console),
        )
        return
    from petcorpus.download import download_autopet, plan_autopet

    if dry_run:
        plan = plan_autopet(
            dest,
            subjects=subjects,
            modalities=modality,
            collection=PSMA_COLLECTION,
            nbia_url=nbia_url,
            clinical_url=None,
            limit=limit,
            policy=policy,
        )
        todo = len(plan.series) - len(plan.done_series)
        console.print(
            f"would fetch {todo} series of {len(plan.series)}, about "
            f"{_human(plan.estimated_bytes)} of DICOM"
        )
        return
    report = download_autopet(
        dest,
        subjects=subjects,
        modalities=modality,
        collection=PSMA_COLLECTION,
        nbia_url=nbia_url,
        clinical_url=None,
        limit=limit,
        workers=workers,
        policy=policy,
        verify=verify,
        progress=on_terminal(not no_progress, err_console),
    )
    _finish(report)


def _idc_cmd(target: str, dest: Path, *, dry_run: bool, **kwargs) -> None:
    """``--source idc``: print the plan from the index (offline), or download."""
    from petcorpus.download import IDC_COLLECTIONS, download_idc, plan_idc
    from petcorpus.download.idc import IdcPlan, index_version

    collection = IDC_COLLECTIONS[target]
    if not dry_run:
        _finish(download_idc(dest, collection=collection, **kwargs))
        return
    keys = ("subjects", "modalities", "limit", "index")
    plan = plan_idc(dest, collection=collection, **{k: kwargs[k] for k in keys})
    for row in plan.series:
        state = "complete" if row["SeriesInstanceUID"] in plan.done_series else "fetch   "
        size = round(float(row["series_size_MB"] or 0) * 1e6)
        console.print(
            f"{state}  {row['Modality']:4s} {row['SeriesInstanceUID']}  "
            f"{row['instanceCount']} files  {_human(size)}",
            markup=False,
        )

    def line(counts: dict[str, int]) -> str:
        return (
            f"{counts['patients']} patients, {counts['studies']} studies, "
            f"{counts['series']} series, {counts['files']} files, {_human(counts['bytes'])}"
        )

    version = index_version(kwargs["index"]) or "unknown version"
    console.print(f"{collection} (IDC index {version}): {line(plan.collection_counts)}")
    console.print(f"selected: {line(IdcPlan.counts(plan.series))}")
    console.print(
        f"would fetch {line(IdcPlan.counts(plan.todo))} "
        f"({len(plan.done_series)} series already complete)"
    )
