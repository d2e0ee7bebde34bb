"""``petcorpus scan`` (index a DICOM tree, show the CT/PET choice) and ``petcorpus suv``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@app.command("scan")
@handle_errors
def scan_cmd(
    root: Path = typer.Argument(..., help="A DICOM tree (any layout) or one file."),
    workers: int = typer.Option(
        0, "--workers", "-j", min=0, help="Processes parsing headers (0: one, in this process)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the studies and series under ROOT and the CT/PET each study would convert."""
    from petcorpus.dicom.scan import scan
    from petcorpus.errors import PetcorpusError

    result = scan(root, processes=workers or None)
    studies = []
    for st in result.studies:
        try:
            sel = st.select()
            choice = {
                "ct": sel.ct.series_uid,
                "pet": sel.pet.series_uid,
                "segs": [s.series_uid for s in sel.segs],
                "reasons": sel.reasons,
            }
        except PetcorpusError as exc:
            choice = {"error": f"[{exc.reason}] {exc.message}"}
        studies.append((st, choice))
    if as_json:
        obj = {
            "studies": [
                {
                    "study_uid": st.study_uid,
                    "study_date": st.study_date,
                    "series": [
                        {
                            "series_uid": s.series_uid,
                            "modality": s.modality,
                            "description": s.description,
                            "files": s.n_files,
                            "manufacturer": s.manufacturer,
                            "z_extent": s.z_extent,
                            "params": s.params,
                        }
                        for s in st.series
                    ],
                    "selection": choice,
                }
                for st, choice in studies
            ],
            "skipped": [{"file": str(p), "reason": r} for p, r in result.skipped],
        }
        print(json.dumps(obj, indent=2, default=str))
        return
    for st, choice in studies:
        console.print(f"[bold]study[/bold] {st.study_uid}  date {st.study_date}")
        for s in st.series:
            z = f"z {s.z_extent[0]:.1f}..{s.z_extent[1]:.1f} mm" if s.z_extent else ""
            console.print(
                f"  {s.modality:4s} {s.n_files:5d} files  {s.description or '':24s} "
                f"{s.manufacturer or '':24s} {z}  {s.series_uid}",
                markup=False,
            )
        if "error" in choice:
            console.print(f"  [red]no selection[/red]: {escape(str(choice['error']))}")
        else:
            for reason in choice["reasons"]:
                console.print(f"  → {reason}", markup=False)
    console.print(
        f"{len(result.studies)} studies, {result.n_files} DICOM files, "
        f"{len(result.skipped)} files skipped"
    )
    for p, r in result.skipped[:20]:
        console.print(f"  skipped {p}: {r}", markup=False)


@app.command("suv")
@handle_errors
def suv_cmd(
    paths: list[Path] = typer.Argument(..., help="A PET series folder, or PET files."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    suv_time: str = typer.Option(
        "qiba", "--suv-time", help="qiba (decay to the scan start) or autopet (published recipe)."
    ),
) -> None:
    """Print the SUV factors of a PET series with every input and where it came from."""
    from petcorpus.dicom.series import read_dataset
    from petcorpus.dicom.suv import autopet_reference_file, compute_suv
    from petcorpus.errors import PetcorpusError, Reason

    if suv_time not in ("qiba", "autopet"):
        raise typer.BadParameter("must be qiba or autopet", param_hint="--suv-time")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file())
            if suv_time == "autopet":  # the recipe's file first, as it picks it
                ref = autopet_reference_file(p)
                found = [ref, *(f for f in found if f != ref)]
            files.extend(found)
        else:
            files.append(p)

    def header(f: Path) -> Dataset | PetcorpusError:
        try:
            return read_dataset(f, stop_before_pixels=True)
        except PetcorpusError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        headers = list(pool.map(header, files))
    dss, used = [], []
    for f, ds in zip(files, headers, strict=True):
        if isinstance(ds, PetcorpusError):
            if len(files) == 1:
                raise ds
            continue  # non-DICOM files beside a series are skipped
        if str(ds.get("Modality", "")) == "PT":
            dss.append(ds)
            used.append(f)
    if not dss:
        raise PetcorpusError(
            "no PET (Modality PT) DICOM file found", path=paths[0], reason=Reason.NO_SERIES
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in dss}
    if len(series) > 1:
        raise PetcorpusError(
            f"files of {len(series)} PET series given; pass one series", path=paths[0]
        )
    res = compute_suv(dss, time_reference=suv_time, path=used)  # type: ignore[arg-type]
    if as_json:
        obj = {
            "suv_bw": res.suv_bw,
            "suv_lbm": res.suv_lbm,
            "suv_bsa": res.suv_bsa,
            "bqml": res.bqml,
            "time_reference": res.time_reference,
            "scan_datetime": res.scan_datetime,
            "scan_datetime_source": res.scan_datetime_source,
            "n_files": len(dss),
            "errors": res.errors,
            "warnings": list(res.warnings),
            "inputs": res.inputs,
        }
        if res.per_slice:
            obj["per_slice"] = res.per_slice
        print(json.dumps(obj, indent=2, default=str))
        return
    console.print(
        f"PET series {next(iter(series))}: {len(dss)} files, time reference {res.time_reference}"
    )
    console.print("[bold]inputs[/bold]")
    for name, v in res.inputs.items():
        fname = Path(v["file"]).name if v["file"] else ""
        line = f"  {name:30s} {v['value']!s:28s} {v['source']}"
        console.print(f"{escape(line)}  [dim]{escape(fname)}[/dim]")
    if res.scan_datetime:
        console.print(
            f"  {'scan time used':30s} {res.scan_datetime:28s} {res.scan_datetime_source}"
        )
    console.print("[bold]factors[/bold] (multiply a rescaled pixel value)")
    for key, label in (
        ("bqml", "Bq/ml"),
        ("suv_bw", "SUVbw (g/ml)"),
        ("suv_lbm", "SUL (g/ml)"),
        ("suv_bsa", "SUVbsa (cm2/ml)"),
    ):
        val = getattr(res, key)
        text = (
            f"{val:.9g}" if val is not None else f"[yellow]n/a[/yellow] {escape(res.errors[key])}"
        )
        console.print(f"  {key:8s} {label:16s} {text}")
    for w in res.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(w)}")
